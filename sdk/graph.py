"""The experiment graph of a local data directory, opened on demand (LanceDB is heavy)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Artifact", "Graph", "open_graph"]


@dataclass(frozen=True)
class Graph:
    """Store, blobs, lock, audit trail and artifact registry of one data directory."""

    dir: Path
    store: Any
    blobs: Any
    lock: Any
    audit: Any
    artifacts: Any

    @property
    def public_key_pem(self) -> str:
        return self.audit.key.export_public_key()


@functools.lru_cache(maxsize=8)
def open_graph(data_dir: Path) -> Graph:
    from ..store.artifacts import ArtifactRegistry
    from ..store.audit import AuditTrail
    from ..store.blob_config import blob_store_for
    from ..store.ingest import IngestLock
    from ..store.lance import LanceStore
    from ..store.signing import KeyPair

    store = LanceStore(data_dir)
    blobs = blob_store_for(data_dir)  # its blobs/ folder, or the object store it is pinned to
    lock = IngestLock(data_dir)
    audit = AuditTrail(data_dir, KeyPair.load_or_create(data_dir))
    return Graph(data_dir, store, blobs, lock, audit, ArtifactRegistry(store, blobs, lock, audit))


class Artifact:
    """A handle on one immutable artifact version (returned by ``log_artifact`` and
    ``use_artifact``): ``name``, ``version``, ``digest``, ``type``, ``aliases``,
    ``metadata``, :meth:`download`, and :meth:`set_alias` / :meth:`remove_alias`."""

    def __init__(self, version: Any, graph: Graph) -> None:
        self._v = version
        self._g = graph

    def __getattr__(self, name: str) -> Any:
        return getattr(self._v, name)

    def download(self, root: str | Path | None = None) -> Path:
        """Materialize the files read-only (default under ``<data dir>/artifacts``, or
        ``<data dir>/servers/<host_port>/artifacts`` for a server's version),
        verifying every file against its digest. Returns the folder when a folder was
        logged (even one holding a single file), the file when a file was (versions logged
        before assay recorded the difference: the file whenever the version holds one file
        at its top).

        A folder downloaded before is reused when its files still have the sizes and times
        they were written with. The record of what a folder holds sits beside it,
        ``.<folder>.assay.json`` (a hashed name for a long folder name), never inside it,
        so logging a downloaded folder again gives
        the same content. Processes downloading the same folder at once take turns (a lock
        beside it). A folder the caller chose is never deleted: if it holds another version,
        or files that are not exactly this version's, it is refused. assay's own cache folder
        (no ``root``) is downloaded again when a file in it changed.
        """
        import fcntl
        import os

        from ..store.manifests import is_folder, sidecar_name

        dest = Path(os.path.abspath(root)) if root is not None else (
            self._g.dir / "artifacts" / self._v.name / f"v{self._v.version}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        entries = self._g.artifacts.manifest(self._v)
        marker = dest.parent / sidecar_name(dest.name, ".assay.json")
        with open(dest.parent / sidecar_name(dest.name, ".lock"), "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self._reusable(dest, marker, entries, owned=root is None):
                if dest.is_dir():  # an empty folder, perhaps filled in place (a mount point)
                    _write_marker(marker, self._v, dest, [], filling=True)
                self._g.artifacts.download(self._v, dest)
                _write_marker(marker, self._v, dest, entries)
        if not is_folder(entries):
            return dest / entries[0].path
        return dest

    def _reusable(self, dest: Path, marker: Path, entries: list[Any], *, owned: bool) -> bool:
        """Whether ``dest`` already holds this version intact; clears what may be replaced.

        Raises:
            UserInputError: ``dest`` (a folder the caller chose) holds something else.
        """
        import json

        from ..errors import UserInputError

        want = f"{self._v.name}:v{self._v.version}"
        try:
            rec = json.loads(marker.read_text())
        except (OSError, ValueError):
            rec = None
        if rec is not None and rec.get("filling") and dest.is_dir():
            # A download into this folder, empty then, was killed part way (a mount point is
            # filled in place): the files it wrote are this version's and may go.
            if rec.get("digest") == self._v.digest:
                _clear_partial(dest, entries)
            if not any(dest.iterdir()):
                marker.unlink(missing_ok=True)
                return False
        if rec is not None and rec.get("digest") != self._v.digest:
            if not owned:
                raise UserInputError(
                    f"{dest} holds {rec.get('artifact')}, not {want}",
                    hint="download each version into its own folder (or leave root out)")
            rec = None
        if rec is not None and dest.is_dir() and _unchanged(dest, rec.get("files", {})):
            return True
        if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())):
            marker.unlink(missing_ok=True)
            return False
        if not owned:
            # A folder the caller chose is never deleted: it may hold their own files (a
            # record beside it only says what a folder of that name once held).
            if _holds(dest, entries):
                _write_marker(marker, self._v, dest, entries)
                return True
            raise UserInputError(
                f"{dest} already exists and does not hold {want} as downloaded (files were "
                "changed, added or removed)",
                hint="download into a new or empty folder, or remove this one first "
                     "(or leave root out to use assay's own cache)")
        # assay's own cache folder: a changed download, or one a crash left without its
        # record, is replaced.
        _remove_tree(dest)
        marker.unlink(missing_ok=True)
        return False

    def delete(self, *, reason: str = "", delete_aliases: bool = False) -> None:
        """Delete this version (see :meth:`assay.Api.delete_artifact`)."""
        from .api import _local_actor

        self._g.artifacts.delete(self._v.id, actor=_local_actor(), reason=reason,
                                 delete_aliases=delete_aliases)

    def set_alias(self, alias: str, *, reason: str = "") -> Artifact:
        """Point ``alias`` (``"prod"``; not ``latest``) at this version, audited; returns this
        version as it is now (see :meth:`assay.Api.set_alias`). On a run logging to a server,
        the server does it (its owner rule applies)."""
        from .api import _check_user_alias, _local_actor

        _check_user_alias(self._v.name, alias)
        self._g.artifacts.set_alias(self._v.id, alias, _local_actor(), reason)
        return self._refreshed()

    def remove_alias(self, alias: str, *, reason: str = "") -> Artifact:
        """Remove ``alias`` if it names this version (a ConflictError if it names another
        now); returns this version as it is now."""
        from .api import _check_user_alias, _local_actor

        _check_user_alias(self._v.name, alias)
        self._g.artifacts.remove_alias(self._v.name, alias, _local_actor(), reason,
                                       expect_version=self._v.version)
        return self._refreshed()

    def _refreshed(self) -> Artifact:
        import dataclasses

        now = self._g.artifacts.get(self._v.name, f"v{self._v.version}")
        self._v = dataclasses.replace(self._v, aliases=now.aliases)  # the rest is immutable
        return self

    def files(self) -> list[Any]:
        """The manifest: (path, digest, size) per file."""
        return self._g.artifacts.manifest(self._v)

    def __repr__(self) -> str:
        return (f"Artifact({self._v.name}:v{self._v.version}, type={self._v.type!r}, "
                f"digest={self._v.digest[:19]}..., aliases={list(self._v.aliases)})")


def _write_marker(marker: Path, version: Any, dest: Path, entries: list[Any], *,
                  filling: bool = False) -> None:
    """Record what ``dest`` holds (each file's size and time), or, with ``filling``, that a
    download into it (an empty folder) is under way."""
    import json
    import os

    files = {}
    for e in entries:
        st = os.stat(dest / e.path)
        files[e.path] = [st.st_size, st.st_mtime_ns]
    rec: dict[str, Any] = {"artifact": f"{version.name}:v{version.version}",
                           "digest": version.digest, "files": files}
    if filling:
        rec["filling"] = True
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, marker)


def _clear_partial(dest: Path, entries: list[Any]) -> None:
    """Remove what a killed download into ``dest`` wrote: the manifest's files, temporary
    files (``.assay-*.part``), and the folders that leaves empty; nothing else."""
    import contextlib
    import os

    for e in entries:
        with contextlib.suppress(OSError):
            (dest / e.path).unlink()
    for d, subdirs, names in os.walk(dest, topdown=False):
        for n in names:
            if n.startswith(".assay-") and n.endswith(".part"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(d, n))
        if d != str(dest):
            with contextlib.suppress(OSError):
                os.rmdir(d)  # only when empty


def _unchanged(dest: Path, files: dict[str, list[int]]) -> bool:
    """Every file recorded at download still has its size and modification time."""
    import os

    try:
        return bool(files) and all(
            [(st := os.stat(dest / path)).st_size, st.st_mtime_ns] == list(sig)
            for path, sig in files.items())
    except OSError:
        return False


def _holds(dest: Path, entries: list[Any]) -> bool:
    """Whether ``dest`` holds exactly the manifest's files with their digests (hashes them:
    only for a folder left without its record)."""
    from ..store.blobs import hash_file

    try:
        present = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
        return present == {e.path for e in entries} and all(
            hash_file(dest / e.path).digest == e.digest for e in entries)
    except OSError:
        return False


def _remove_tree(path: Path) -> None:
    """Remove a downloaded tree (its files and folders are read-only)."""
    import os
    import shutil
    import stat

    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    for d, _, _ in os.walk(path):  # files in a writable folder can go, read-only or not
        os.chmod(d, stat.S_IRWXU)
    shutil.rmtree(path)
