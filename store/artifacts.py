"""Artifacts: immutable, content-addressed versions of files and folders, with aliases.

A version is a manifest (relative path, sha256, size per file) whose files live once each in
the blob store. Versions count v0, v1, ... per name and never change; logging content equal
to the latest version's makes no new version. Aliases name versions: ``latest`` moves by
itself, user aliases (``prod``, ``best``) move when a version claims them, one version per
alias; every move is in the audit log.

A version can be deleted (:meth:`ArtifactRegistry.delete`): a tombstone row (who, when, why)
in the ``artifact_deletions`` table hides it from ``get``, ``use``, aliases and ``list``, while
its own row, digest and lineage edges stay, so history, lineage and ``assay verify`` of the
signed run records that name it keep working. Its blobs are reclaimed later by garbage
collection (:mod:`assay.store.gc`), unless another live version shares them.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from ..errors import ConflictError, NotFoundError, UserInputError
from .audit import AuditTrail
from .blobs import BlobStore
from .ingest import IngestLock
from .lance import LanceStore, sql_str
from .lineage import add_edges, artifact_node, run_node
from .manifests import (
    ManifestEntry,
    build_manifest,
    get_manifest,
    manifest_digest,
    manifest_json,
    materialize,
    put_manifest,
)
from .records import validate_name
from .schemas import ALIASES_SCHEMA, ARTIFACT_DELETIONS_SCHEMA, ARTIFACTS_SCHEMA

__all__ = ["ArtifactRegistry", "ArtifactVersion", "check_version_args", "deleted_versions",
           "parse_spec", "parse_version_spec"]

log = logging.getLogger(__name__)

_ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
_VERSION_RE = re.compile(r"^v(\d+)$")


@dataclass(frozen=True)
class ArtifactVersion:
    """One immutable version of an artifact."""

    name: str
    version: int
    type: str
    project: str
    digest: str
    manifest_blob: str
    files: int
    size: int
    created_by: str
    created_at: float
    metadata: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.name}:v{self.version}"

    @property
    def node(self) -> str:
        return artifact_node(self.name, self.version)


def parse_spec(spec: str) -> tuple[str, str]:
    """``"name"``, ``"name:latest"``, ``"name:v3"`` or ``"name:prod"`` -> (name, selector)."""
    if not isinstance(spec, str) or not spec:
        raise UserInputError(f"artifact reference must be a string like 'name:latest', got {spec!r}",
                             hint="use NAME, NAME:latest, NAME:v0 or NAME:ALIAS")
    name, _, sel = spec.partition(":")
    validate_name("artifact", name)
    sel = sel or "latest"
    if not (_VERSION_RE.match(sel) or _ALIAS_RE.match(sel)):
        raise UserInputError(f"invalid version or alias {sel!r} in {spec!r}",
                             hint="versions are v0, v1, ...; aliases start with a letter")
    return name, sel


def parse_version_spec(spec: str) -> tuple[str, int]:
    """``"name:v3"`` -> ("name", 3); anything less exact (an alias, no version) is refused."""
    name, sel = parse_spec(spec)
    m = _VERSION_RE.match(sel)
    if m is None or ":" not in spec:
        raise UserInputError(
            f"{spec!r} does not name an exact version",
            hint=f"deleting takes NAME:vN (e.g. {name}:v3), never an alias that may move; "
                 "see `assay artifacts` for versions")
    return name, int(m.group(1))


def deleted_versions(store: LanceStore, name: str | None = None) -> dict[tuple[str, int], dict[str, Any]]:
    """Tombstones by (name, version): deleted_at, deleted_by, reason, aliases, digest."""
    tbl = store.table("artifact_deletions")
    if tbl is None:
        return {}
    q = tbl.search()
    if name is not None:
        q = q.where(f"name = {sql_str(name)}")
    return {(r["name"], r["version"]): r for r in q.limit(None).to_arrow().to_pylist()}


class ArtifactRegistry:
    """Versions, aliases and lineage edges of artifacts, over a LanceStore and a BlobStore.

    Writes commit under the data directory's ingest lock (one writer per directory) and a
    mutex of this object: :class:`IngestLock` is reentrant per object, so without the mutex
    two threads of a server sharing this registry would both pass it.
    """

    def __init__(self, store: LanceStore, blobs: BlobStore, lock: IngestLock,
                 audit: AuditTrail | None = None) -> None:
        self.store = store
        self.blobs = blobs
        self.lock = lock
        self.audit = audit
        self._mutex = threading.RLock()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._mutex, self.lock:
            yield

    # -- writes ------------------------------------------------------------------------------
    def log(self, path: str | Path, name: str, type: str, *, project: str, run_id: str = "",
            aliases: list[str] | tuple[str, ...] = (), metadata: dict[str, Any] | None = None,
            description: str = "", actor: str = "") -> ArtifactVersion:
        """Store a file or folder as the next version of ``name`` (or reuse the latest version
        if its content is identical), move aliases, and link it to the producing run."""
        check_version_args(name, type, aliases)
        entries = build_manifest(path, self.blobs)  # uploads every file's blob
        return self._commit(entries, name, type, project=project, run_id=run_id,
                            aliases=aliases, metadata=metadata, description=description,
                            actor=actor)

    def log_manifest(self, entries: list[ManifestEntry], name: str, type: str, *, project: str,
                     run_id: str = "", aliases: list[str] | tuple[str, ...] = (),
                     metadata: dict[str, Any] | None = None, description: str = "",
                     actor: str = "") -> ArtifactVersion:
        """Like :meth:`log`, for a manifest whose blobs were put beforehand (a client that
        uploaded its files to a server). Every entry's blob must be stored with the size the
        entry says. Each is checked again, and marked as just written, under the write lock
        right before the version is written, so a garbage collection running meanwhile either
        keeps it or is noticed.

        Raises:
            NotFoundError: a blob is not stored (the message names the file).
            UserInputError: a stored blob's size differs from the entry's.
        """
        check_version_args(name, type, aliases)
        manifest_json(entries)  # duplicate paths, a file that is also a folder: refused here
        for e in entries:
            self._reuse(e)
            size = self.blobs.size(e.digest)
            if size != e.size:
                raise UserInputError(f"{e.path}: the stored blob {e.digest} has {size} bytes, "
                                     f"the manifest says {e.size}",
                                     hint="send each file's own size")
        return self._commit(entries, name, type, project=project, run_id=run_id,
                            aliases=aliases, metadata=metadata, description=description,
                            actor=actor)

    def _commit(self, entries: list[ManifestEntry], name: str, type: str, *, project: str,
                run_id: str, aliases: list[str] | tuple[str, ...],
                metadata: dict[str, Any] | None, description: str,
                actor: str) -> ArtifactVersion:
        meta = json.dumps(metadata or {}, default=str, allow_nan=True)
        digest = manifest_digest(entries)
        # The same content as an older assay stored it: a folder holding one file carried no
        # folder flag then, so its digest differs; re-logging it unchanged is no new version.
        same = {digest, manifest_digest(list(entries))}
        mblob = put_manifest(self.blobs, entries)
        actor = actor or (f"run:{run_id}" if run_id else "user")
        with self._writing():
            # Garbage collection takes no ingest lock: a blob stored (or found) before it
            # started and swept since would leave this version without its file. Freshened
            # here, each is either kept by a sweep from now on or found gone (and refused).
            for e in entries:
                self._reuse(e)
            newest = self._newest_row(name)  # deleted versions count: numbers are never reused
            if newest is not None and newest["type"] != type:
                raise ConflictError(f"artifact {name!r} has type {newest['type']!r}, not {type!r}",
                                    hint="use another name for a different kind of artifact")
            latest = self._resolve_version(name, "latest", missing_ok=True)
            owner = newest["project"] if newest is not None else project
            if owner != project:
                # Names are shared by the data directory's projects: another project's new
                # version would silently become this one's `latest`. Identical content
                # (a shared dataset) only records this run's edge.
                moves = [a for a in aliases
                         if latest is None or self._aliases(name).get(a) != latest.version]
                if latest is None or latest.digest not in same or moves:
                    raise ConflictError(
                        f"artifact {name!r} belongs to project {owner!r}; a run of project "
                        f"{project!r} cannot add versions to it or move its aliases",
                        hint=f"artifact names are shared by every project of this data "
                             f"directory (and server): give yours its own name, e.g. "
                             f"'{project}-{name}'; reading {name!r} (use_artifact) is fine")
            if (newest is not None and newest["digest"] in same
                    and (latest is None or latest.version != newest["version"])
                    and (name, int(newest["version"])) not in deleted_versions(self.store, name)):
                # The newest version holds this content but `latest` never reached it: a
                # commit killed after adding the row. Finish that commit instead of adding a
                # duplicate version.
                version = int(newest["version"])
                log.warning("artifact %s: v%d was left half-committed (no `latest`); "
                            "completing it", name, version)
                self._move_alias(name, "latest", version, actor, "completing an interrupted "
                                 "commit")
            elif latest is not None and latest.digest in same:
                version = latest.version  # identical content: no new version
                if (json.loads(meta), description) != (latest.metadata, latest.description) \
                        and (metadata or description):
                    log.warning("artifact %s: the content is identical to v%d, so no version "
                                "was made and its metadata and description (immutable) stay "
                                "as they were; change the content to record new ones",
                                name, version)
            else:
                version = 0 if newest is None else int(newest["version"]) + 1
                row = {"name": name, "version": version, "type": type, "project": project,
                       "digest": digest, "manifest_blob": mblob, "files": len(entries),
                       "size": sum(e.size for e in entries), "metadata": meta,
                       "description": description, "created_by": run_id,
                       "created_at": time.time()}
                self.store.write_table("artifacts").add(
                    pa.Table.from_pylist([row], schema=ARTIFACTS_SCHEMA))
                self._move_alias(name, "latest", version, actor, "new version")
            for a in aliases:
                self._move_alias(name, a, version, actor, "logged with this alias")
            if run_id:
                add_edges(self.store, [(run_node(run_id), artifact_node(name, version), "produced")])
        return self.get(name, f"v{version}")

    def _reuse(self, e: ManifestEntry) -> None:
        if not self.blobs.reuse(e.digest):
            raise NotFoundError(f"{e.path}: blob {e.digest} is not stored",
                                hint="upload the file's content first (PUT /api/blobs/"
                                     "{digest}), then log the version again")

    def use(self, spec: str, run_id: str) -> ArtifactVersion:
        """Resolve ``spec`` and record that ``run_id`` consumed that version."""
        with self._writing():  # resolved under the lock: never an edge to a version just deleted
            av = self.get(spec)
            add_edges(self.store, [(av.node, run_node(run_id), "consumed")])
        return av

    def set_alias(self, spec: str, alias: str, actor: str, reason: str) -> ArtifactVersion:
        """Point ``alias`` at the version ``spec`` names (audited)."""
        if not _ALIAS_RE.match(alias) or _VERSION_RE.match(alias) or alias == "latest":
            raise UserInputError(f"invalid alias {alias!r}", hint="e.g. 'prod' or 'best'")
        with self._writing():
            av = self.get(spec)
            self._move_alias(av.name, alias, av.version, actor, reason)
        return self.get(av.name, f"v{av.version}")

    def remove_alias(self, name: str, alias: str, actor: str, reason: str, *,
                     expect_version: int | None = None) -> int:
        """Remove ``alias`` (not ``latest``, which assay keeps on the newest live version);
        returns the version it named, which stays. Audited.

        Args:
            expect_version: Remove it only if it still names this version (a caller that
                checked who may change that version).

        Raises:
            UserInputError: ``alias`` is ``latest`` or not an alias assay could store.
            NotFoundError: ``name`` has no such alias.
            ConflictError: it names another version than ``expect_version`` now.
        """
        if not _ALIAS_RE.match(alias) or _VERSION_RE.match(alias) or alias == "latest":
            raise UserInputError(f"cannot remove alias {alias!r}",
                                 hint="'latest' always names the newest live version; "
                                      "user aliases look like 'prod' or 'best'")
        with self._writing():
            current = self._aliases(name)
            if alias not in current:
                have = ", ".join(f"{a} (v{v})" for a, v in sorted(current.items()))
                raise NotFoundError(f"artifact {name!r} has no alias {alias!r}",
                                    hint=f"{name} has aliases {have}" if have
                                    else self._versions_hint(name, current))
            version = current[alias]
            if expect_version is not None and version != expect_version:
                raise ConflictError(f"{name}:{alias} moved to v{version} meanwhile",
                                    hint="look again and retry")
            self._drop_alias(name, alias, version, actor, reason)
        return version

    def delete(self, spec: str, *, actor: str, reason: str = "",
               delete_aliases: bool = False) -> ArtifactVersion:
        """Delete the version ``spec`` names exactly (``name:v3``); return it as it was.

        Its row, digest and lineage edges stay; a tombstone (``actor``, ``reason``, time) hides
        it from every resolution and listing, and the deletion is in the audit trail. Its blobs
        go at the next :func:`~assay.store.gc.collect_garbage` unless a live version shares
        them.

        Args:
            spec: ``name:vN``; an alias is refused (it may have moved since you looked).
            actor: Who deletes (``user:<login>``, a token's name); recorded.
            reason: Why; recorded.
            delete_aliases: Remove the version's aliases with it. Without it a version that
                still has aliases (``latest`` included) is refused. ``latest`` then moves
                back to the newest remaining version.

        Raises:
            UserInputError: ``spec`` is not ``name:vN``.
            NotFoundError: no such version.
            ConflictError: already deleted, or it still has aliases.
        """
        name, version = parse_version_spec(spec)
        if not isinstance(reason, str) or len(reason) > 2000:
            raise UserInputError("reason must be a string of at most 2000 characters",
                                 hint="say briefly why the version goes")
        with self._writing():
            tomb = deleted_versions(self.store, name).get((name, version))
            if tomb is not None:
                raise ConflictError(
                    f"{name}:v{version} was already deleted by {tomb['deleted_by']} at "
                    f"{_when(tomb['deleted_at'])}",
                    hint="`assay artifact list --deleted` lists deleted versions")
            av = self._resolve_version(name, f"v{version}", include_deleted=True)
            if av is None:  # unreachable: without missing_ok a miss raises NotFoundError
                raise NotFoundError(f"no artifact version {name}:v{version}")
            if av.aliases and not delete_aliases:
                raise ConflictError(
                    f"{av.id} still has aliases {', '.join(av.aliases)}",
                    hint="move them to another version first (Api().set_alias, `assay artifact "
                         "alias`), or delete with "
                         "delete_aliases=True (CLI --delete-aliases, HTTP ?delete_aliases=true) to "
                         "remove them with it; "
                         "'latest' then moves back to the newest remaining version")
            # Aliases go first: a crash between the two writes leaves a live version
            # without aliases, never an alias that names a deleted version.
            for alias in av.aliases:
                if alias == "latest":
                    prev = self._newest_live(name, exclude=version)
                    if prev is not None:
                        self._move_alias(name, "latest", prev, actor, f"{av.id} deleted")
                        continue
                self._drop_alias(name, alias, version, actor, f"{av.id} deleted")
            row = {"name": name, "version": version, "digest": av.digest,
                   "deleted_at": time.time(), "deleted_by": actor, "reason": reason,
                   "aliases": list(av.aliases)}
            self.store.write_table("artifact_deletions").add(
                pa.Table.from_pylist([row], schema=ARTIFACT_DELETIONS_SCHEMA))
            if self.audit is not None:
                self.audit.record(actor, "artifact.delete", f"artifact:{name}", reason,
                                  {"version": version, "digest": av.digest,
                                   "aliases": list(av.aliases)})
        return av

    def gc(self, *, grace: float | None = None, dry_run: bool = False,
           actor: str = "") -> Any:
        """Sweep blobs no live version or run references (see :func:`~.gc.collect_garbage`);
        returns a :class:`~.gc.GcReport`."""
        from .gc import DEFAULT_GRACE, collect_garbage

        return collect_garbage(self, grace=DEFAULT_GRACE if grace is None else grace,
                               dry_run=dry_run, actor=actor)

    def _drop_alias(self, name: str, alias: str, version: int, actor: str, reason: str) -> None:
        self.store.write_table("aliases").delete(
            f"name = {sql_str(name)} AND alias = {sql_str(alias)}")
        if self.audit is not None:
            self.audit.record(actor, "artifact.alias", f"artifact:{name}", reason,
                              {"alias": alias, "from": version, "to": None})

    def _move_alias(self, name: str, alias: str, version: int, actor: str, reason: str) -> None:
        cur = self._aliases(name).get(alias)
        if cur == version:
            return
        row = pa.Table.from_pylist([{"name": name, "alias": alias, "version": version,
                                     "updated_at": time.time()}], schema=ALIASES_SCHEMA)
        (self.store.write_table("aliases").merge_insert(["name", "alias"])
         .when_matched_update_all().when_not_matched_insert_all().execute(row))
        if self.audit is not None:
            self.audit.record(actor, "artifact.alias", f"artifact:{name}", reason,
                              {"alias": alias, "from": cur, "to": version})

    # -- reads -------------------------------------------------------------------------------
    def _aliases(self, name: str) -> dict[str, int]:
        tbl = self.store.table("aliases")
        if tbl is None:
            return {}
        t = tbl.search().where(f"name = {sql_str(name)}").limit(None).to_arrow()
        return dict(zip(t["alias"].to_pylist(), t["version"].to_pylist()))

    def _rows(self, name: str, columns: list[str] | None = None) -> list[dict[str, Any]]:
        tbl = self.store.table("artifacts")
        if tbl is None:
            return []
        q = tbl.search().where(f"name = {sql_str(name)}")
        if columns is not None:
            q = q.select(columns)
        return q.limit(None).to_arrow().to_pylist()  # type: ignore[no-any-return]

    def _newest_row(self, name: str) -> dict[str, Any] | None:
        rows = self._rows(name, ["version", "type", "project", "digest"])
        return max(rows, key=lambda r: r["version"]) if rows else None

    def _newest_live(self, name: str, exclude: int) -> int | None:
        dead = {v for _, v in deleted_versions(self.store, name)} | {exclude}
        live = [r["version"] for r in self._rows(name, ["version"]) if r["version"] not in dead]
        return max(live) if live else None

    def _versions_hint(self, name: str, aliases: dict[str, int]) -> str:
        versions = sorted(r["version"] for r in self._rows(name, ["version"]))
        if not versions:
            return f"no artifact named {name!r}; see `assay artifacts`"
        dead = sorted(v for _, v in deleted_versions(self.store, name))
        if len(dead) == len(versions):
            return (f"every version of {name} (v0..v{versions[-1]}) was deleted; "
                    "`assay artifact list --deleted` shows them")
        known = sorted(aliases)
        gone = ", ".join(f"v{v}" for v in dead[-10:])
        return (f"{name} has " + (f"aliases {', '.join(known)} and " if known else "")
                + f"versions v0..v{versions[-1]}" + (f" (deleted: {gone})" if dead else ""))

    def _resolve_version(self, name: str, sel: str, *, missing_ok: bool = False,
                         include_deleted: bool = False) -> ArtifactVersion | None:
        m = _VERSION_RE.match(sel)
        aliases = self._aliases(name)
        version = int(m.group(1)) if m else aliases.get(sel)
        tbl = self.store.table("artifacts")
        rows = []
        if version is not None and tbl is not None:
            rows = tbl.search().where(f"name = {sql_str(name)} AND version = {int(version)}").limit(
                None).to_arrow().to_pylist()
        tomb = None
        if rows and not include_deleted:
            tomb = deleted_versions(self.store, name).get((name, int(rows[0]["version"])))
        if not rows or tomb is not None:
            if missing_ok:
                return None
            if tomb is not None:
                raise NotFoundError(
                    f"artifact version {name}:v{tomb['version']} ({name}:{sel}) was deleted by "
                    f"{tomb['deleted_by']} at {_when(tomb['deleted_at'])}"
                    + (f": {tomb['reason']}" if tomb["reason"] else ""),
                    hint="its record and lineage remain (`assay artifact list --deleted`); "
                         "use another version")
            raise NotFoundError(f"no artifact version {name}:{sel}",
                                hint=self._versions_hint(name, aliases))
        r = rows[0]
        return ArtifactVersion(
            name=r["name"], version=r["version"], type=r["type"], project=r["project"],
            digest=r["digest"], manifest_blob=r["manifest_blob"], files=r["files"], size=r["size"],
            created_by=r["created_by"], created_at=r["created_at"],
            metadata=json.loads(r["metadata"] or "{}"), description=r["description"] or "",
            aliases=tuple(sorted(a for a, v in aliases.items() if v == r["version"])))

    def get(self, spec: str, sel: str | None = None, *,
            include_deleted: bool = False) -> ArtifactVersion:
        """The version ``spec`` names (``name:latest``, ``name:v3``, ``name:prod``).

        A deleted version is a NotFoundError saying who deleted it, unless ``include_deleted``
        (for history and lineage: its record stays)."""
        name, s = (spec, sel) if sel is not None else parse_spec(spec)
        av = self._resolve_version(name, s, include_deleted=include_deleted)
        if av is None:  # unreachable: without missing_ok a miss raises NotFoundError
            raise NotFoundError(f"no artifact version {name}:{s}")
        return av

    def manifest(self, av: ArtifactVersion) -> list[Any]:
        return get_manifest(self.blobs, av.manifest_blob)

    def download(self, av: ArtifactVersion, dest: str | Path) -> Path:
        """Materialize a version read-only under ``dest``, verifying every file's digest."""
        dest = Path(dest)
        materialize(self.manifest(av), self.blobs, dest)
        return dest

    def list(self, project: str | None = None, name: str | None = None, *,
             include_deleted: bool = False) -> pl.DataFrame:
        """Versions as a DataFrame (newest last), with their aliases.

        Deleted versions are left out; ``include_deleted`` lists them too, with columns
        ``deleted_at``, ``deleted_by`` and ``delete_reason`` (null for live versions).
        """
        tbl = self.store.table("artifacts")
        if tbl is None:
            empty = _frame(ARTIFACTS_SCHEMA.empty_table())
            if include_deleted:
                empty = empty.with_columns(pl.lit(None, dtype=pl.Float64).alias("deleted_at"),
                                           pl.lit(None, dtype=pl.String).alias("deleted_by"),
                                           pl.lit(None, dtype=pl.String).alias("delete_reason"))
            return empty.with_columns(pl.lit(None, dtype=pl.List(pl.String)).alias("aliases"))
        conds = []
        if project:
            conds.append(f"project = {sql_str(project)}")
        if name:
            conds.append(f"name = {sql_str(name)}")
        q = tbl.search()
        if conds:
            q = q.where(" AND ".join(conds))
        df = _frame(q.limit(None).to_arrow())
        tombs = deleted_versions(self.store, name or None)
        dels = pl.DataFrame(
            [{"name": n, "version": v, "deleted_at": t["deleted_at"], "deleted_by": t["deleted_by"],
              "delete_reason": t["reason"]} for (n, v), t in tombs.items()],
            schema={"name": pl.String, "version": pl.Int64, "deleted_at": pl.Float64,
                    "deleted_by": pl.String, "delete_reason": pl.String})
        if include_deleted:
            df = df.join(dels, on=["name", "version"], how="left")
        else:
            df = df.join(dels, on=["name", "version"], how="anti")
        al = self.store.table("aliases")
        if al is not None and df.height:
            a = _frame(al.to_arrow()).group_by("name", "version").agg(
                pl.col("alias").sort().alias("aliases"))
            df = df.join(a, on=["name", "version"], how="left")
        if "aliases" not in df.columns:  # the same columns when nothing (aliased) is listed
            df = df.with_columns(pl.lit(None, dtype=pl.List(pl.String)).alias("aliases"))
        return df.sort("name", "version")


def check_version_args(name: str, type: str, aliases: Any) -> None:
    """Refuse a bad artifact name, type or alias list (before any file is read)."""
    validate_name("artifact", name)
    validate_name("artifact type", type)
    if isinstance(aliases, str | bytes):
        raise UserInputError(f"aliases must be a list of names, not the string {aliases!r}",
                             hint=f"aliases=[{aliases!r}]")
    for a in aliases:
        if not isinstance(a, str) or not _ALIAS_RE.match(a) or _VERSION_RE.match(a):
            raise UserInputError(f"invalid alias {a!r}",
                                 hint="aliases start with a letter (e.g. 'prod'); 'v3' is "
                                 "a version, not an alias")
        if a == "latest":
            raise UserInputError("'latest' moves by itself", hint="drop it from aliases")


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _frame(t: pa.Table) -> pl.DataFrame:
    df = pl.from_arrow(t)
    if not isinstance(df, pl.DataFrame):
        raise TypeError("expected a table")
    return df
