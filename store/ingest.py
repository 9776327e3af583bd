"""The ingester: moves WAL records into the store in large, idempotent commits.

One ingester writes to a data directory at a time: every writer takes the directory's ingest
lock (an ``flock`` on ``<dir>/ingest.lock``) around its commits, so several processes logging
into one directory never race LanceDB commits. Each process ingests the segments it owns; a
segment whose owner died (its lock is free) is an orphan, adopted by the next process that
syncs (``assay sync``, or any run starting in the directory).

Idempotency: every WAL record carries a per-run sequence number. A run's row stores the last
sequence number applied (``ingested_seq``), committed *after* the metric chunks of the same
cycle; after a crash between the two commits, :meth:`Store.metric_seqs` tells which metric
records are already in, so a replay never duplicates a point.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ConflictError
from .base import Store
from .records import RESERVED_PREFIX, RunRecord, RunStatus, merge_summary, relogs
from .rewind import (
    REWIND_FIELD,
    Rewind,
    apply_rewinds,
    chunk_tuples,
    rebuild_summary,
    rewinds,
    valid_step,
)
from .schemas import METRICS_SCHEMA
from .wal import (
    FRAME_MAGIC,
    HOLD_FILE,
    SEQ_BITS,
    iter_frames,
    list_segments,
    read_wal,
    try_lock_segment,
)

__all__ = ["IngestLock", "IngestStats", "Ingester", "sync_orphans"]

log = logging.getLogger(__name__)


class IngestLock:
    """The data directory's writer lock: an ``flock`` between processes and a re-entrant lock
    between the threads of one (a server's request threads and its ingester share one
    object: a thread holding it must keep the others out, not let them in as a re-entry)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "ingest.lock"
        self._fd = -1
        self._depth = 0
        self._owner: int | None = None
        self._threads = threading.RLock()
        _LOCKS.add(self)

    def _after_fork(self) -> None:
        """In a forked child: the thread holding it is not there, so nothing holds it (the
        inherited descriptor is closed; the parent's ``flock`` stays the parent's)."""
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd, self._depth, self._owner = -1, 0, None
        self._threads = threading.RLock()

    def acquire(self, timeout: float | None = None) -> bool:
        """Take the lock, waiting up to ``timeout`` seconds (None: forever, 0: no wait)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if timeout is None:
            got = self._threads.acquire()
        elif timeout > 0:
            got = self._threads.acquire(timeout=timeout)
        else:
            got = self._threads.acquire(blocking=False)
        if not got:
            return False
        if self._depth:  # this thread holds it already (the RLock let only it in)
            self._depth += 1
            return True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except BaseException:
            self._threads.release()
            raise
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    os.close(fd)
                    self._threads.release()
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        self._fd = fd
        self._depth = 1
        self._owner = threading.get_ident()
        return True

    def release(self) -> None:
        if self._owner != threading.get_ident() or not self._depth:
            raise RuntimeError(f"{self.path} released by a thread that does not hold it")
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
        self._threads.release()

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_LOCKS: weakref.WeakSet[IngestLock] = weakref.WeakSet()


def _locks_after_fork() -> None:
    for lock in list(_LOCKS):
        lock._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_locks_after_fork)


INGEST_BATCH_BYTES = 64 << 20
"""WAL bytes per segment applied in one batch (two commits) by :meth:`Ingester.ingest`."""


@dataclass
class IngestStats:
    """What one ingest pass did."""

    records: int = 0
    points: int = 0
    runs: int = 0
    torn_bytes: int = 0
    segments_done: list[Path] = field(default_factory=list)
    failed: list[Path] = field(default_factory=list)  # segments kept for a retry after an error


@dataclass
class _Segment:
    path: Path
    run_id: str
    offset: int = 0
    checkpoint: int | None = None  # ingested_seq when first seen
    metrics_in: int = -1  # metric records with seq <= this are already in the store


class Ingester:
    """Applies WAL segments to a :class:`Store`. Not thread-safe: one thread drives it."""

    def __init__(self, store: Store,
                 finalizer: Callable[[list[RunRecord]], None] | None = None, *,
                 on_rewind: Callable[[Rewind, int], None] | None = None) -> None:
        """``finalizer`` is called, after the commits, with the runs that finished in a pass
        (it seals their records); a failure there never loses ingested data. ``on_rewind``
        is called with each rewind and the points it dropped, once it is applied to the store
        and before the run's row records it (so a crash may repeat the call, never skip it)."""
        self.store = store
        self.finalizer = finalizer
        self.on_rewind = on_rewind
        # Declared in the batch being applied, in WAL order, with the points of the batch
        # itself they dropped.
        self._rewinds: list[tuple[Rewind, int]] = []
        self._gen: dict[str, int] = {}  # per run: rewinds this batch, so no chunk spans one
        self._relogged: set[str] = set()  # runs that logged a step again this batch
        self._segments: dict[Path, _Segment] = {}
        self._runs: dict[str, RunRecord] = {}
        # The runs table's version right after this ingester's last write: if it moved since,
        # someone else wrote runs (another ingester, an agent's stale mark) and the cached
        # records are stale - writing them back would undo that write.
        self._runs_version: int | None = None

    def finalize(self, runs: list[RunRecord]) -> None:
        if self.finalizer is not None and runs:
            try:
                self.finalizer(runs)
            except Exception:
                log.exception("sealing the records of %s failed; `assay verify` will report "
                              "them as unsealed until an ingest pass seals them",
                              [r.run_id for r in runs])
                return
            self._sealed([r.run_id for r in runs])

    # -- sealing that survives a crash -------------------------------------------------------
    # A pass commits a finished run's row, then seals it. Killed in between (or the seal
    # failing), the run would stay unsealed, reported by `verify` as if tampered with: the
    # records are ingested, so no later pass touches the run. The runs to seal are written
    # down before the row is committed, and sealed by the next pass if still listed.
    def _intent_path(self) -> Path | None:
        root = getattr(self.store, "root", None)
        return Path(root) / "seal-pending.json" if root is not None and self.finalizer else None

    def _pending(self) -> list[str]:
        path = self._intent_path()
        if path is None or not path.exists():
            return []
        try:
            return [str(i) for i in json.loads(path.read_text())]
        except (OSError, ValueError):
            return []

    def _write_pending(self, run_ids: list[str]) -> None:
        path = self._intent_path()
        if path is None:
            return
        if not run_ids:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(run_ids, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _intend(self, run_ids: list[str]) -> None:
        """Add runs to seal to the list still pending (never replacing it: a run whose seal
        failed twice must stay listed)."""
        if run_ids and self._intent_path() is not None:
            pending = self._pending()
            self._write_pending(pending + [i for i in run_ids if i not in pending])

    def _sealed(self, run_ids: list[str]) -> None:
        pending = self._pending()
        if pending:
            self._write_pending([i for i in pending if i not in run_ids])

    def seal_pending(self) -> None:
        """Seal the finished runs an interrupted pass committed but did not seal."""
        ids = self._pending()
        if not ids:
            return
        runs = [r for r in (self.store.get_run(i) for i in ids)
                if r is not None and r.status.finished]
        log.warning("sealing %d run(s) an interrupted ingest pass left unsealed: %s",
                    len(runs), [r.run_id for r in runs])
        self._write_pending([r.run_id for r in runs])  # drop ids that no longer need it
        self.finalize(runs)

    def forget(self, path: Path) -> None:
        self._segments.pop(path, None)

    def ingest(self, paths: Iterable[Path], *, batch_bytes: int = INGEST_BATCH_BYTES) -> IngestStats:
        """Apply every complete record past each segment's offset.

        Records go in batches of about ``batch_bytes`` per segment, two commits each, so a
        backlog of many GB (a daemon back after a long gap) is never held in memory at once.
        The caller holds the ingest lock. On an exception the batch that failed is not marked
        ingested, so the next call retries its records.
        """
        if isinstance(batch_bytes, bool) or not isinstance(batch_bytes, int) or batch_bytes < 1:
            raise ValueError(f"batch_bytes must be a positive int, got {batch_bytes!r}")
        total = IngestStats()
        runs: set[str] = set()
        todo = list(paths)
        while todo:
            try:
                stats, todo, touched = self._ingest_batch(todo, batch_bytes)
            except Exception:
                if len(todo) == 1:
                    raise
                # One segment's records fail: apply each segment on its own, so every other
                # run still becomes queryable; the failing one is retried next pass.
                stats, todo, touched = self._one_by_one(todo, batch_bytes, total)
            total.records += stats.records
            total.points += stats.points
            total.torn_bytes += stats.torn_bytes
            runs.update(touched)
        total.runs = len(runs)
        return total

    def _one_by_one(
        self, paths: list[Path], batch_bytes: int, total: IngestStats
    ) -> tuple[IngestStats, list[Path], list[str]]:
        stats, more, touched = IngestStats(), list[Path](), list[str]()
        for path in paths:
            run = path.parent.name
            if any(p.parent.name == run for p in total.failed):
                total.failed.append(path)  # its run's earlier attach failed: keep order
                continue
            if any(p.parent.name == run for p in more):
                more.append(path)  # its run's earlier attach is not through yet
                continue
            try:
                st, rest, t = self._ingest_batch([path], batch_bytes)
            except Exception:
                log.exception("WAL %s could not be ingested; it is kept and retried", path)
                total.failed.append(path)
                continue
            stats.records += st.records
            stats.points += st.points
            stats.torn_bytes += st.torn_bytes
            more += rest
            touched += t
        return stats, more, touched

    def _ingest_batch(
        self, paths: list[Path], batch_bytes: int
    ) -> tuple[IngestStats, list[Path], list[str]]:
        """One batch: returns its stats, the segments with more to read, the runs touched."""
        try:
            return self._apply_batch(paths, batch_bytes)
        except Exception:
            # Part of the batch may be committed (metrics before runs): forget what this
            # ingester believed, so a retry reads the store's state and adds no duplicate.
            for path in paths:
                seg = self._segments.get(path)
                if seg is not None:
                    seg.checkpoint = None
                    self._runs.pop(seg.run_id, None)
            raise

    def _apply_batch(
        self, paths: list[Path], batch_bytes: int
    ) -> tuple[IngestStats, list[Path], list[str]]:
        self.seal_pending()  # under the ingest lock, as every pass is
        version = self.store.runs_version()
        if version is None or version != self._runs_version:
            self._runs.clear()
        stats = IngestStats()
        more: list[Path] = []
        touched: dict[str, RunRecord] = {}
        chunks: dict[tuple[str, str, int], list[Any]] = {}
        self._rewinds, self._gen, self._relogged = [], {}, set()
        new_offsets: list[tuple[_Segment, int]] = []
        unfinished: set[str] = set()  # runs with a segment that has more to read
        for path in paths:
            if path.parent.name in unfinished:
                more.append(path)  # a run's later attach waits for its earlier one's end
                continue
            seg = self._segments.get(path)
            if seg is None:
                seg = self._segments[path] = _Segment(path, run_id=path.parent.name)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            end = seg.offset
            for rec in read_wal(path, seg.offset, max_bytes=batch_bytes):
                end = rec.end
                self._apply(seg, rec.data, touched, chunks, stats)
            if end - seg.offset >= batch_bytes:
                more.append(path)
                unfinished.add(seg.run_id)
            else:
                stats.torn_bytes += size - end
            new_offsets.append((seg, end))
        # Rewinds go first: the points of the attach that declared one (appended next) must
        # never be seen beside the ones they supersede.
        for rw, dropped in self._rewinds:
            dropped += self.store.rewind_metrics(rw.run_id, rw.seq, rw.step)
            if self.on_rewind is not None:
                try:
                    self.on_rewind(rw, dropped)
                except Exception:
                    log.exception("recording the rewind of run %s failed", rw.run_id)
        if chunks:
            table = _chunks_table(chunks)
            self.store.append_metrics(table)
        for rid in self._relogged & touched.keys():
            # A step logged again: min and max must not count the value written over.
            run = touched[rid]
            summary, last = rebuild_summary(chunk_tuples(self.store.metric_chunks(rid)),
                                            run.summary)
            touched[rid] = replace(run, summary=summary, last_step=last)
        finished: list[RunRecord] = []
        if touched:
            now = time.time()
            runs = [replace(r, updated_at=now) for r in touched.values()]
            # A finished run that got records in this pass is sealed (again): its status
            # changed, or records came after it ended (a remote client back after the
            # server marked it crashed), which a seal of the older data would report as
            # tampering. Each seal is a new record of the chain; verify reads the newest.
            finished = [r for r in runs if r.status.finished]
            self._intend([r.run_id for r in finished])
            self.store.upsert_runs(runs)
            self._runs.update({r.run_id: r for r in runs})
            self._runs_version = self.store.runs_version()  # under the ingest lock: ours
        for seg, end in new_offsets:
            seg.offset = end
        stats.runs = len(touched)
        self.finalize(finished)
        return stats, more, list(touched)

    # -- record application ------------------------------------------------------------------
    def _run(self, seg: _Segment, touched: dict[str, RunRecord]) -> RunRecord | None:
        rid = seg.run_id
        if rid in touched:
            return touched[rid]
        run = self._runs.get(rid) or self.store.get_run(rid)
        if run is not None:
            self._runs[rid] = run
        if seg.checkpoint is None:
            seg.checkpoint = run.ingested_seq if run is not None else -1
            seqs = self.store.metric_seqs(rid, seg.checkpoint)
            seg.metrics_in = max(seqs, default=seg.checkpoint)
        return run

    def _apply(
        self,
        seg: _Segment,
        rec: dict[str, Any],
        touched: dict[str, RunRecord],
        chunks: dict[tuple[str, str, int], list[Any]],
        stats: IngestStats,
    ) -> None:
        run = self._run(seg, touched)
        seq = rec["seq"]
        if seq <= (seg.checkpoint if seg.checkpoint is not None else -1):
            return
        kind = rec["k"]
        stats.records += 1
        if kind == "run":
            run = _run_from_init(rec, run)
            if REWIND_FIELD in rec:
                run = self._rewind(seg, rec, run, chunks)
        elif run is None:
            log.warning("WAL %s: record %s before its run record; skipped", seg.path, seq)
            return
        elif kind == "metrics":
            summary = run.summary if run.run_id in touched else _copy_summary(run.summary)
            last_step = run.last_step
            for ch in rec["chunks"]:
                steps, times = ch["step"], ch["time"]
                if not steps or not 0 <= min(steps) <= max(steps) < _STEP_LIMIT:
                    # Steps the int64 column cannot hold (a writer without the SDK's
                    # checks): skipping them keeps one bad record from stalling ingest.
                    log.warning("WAL %s: record %s has steps outside [0, 2**63); its %d "
                                "points of %s were skipped", seg.path, seq,
                                len(steps) * len(ch["keys"]), ch["keys"])
                    continue
                if not ch["keys"][0].startswith(RESERVED_PREFIX):
                    # System metrics count their own steps: not the run's training step.
                    last_step = max(last_step, max(steps))
                    if run.run_id not in self._relogged and relogs(summary, ch["keys"], steps):
                        self._relogged.add(run.run_id)  # its summary is rebuilt at commit
                merge_summary(summary, ch["keys"], steps, ch["vals"])
                if seq > seg.metrics_in:
                    gen = self._gen.get(run.run_id, 0)
                    for key, vals in zip(ch["keys"], ch["vals"]):
                        acc = chunks.setdefault((run.run_id, key, gen), [seq, [], [], []])
                        acc[0] = seq
                        acc[1].extend(steps)
                        acc[2].extend(vals)
                        acc[3].extend(times)
                    stats.points += len(steps) * len(ch["keys"])
            run = replace(run, summary=summary, last_step=last_step)
        elif kind == "rewind":  # declared at the attach's first log() ("auto")
            run = self._rewind(seg, rec, run, chunks)
        elif kind == "config":
            run = replace(run, config={**run.config, **rec["update"]})
        elif kind == "summary":
            run = replace(run, summary_set={**run.summary_set, **rec["update"]})
        elif kind == "env":
            run = replace(run, env=rec.get("env", run.env), git=rec.get("git", run.git))
        elif kind == "status":
            run = replace(
                run,
                status=RunStatus(rec["status"]),
                error=rec.get("error", ""),
                finished_at=rec.get("time"),
            )
        else:
            log.warning("WAL %s: unknown record kind %r; skipped", seg.path, kind)
            return
        touched[run.run_id] = replace(run, ingested_seq=seq)

    def _rewind(self, seg: _Segment, rec: dict[str, Any], run: RunRecord,
                chunks: dict[tuple[str, str, int], list[Any]]) -> RunRecord:
        """Apply a rewind declared by a run record (or by a ``rewind`` record, written at
        the first ``log()`` of an attach resumed with ``resume_from_step="auto"``; it comes
        before that attach's points, so only earlier records are superseded): cut this
        batch's points of the run now,
        queue the store's cut for the commit (before the batch's points are appended), and
        recompute the summary and last step from the points that remain."""
        step = rec[REWIND_FIELD]
        if not valid_step(step):
            log.warning("WAL %s: record %s declares %s=%r, not a step; ignored", seg.path,
                        rec["seq"], REWIND_FIELD, step)
            return run
        rw = Rewind(run.run_id, rec["seq"], step, rec["seq"] >> SEQ_BITS)
        mine: list[tuple[int, str, list[int], list[float]]] = []
        dropped = 0
        for ck, acc in list(chunks.items()):
            if ck[0] != run.run_id or not rewinds(ck[1]):
                continue
            keep = [i for i, s in enumerate(acc[1]) if s < step]
            dropped += len(acc[1]) - len(keep)
            if not keep:
                del chunks[ck]
                continue
            if len(keep) < len(acc[1]):
                acc[1:] = [[col[i] for i in keep] for col in acc[1:]]
            mine.append((acc[0], ck[1], acc[1], acc[2]))
        # Stored chunks of later records are a replay's (a crash before the run's row was
        # written): they are merged again as their records come. The batch's earlier
        # rewinds of this run are not in the store yet.
        stored = self.store.metric_chunks(run.run_id)
        stored = stored.filter(pc.less(stored["seq"], rw.seq))
        earlier = [r for r, _ in self._rewinds if r.run_id == run.run_id]
        stored = apply_rewinds(stored, [*earlier, rw])
        summary, last_step = rebuild_summary(chunk_tuples(stored) + mine, run.summary)
        self._rewinds.append((rw, dropped))
        self._gen[run.run_id] = self._gen.get(run.run_id, 0) + 1
        return replace(run, summary=summary, last_step=last_step)


def _copy_summary(s: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {k: dict(v) for k, v in s.items()}


def _run_from_init(rec: dict[str, Any], prior: RunRecord | None) -> RunRecord:
    now = rec["time"]
    if prior is None:
        return RunRecord(
            run_id=rec["run_id"],
            project=rec["project"],
            name=rec["name"],
            status=RunStatus.RUNNING,
            created_at=now,
            updated_at=now,
            group=rec.get("group", ""),
            tags=tuple(rec.get("tags", ())),
            notes=rec.get("notes", ""),
            config=rec.get("config", {}),
            host=rec.get("host", ""),
            pid=rec.get("pid", 0),
            attach=rec.get("attach", 0),
        )
    # A resume's own group, tags and notes count too (tags add up; a new note or group
    # replaces the old one, as a new config entry does).
    return replace(
        prior,
        status=RunStatus.RUNNING,
        finished_at=None,
        error="",
        group=rec.get("group") or prior.group,
        tags=tuple(dict.fromkeys([*prior.tags, *rec.get("tags", ())])),
        notes=rec.get("notes") or prior.notes,
        config={**prior.config, **rec.get("config", {})},
        host=rec.get("host", prior.host),
        pid=rec.get("pid", prior.pid),
        attach=rec.get("attach", prior.attach),
    )


def _chunks_table(chunks: dict[tuple[str, str, int], list[Any]]) -> pa.Table:
    run_ids, keys, seqs, smin, smax, steps, vals, times = [], [], [], [], [], [], [], []
    for (rid, key, _), (seq, st, va, ti) in chunks.items():
        run_ids.append(rid)
        keys.append(key)
        seqs.append(seq)
        smin.append(min(st))
        smax.append(max(st))
        steps.append(st)
        vals.append(va)
        times.append(ti)
    try:
        return pa.table(
            [run_ids, keys, seqs, smin, smax, steps, vals, times], schema=METRICS_SCHEMA
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
        # A value Arrow cannot take as float64 (an integer past 2**63, a string from a
        # writer without the SDK's checks): convert value by value instead of stalling.
        log.warning("metric values that are not float64 were converted (unrepresentable "
                    "ones stored as NaN or +/-inf)")
        vals = [[_as_float(v) for v in va] for va in vals]
        return pa.table(
            [run_ids, keys, seqs, smin, smax, steps, vals, times], schema=METRICS_SCHEMA
        )


_STEP_LIMIT = 1 << 63


def _as_float(v: Any) -> float:
    try:
        return float(v)
    except OverflowError:
        return math.copysign(math.inf, v)
    except (TypeError, ValueError):
        return math.nan


def _frames_after_tear(path: Path, end: int) -> bool:
    """Whether an intact frame starts anywhere after ``end`` (where reading stopped)."""
    with open(path, "rb") as f:
        f.seek(end + 1)
        tail = f.read(64 << 20)  # the next write after a failed one starts close by
    pos = tail.find(FRAME_MAGIC)
    while pos >= 0:
        if next(iter_frames(tail[pos:]), None) is not None:
            return True
        pos = tail.find(FRAME_MAGIC, pos + 1)
    return False


def _quarantine(data_dir: Path, path: Path) -> Path:
    dest = data_dir / "wal-quarantine" / path.parent.name / path.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, dest)
    return dest


def sync_orphans(data_dir: Path, store: Store, lock: IngestLock, ingester: Ingester | None = None,
                 *, run_id: str | None = None, timeout: float | None = None) -> IngestStats:
    """Ingest every orphaned WAL segment (owner gone), mark unfinished runs crashed, delete them.

    Segments still owned by a live process are left alone. ``run_id`` limits it to one run.
    """
    ing = ingester or Ingester(store)
    total = IngestStats()
    pending = ing._intent_path()
    # An interrupted pass left runs unsealed:
    if pending is not None and pending.exists() and lock.acquire(timeout):
        try:
            ing.seal_pending()
        finally:
            lock.release()
    for path in list_segments(data_dir / "wal"):
        if run_id is not None and path.parent.name != run_id:
            continue
        fd = try_lock_segment(path)
        if fd is None:
            continue
        try:
            if not lock.acquire(timeout):
                raise ConflictError(
                    f"could not take the ingest lock of {data_dir} within {timeout} s",
                    hint="another process is ingesting; retry `assay sync` in a moment",
                )
            try:
                try:
                    st = ing.ingest([path])
                except Exception:
                    # Kept for a retry; the other orphans still go in.
                    log.exception("WAL %s could not be ingested; it is kept", path)
                    total.failed.append(path)
                    continue
                run = store.get_run(path.parent.name)
                # An API server holds this run for a remote client (restarting, or waiting
                # for the client to come back): not crashed; the server releases it.
                held = (path.parent / HOLD_FILE).exists()
                if run is not None and run.status is RunStatus.RUNNING and not held:
                    crashed = replace(
                        run,
                        status=RunStatus.CRASHED,
                        error=run.error or "the process ended without finishing the run "
                        "(recovered from its write-ahead log)",
                        updated_at=time.time(),
                    )
                    ing._intend([crashed.run_id])  # sealed by a later pass if killed here
                    store.upsert_runs([crashed])
                    ing._runs[crashed.run_id] = crashed
                    ing.finalize([crashed])
            finally:
                lock.release()
            total.records += st.records
            total.points += st.points
            total.runs += st.runs
            total.torn_bytes += st.torn_bytes
            if st.torn_bytes:
                log.warning("WAL %s: skipped a torn tail of %d bytes", path, st.torn_bytes)
                if _frames_after_tear(path, path.stat().st_size - st.torn_bytes):
                    # Intact records after the tear (a failed write in the middle): never
                    # delete them; set the segment aside for a person to look at.
                    kept = _quarantine(data_dir, path)
                    log.error("WAL %s has intact records after a damaged one; moved to %s",
                              path, kept)
                    total.failed.append(kept)
                    ing.forget(path)
                    continue
            path.unlink(missing_ok=True)
            ing.forget(path)
            total.segments_done.append(path)
            try:
                path.parent.rmdir()
            except OSError:
                pass
        finally:
            os.close(fd)
    return total
