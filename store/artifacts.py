"""Artifacts: immutable, content-addressed versions of files and folders, with aliases.

A version is a manifest (relative path, sha256, size per file) whose files live once each in
the blob store. Versions count v0, v1, ... per name and never change; logging content equal
to the latest version's makes no new version. Aliases name versions: ``latest`` moves by
itself, user aliases (``prod``, ``best``) move when a version claims them, one version per
alias; every move is in the audit log.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from ..errors import ConflictError, NotFoundError, UserInputError
from .blobs import (
    BlobStore,
    build_manifest,
    get_manifest,
    manifest_digest,
    materialize,
    put_manifest,
)
from .ingest import IngestLock
from .lance import LanceStore, sql_str
from .lineage import add_edges, artifact_node, run_node
from .audit import AuditTrail
from .records import validate_name
from .schemas import ALIASES_SCHEMA, ARTIFACTS_SCHEMA

__all__ = ["ArtifactRegistry", "ArtifactVersion", "parse_spec"]

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


class ArtifactRegistry:
    """Versions, aliases and lineage edges of artifacts, over a LanceStore and a BlobStore."""

    def __init__(self, store: LanceStore, blobs: BlobStore, lock: IngestLock,
                 audit: AuditTrail | None = None) -> None:
        self.store = store
        self.blobs = blobs
        self.lock = lock
        self.audit = audit

    # -- writes ------------------------------------------------------------------------------
    def log(self, path: str | Path, name: str, type: str, *, project: str, run_id: str = "",
            aliases: list[str] | tuple[str, ...] = (), metadata: dict[str, Any] | None = None,
            description: str = "", actor: str = "") -> ArtifactVersion:
        """Store a file or folder as the next version of ``name`` (or reuse the latest version
        if its content is identical), move aliases, and link it to the producing run."""
        validate_name("artifact", name)
        validate_name("artifact type", type)
        for a in aliases:
            if not isinstance(a, str) or not _ALIAS_RE.match(a) or _VERSION_RE.match(a):
                raise UserInputError(f"invalid alias {a!r}",
                                     hint="aliases start with a letter (e.g. 'prod'); 'v3' is "
                                     "a version, not an alias")
            if a == "latest":
                raise UserInputError("'latest' moves by itself", hint="drop it from aliases")
        meta = json.dumps(metadata or {}, default=str, allow_nan=True)
        entries = build_manifest(path, self.blobs)  # uploads every file's blob
        digest = manifest_digest(entries)
        mblob = put_manifest(self.blobs, entries)
        actor = actor or (f"run:{run_id}" if run_id else "user")
        with self.lock:
            latest = self._resolve_version(name, "latest", missing_ok=True)
            if latest is not None and latest.type != type:
                raise ConflictError(f"artifact {name!r} has type {latest.type!r}, not {type!r}",
                                    hint="use another name for a different kind of artifact")
            if latest is not None and latest.digest == digest:
                version = latest.version
            else:
                version = 0 if latest is None else latest.version + 1
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

    def use(self, spec: str, run_id: str) -> ArtifactVersion:
        """Resolve ``spec`` and record that ``run_id`` consumed that version."""
        av = self.get(spec)
        with self.lock:
            add_edges(self.store, [(av.node, run_node(run_id), "consumed")])
        return av

    def set_alias(self, spec: str, alias: str, actor: str, reason: str) -> ArtifactVersion:
        """Point ``alias`` at the version ``spec`` names (audited)."""
        if not _ALIAS_RE.match(alias) or _VERSION_RE.match(alias) or alias == "latest":
            raise UserInputError(f"invalid alias {alias!r}", hint="e.g. 'prod' or 'best'")
        av = self.get(spec)
        with self.lock:
            self._move_alias(av.name, alias, av.version, actor, reason)
        return self.get(av.name, f"v{av.version}")

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

    def _resolve_version(self, name: str, sel: str, *, missing_ok: bool = False) -> ArtifactVersion | None:
        m = _VERSION_RE.match(sel)
        aliases = self._aliases(name)
        version = int(m.group(1)) if m else aliases.get(sel)
        tbl = self.store.table("artifacts")
        rows = []
        if version is not None and tbl is not None:
            rows = tbl.search().where(f"name = {sql_str(name)} AND version = {int(version)}").limit(
                None).to_arrow().to_pylist()
        if not rows:
            if missing_ok:
                return None
            known = sorted(aliases)
            raise NotFoundError(
                f"no artifact version {name}:{sel}",
                hint=(f"{name} has aliases {', '.join(known)} and versions v0..v{aliases['latest']}"
                      if known else f"no artifact named {name!r}; see `assay artifacts`"))
        r = rows[0]
        return ArtifactVersion(
            name=r["name"], version=r["version"], type=r["type"], project=r["project"],
            digest=r["digest"], manifest_blob=r["manifest_blob"], files=r["files"], size=r["size"],
            created_by=r["created_by"], created_at=r["created_at"],
            metadata=json.loads(r["metadata"] or "{}"), description=r["description"] or "",
            aliases=tuple(sorted(a for a, v in aliases.items() if v == r["version"])))

    def get(self, spec: str, sel: str | None = None) -> ArtifactVersion:
        """The version ``spec`` names (``name:latest``, ``name:v3``, ``name:prod``)."""
        name, s = (spec, sel) if sel is not None else parse_spec(spec)
        av = self._resolve_version(name, s)
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

    def list(self, project: str | None = None, name: str | None = None) -> pl.DataFrame:
        """Versions as a DataFrame (newest last), with their aliases."""
        tbl = self.store.table("artifacts")
        if tbl is None:
            return _frame(ARTIFACTS_SCHEMA.empty_table())
        conds = []
        if project:
            conds.append(f"project = {sql_str(project)}")
        if name:
            conds.append(f"name = {sql_str(name)}")
        q = tbl.search()
        if conds:
            q = q.where(" AND ".join(conds))
        df = _frame(q.limit(None).to_arrow())
        al = self.store.table("aliases")
        if al is not None and df.height:
            a = _frame(al.to_arrow()).group_by("name", "version").agg(
                pl.col("alias").sort().alias("aliases"))
            df = df.join(a, on=["name", "version"], how="left")
        return df.sort("name", "version")


def _frame(t: pa.Table) -> pl.DataFrame:
    df = pl.from_arrow(t)
    if not isinstance(df, pl.DataFrame):
        raise TypeError("expected a table")
    return df
