"""Garbage collection of blobs: mark what live records reference, sweep the rest.

Deleting an artifact version (:meth:`~assay.store.artifacts.ArtifactRegistry.delete`) only
writes a tombstone; its blobs stay until :func:`collect_garbage` runs. Mark: every blob a
record still needs, that is the manifest and files of every version not deleted (content
addressing: a file shared with a live version survives the deletion of another), the blobs
runs reference (git diffs in a run's ``git``/``env``), and any digest named in a write-ahead
log not ingested yet (a crashed run's WAL, a server or outbox segment). Sweep: every other blob
last written before the grace period, plus abandoned partial uploads and the partial trees
killed downloads left in the download cache (``<data dir>/artifacts``).

Why the grace period makes a concurrent upload safe: ``log`` puts its blobs first and commits
its version row later, so for a while its blobs are referenced by nothing. Every put writes
or, for content already stored, *freshens* the blob (its time is set to now, as git does), and
a sweep moves a blob aside before it looks at its time (see :meth:`LocalBlobStore.sweep`).
So a blob is swept only if no put touched it within the grace period; an upload whose version
commits within the grace period (default an hour) never loses a blob. That is also why gc
takes no ingest lock: it writes no table, and holding the lock while reading every manifest
would stall ingestion. Only stores that can freshen support gc: :class:`LocalBlobStore` sets
the file's time; :class:`FsspecBlobStore` (S3 and other object stores, whose objects cannot be
touched in place) writes a ``touch/<hex>`` marker on reuse and sweeps through a ``trash/``
copy, so the same race is closed there too (see :meth:`FsspecBlobStore.sweep`). Abandoned
partial uploads are removed from local stores; on S3 they are multipart uploads, which a
bucket lifecycle rule (AbortIncompleteMultipartUpload) removes.
"""

from __future__ import annotations

import fcntl
import math
import mmap
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AssayError, ConflictError, IntegrityError, UserInputError
from .blobs import BlobStore, LocalBlobStore
from .manifests import get_manifest, sweep_partial_downloads

if TYPE_CHECKING:
    from .artifacts import ArtifactRegistry
    from .lance import LanceStore

__all__ = ["DEFAULT_GRACE", "GcReport", "collect_garbage", "referenced_blobs"]

#: Seconds a blob is kept after its last write or reuse, referenced or not.
DEFAULT_GRACE = 3600.0
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_DIGEST_B = re.compile(rb"sha256:[0-9a-f]{64}")
_WAL_DIRS = ("wal", "remote", "outbox")


@dataclass(frozen=True)
class GcReport:
    """What a collection found and removed (or, in a dry run, would remove)."""

    dry_run: bool
    grace_seconds: float
    blobs: int  # blobs in the store
    bytes: int
    referenced: int  # blobs live records need (kept)
    young: int  # unreferenced but written or reused within the grace period (kept)
    young_bytes: int
    swept: int  # removed (would be removed, in a dry run)
    swept_bytes: int
    partials: int  # abandoned partial uploads and killed downloads' trees removed
    partial_bytes: int
    digests: tuple[str, ...]  # the swept blobs

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["digests"] = list(self.digests)
        return d


def _check_grace(grace: float) -> float:
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not (
            math.isfinite(grace) and grace >= 0):
        raise UserInputError(f"grace must be a number of seconds >= 0, got {grace!r}",
                             hint=f"the default is {DEFAULT_GRACE:.0f} s; keep it longer than "
                                  "your slowest artifact upload")
    return float(grace)


def _wal_digests(data_dir: Path) -> set[str]:
    out: set[str] = set()
    for sub in _WAL_DIRS:
        for path in sorted((data_dir / sub).rglob("*.wal")):
            try:
                with open(path, "rb") as f:
                    if path.stat().st_size == 0:
                        continue
                    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                        out.update(d.decode() for d in _DIGEST_B.findall(m))
            except FileNotFoundError:  # ingested and deleted meanwhile: the table has it now
                continue
    return out


def _run_digests(store: LanceStore) -> set[str]:
    tbl = store.table("runs")
    if tbl is None:
        return set()
    t = tbl.search().select(["git", "env"]).limit(None).to_arrow()
    out: set[str] = set()
    for col in ("git", "env"):
        for text in t[col].to_pylist():
            if text:
                out.update(_DIGEST.findall(text))
    return out


def _artifact_digests(store: LanceStore, blobs: BlobStore) -> set[str]:
    from .artifacts import deleted_versions

    tbl = store.table("artifacts")
    if tbl is None:
        return set()
    dead = deleted_versions(store)
    rows = tbl.search().select(["name", "version", "manifest_blob"]).limit(None).to_arrow()
    manifests: dict[str, str] = {}
    for name, version, mblob in zip(rows["name"].to_pylist(), rows["version"].to_pylist(),
                                    rows["manifest_blob"].to_pylist()):
        if (name, version) not in dead:
            manifests.setdefault(mblob, f"{name}:v{version}")
    out = set(manifests)
    for mblob, vid in manifests.items():
        try:
            out.update(e.digest for e in get_manifest(blobs, mblob))
        except AssayError as exc:
            raise IntegrityError(
                f"the manifest of live version {vid} cannot be read ({exc.message}); gc "
                "stopped before deleting anything",
                hint=f"restore blob {mblob}, or delete {vid} if it is lost; `assay verify` "
                     "names every damaged record") from exc
    return out


