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
    from ..store.blobs import LocalBlobStore
    from ..store.ingest import IngestLock
    from ..store.lance import LanceStore
    from ..store.signing import KeyPair

    store = LanceStore(data_dir)
    blobs = LocalBlobStore(data_dir / "blobs")
    lock = IngestLock(data_dir)
    audit = AuditTrail(data_dir, KeyPair.load_or_create(data_dir))
    return Graph(data_dir, store, blobs, lock, audit, ArtifactRegistry(store, blobs, lock, audit))


class Artifact:
    """A handle on one immutable artifact version (returned by ``log_artifact`` and
    ``use_artifact``): ``name``, ``version``, ``digest``, ``type``, ``aliases``,
    ``metadata``, and :meth:`download`."""

    def __init__(self, version: Any, graph: Graph) -> None:
        self._v = version
        self._g = graph

    def __getattr__(self, name: str) -> Any:
        return getattr(self._v, name)

    def download(self, root: str | Path | None = None) -> Path:
        """Materialize the files read-only (default under ``<data dir>/artifacts``),
        verifying every file against its digest. Returns the folder (or the file, for a
        single-file artifact)."""
        dest = Path(root) if root is not None else (
            self._g.dir / "artifacts" / self._v.name / f"v{self._v.version}")
        done = dest / ".assay-complete"
        if not done.exists():
            self._g.artifacts.download(self._v, dest)
            done.touch()
        entries = self._g.artifacts.manifest(self._v)
        if len(entries) == 1 and "/" not in entries[0].path:
            return dest / entries[0].path
        return dest

    def delete(self, *, reason: str = "", delete_aliases: bool = False) -> None:
        """Delete this version (see :meth:`assay.Api.delete_artifact`)."""
        from .api import _local_actor

        self._g.artifacts.delete(self._v.id, actor=_local_actor(), reason=reason,
                                 delete_aliases=delete_aliases)

    def files(self) -> list[Any]:
        """The manifest: (path, digest, size) per file."""
        return self._g.artifacts.manifest(self._v)

    def __repr__(self) -> str:
        return (f"Artifact({self._v.name}:v{self._v.version}, type={self._v.type!r}, "
                f"digest={self._v.digest[:19]}..., aliases={list(self._v.aliases)})")