def referenced_blobs(store: LanceStore, blobs: BlobStore, data_dir: Path | None = None) -> set[str]:
    """Digests some live record needs: live artifact versions, runs, un-ingested WALs.

    WALs are read before the tables: a record ingested (and its WAL deleted) in between is
    then seen in one or the other.
    """
    found = _wal_digests(data_dir) if data_dir is not None else set()
    found |= _run_digests(store)
    found |= _artifact_digests(store, blobs)
    return found


def collect_garbage(registry: ArtifactRegistry, *, grace: float = DEFAULT_GRACE,
                    dry_run: bool = False, actor: str = "") -> GcReport:
    """Remove blobs no live record references and nothing wrote within ``grace`` seconds.

    Args:
        registry: The data directory's artifact registry (its store, blobs and audit trail).
        grace: Seconds a blob is kept after its last write or reuse. Uploads in flight are
            safe as long as they commit within it.
        dry_run: Report what would go; delete nothing.
        actor: Who runs it; a run that removes anything is recorded in the audit trail.

    Raises:
        UserInputError: a bad ``grace``, one under the store's ``min_gc_grace`` (60 s on
            object stores), or a blob store that does not support gc.
        ConflictError: another collection is running on this data directory.
        IntegrityError: a live version's manifest is missing or damaged (nothing deleted).

    A collection that fails part way (a network error) still records what it removed in
    the audit trail, with the error.
    """
    grace = _check_grace(grace)
    blobs = registry.blobs
    floor = float(getattr(blobs, "min_gc_grace", 0.0))
    if grace < floor:
        raise UserInputError(
            f"grace {grace:g} s is too short for {type(blobs).__name__} ({blobs.uri})",
            hint=f"use at least {floor:g} s: its object times come from the server's clock, "
                 "at one-second resolution")
    root = Path(registry.store.root)
    with nullcontext() if dry_run else _exclusive(root):
        return _collect(registry, blobs, root, grace, dry_run, actor)


@contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """One collection at a time per data directory (an ``flock`` on ``gc.lock``): two sweeps
    of one blob, or a recovery during another's sweep, could undo each other's restore."""
    fd = os.open(root / "gc.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConflictError(f"another garbage collection is running on {root}",
                                hint="wait for it to finish; a dry run needs no lock") from None
        yield
    finally:
        os.close(fd)


def _sweep_partial_downloads(cache: Path, cutoff: float, dry_run: bool) -> tuple[int, int]:
    """The partial trees killed downloads left in the data directory's download cache
    (``artifacts/<name>/.vN.partial-*``), untouched since ``cutoff`` and not held by a live
    download: (count, bytes)."""
    count = size = 0
    try:
        names = sorted(os.listdir(cache))
    except (FileNotFoundError, NotADirectoryError):
        return 0, 0
    for name in names:
        n, nbytes = sweep_partial_downloads(cache / name, cutoff=cutoff, dry_run=dry_run)
        count, size = count + n, size + nbytes
    return count, size


def _collect(registry: ArtifactRegistry, blobs: BlobStore, root: Path, grace: float,
             dry_run: bool, actor: str) -> GcReport:
    cutoff = time.time() - grace
    listing = list(blobs.iter_blobs())  # fails fast for stores without gc
    if not dry_run:
        blobs.recover_sweeps()
    live = referenced_blobs(registry.store, blobs, root)
    referenced = young = young_bytes = swept_bytes = partials = partial_bytes = 0
    swept: list[str] = []
    error: BaseException | None = None
    try:
        for b in listing:
            if b.digest in live:
                referenced += 1
            elif b.mtime >= cutoff:
                young, young_bytes = young + 1, young_bytes + b.size
            elif dry_run or blobs.sweep(b.digest, cutoff):
                swept.append(b.digest)
                swept_bytes += b.size
            else:  # reused by a put while gc ran, or already gone
                young, young_bytes = young + 1, young_bytes + b.size
        if isinstance(blobs, LocalBlobStore):
            partials, partial_bytes = blobs.sweep_partials(cutoff, dry_run=dry_run)
        # This directory's downloads, and those of the servers it read from
        # (<root>/servers/<host_port>/artifacts, sdk.remote_artifacts.server_cache).
        for folder in [root / "artifacts", *sorted((root / "servers").glob("*/artifacts"))]:
            n, nbytes = _sweep_partial_downloads(folder, cutoff, dry_run)
            partials, partial_bytes = partials + n, partial_bytes + nbytes
    except BaseException as exc:
        error = exc
        raise
    finally:
        report = GcReport(dry_run, grace, len(listing), sum(b.size for b in listing),
                          referenced, young, young_bytes, len(swept), swept_bytes, partials,
                          partial_bytes, tuple(sorted(swept)))
        # What was removed is recorded even when the collection failed part way.
        if not dry_run and registry.audit is not None and (swept or partials or error):
            details: dict[str, Any] = {k: v for k, v in report.to_dict().items()
                                       if k != "digests"}
            why = f"garbage collection, grace {grace:g} s"
            if error is not None:
                details["error"] = f"{type(error).__name__}: {error}"
                why += f"; failed after removing {len(swept)} blobs"
            registry.audit.record(actor or "user", "blobs.gc", blobs.uri, why, details)
    return report
