"""The run's writer thread: drains the in-memory buffer into the write-ahead log.

``Run.log`` only appends ``(step, time, metrics)`` to a deque (thread-safe, no lock, no
I/O). Twice per ``FLUSH_INTERVAL`` seconds, or when asked, this thread drains the deque,
groups consecutive steps that logged the same keys into columnar chunks (a C-speed transpose,
so the per-point Python cost stays off the training thread; consecutive, so chunks replay in
log order), writes them with any control records and fsyncs. A flush request is put in the
same deque: it is answered once everything queued before it is durable, or at once with a
:class:`WalWriteError` when the write failed.

The training thread must never wait on this one. ``json.dumps`` holds the GIL for the whole
record it encodes, so a batch is cut into records of at most :data:`MAX_RECORD_VALUES`
numbers and the thread yields the GIL between them: a writer that fell behind makes more
records, not longer pauses. A long drain writes and fsyncs every :data:`WRITE_EVERY_S`
seconds, so the oldest points of a backlog do not wait for the newest to be encoded.

A failed write (a full disk, an I/O error) loses nothing: the WAL is cut back to its last
complete frame, the encoded frames stay in memory in order, and the writer retries them
(backing off up to :data:`RETRY_MAX_S`) before anything logged later, so once the disk takes
them they are written once, in order, with the same bytes. After :meth:`Writer.stop` it keeps
trying for ``give_up_after`` seconds, then stops and reports what it could not write in
:attr:`Writer.lost`.

Memory is bounded. When more than ``max_buffered_steps`` steps wait in the deque (a producer
faster than the writer, millions of points a second) or more than ``max_pending_bytes`` of
encoded records wait for a disk that refuses them, the writer marks itself :attr:`full` and
tells the run (``on_full``), whose ``log()`` then waits after appending until the writer is
back under half of both limits, with a warning that says why. Nothing is dropped: the choice
is between a training loop that waits for a failing disk and one that is killed for memory,
and losing the process loses everything. Below the limits ``log()`` never waits.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from ..errors import WalWriteError
from ..store.records import merge_summary, relogs
from ..store.wal import WalWriter, encode

__all__ = ["MAX_RECORD_VALUES", "WalWriteError", "Writer"]

log = logging.getLogger(__name__)

MAX_RECORD_VALUES = 12_000
"""Numbers per ``metrics`` record at most (each point's value, and each step's step and time;
a step with more keys gets a record of its own): encoding one holds the GIL for about 4 ms."""

RETRY_MIN_S, RETRY_MAX_S = 0.05, 2.0
"""Backoff between attempts to write frames the WAL refused (doubling from min to max)."""

GIVE_UP_AFTER_S = 10.0
"""Seconds :meth:`Writer.stop` keeps retrying frames the WAL refuses before it gives up."""

WRITE_EVERY_S = 0.05
"""A long drain writes and fsyncs what it encoded so far at least this often."""

MAX_BUFFERED_STEPS = int(os.environ.get("ASSAY_MAX_BUFFERED_STEPS", "1000000"))
"""Steps waiting in memory (about 0.5 KB each with 5 metrics) above which ``log()`` waits."""

MAX_PENDING_BYTES = int(float(os.environ.get("ASSAY_MAX_PENDING_MB", "1024")) * (1 << 20))
"""Encoded bytes held for a disk that refuses writes above which ``log()`` waits."""

FULL_WARN_EVERY_S = 30.0
"""While ``log()`` waits for room, a warning at least this often says why."""

_WRITE_BYTES = 8 << 20

_HELD_FACTOR = 3
"""Held batches keep their frames and their decoded records (about twice the frames' size,
measured): memory held is counted as three times the encoded bytes."""
"""Bytes of a backlog written per ``write`` and fsync, so part of it goes in when the disk
has room for part."""


class _FlushRequest:
    """Put in the queue by :meth:`Writer.flush`; answered when what precedes it is durable."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: str | None = None


class _Batch:
    """What one drain made: encoded frames (fixed bytes, so a retry writes the same), the
    records (for the summary once durable) and the flush requests to answer."""

    __slots__ = ("frames", "nbytes", "points", "records", "requests")

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.records: list[dict[str, Any]] = []
        self.requests: list[_FlushRequest] = []
        self.nbytes = 0
        self.points = 0


class Writer(threading.Thread):
    """Owns one WAL segment; the only thread that writes to it.

    State a caller reads: ``error`` is the write failure now in progress (records waiting
    in memory; None once they are written); ``lost`` is set once, when the thread stopped with
    records it never wrote (``lost_records`` of them, ``lost_points`` points).
    """

    def __init__(self, wal: WalWriter, seq_base: int, interval: float,
                 summary: dict[str, dict[str, float]], *,
                 give_up_after: float = GIVE_UP_AFTER_S,
                 max_buffered_steps: int = MAX_BUFFERED_STEPS,
                 max_pending_bytes: int = MAX_PENDING_BYTES,
                 on_full: Callable[[bool], None] | None = None) -> None:
        super().__init__(name=f"assay-writer-{wal.path.parent.name}", daemon=True)
        self.queue: deque[Any] = deque()
        self._wal = wal
        self._seq = seq_base
        self._interval = interval
        self._give_up_after = give_up_after
        self._wake = threading.Event()
        self._stopping = False
        self._flush_asked = False
        self._pending: list[_Batch] = []  # encoded, not yet durable, in log order
        self._failures = 0
        self._cause: OSError | None = None  # the last write error, while records wait
        self._retry_at = 0.0
        self._give_up_at = float("inf")
        self.summary = summary  # automatic summary, updated after each durable flush
        self.summary_lock = threading.Lock()
        self.relogged = False  # a step was logged again: the store's min/max count it once
        self.error: BaseException | None = None
        self.lost: WalWriteError | None = None
        self.lost_records = 0
        self.lost_points = 0
        self.dropped_records = 0  # records that could not be encoded (a bug upstream)
        self.points_written = 0
        self.max_buffered_steps, self.max_pending_bytes = max_buffered_steps, max_pending_bytes
        self.on_full = on_full
        self.full = False  # over a memory limit: the run's log() waits for room
        self.full_waits = 0  # times log() waited for room
        self._room = threading.Condition()
        self._full_warned = -FULL_WARN_EVERY_S

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    @property
    def pending_records(self) -> int:
        """Records encoded but not yet durable (waiting for the disk after a failure)."""
        return sum(len(b.frames) for b in self._pending)

    @property
    def pending_bytes(self) -> int:
        """Memory held for a disk that refuses writes: the encoded frames, and the decoded
        records kept for the summary (counted together as :data:`_HELD_FACTOR` times the frames)."""
        return _HELD_FACTOR * sum(b.nbytes for b in self._pending)

    # -- bounded memory --------------------------------------------------------------------
    def _update_full(self) -> None:
        """Mark the writer full above a limit, and not full again below half of both."""
        queued, pending = len(self.queue), self.pending_bytes
        if not self.full:
            if queued <= self.max_buffered_steps and pending <= self.max_pending_bytes:
                return
            self.full = True
            now = time.monotonic()
            # Once per FULL_WARN_EVERY_S: a producer at the limit crosses it many times.
            loud = now - self._full_warned >= FULL_WARN_EVERY_S
            self._full_warned = now if loud else self._full_warned
            log.log(logging.WARNING if loud else logging.DEBUG,
                    "assay: %s; log() waits until it is written, so memory stays bounded",
                    self._full_reason(queued, pending))
            if self.on_full is not None:
                self.on_full(True)
        elif queued <= self.max_buffered_steps // 2 and pending <= self.max_pending_bytes // 2:
            with self._room:
                self.full = False
                self._room.notify_all()
            if self.on_full is not None:
                self.on_full(False)
            if self._cause is None:
                log.info("assay: the writer caught up with %s; log() no longer waits",
                         self._wal.path)
            else:
                log.warning("assay: log() no longer waits (below half of the limits), but %s "
                            "still refuses writes (%s): the records are held in memory and "
                            "retried", self._wal.path, self._cause)

    def _full_reason(self, queued: int, pending: int) -> str:
        if pending > self.max_pending_bytes:
            return (f"{pending / 2**20:.1f} MB of records wait for the WAL {self._wal.path}, "
                    f"which refuses writes ({self._cause}); free space or fix the disk (limit: "
                    "ASSAY_MAX_PENDING_MB)")
        return (f"{queued} logged steps wait to be written to {self._wal.path}: they are "
                "logged faster than they can be encoded and written (limit: "
                "ASSAY_MAX_BUFFERED_STEPS)")

    def wait_for_room(self) -> None:
        """Block while the writer is full (called by the run's ``log()`` after appending);
        returns at once when the writer is stopping or dead, so ``finish()`` never hangs."""
        if not self.full:
            return
        self.full_waits += 1
        with self._room:
            while self.full and not self._stopping and self.is_alive():
                self._room.wait(1.0)
                if self.full and time.monotonic() - self._full_warned >= FULL_WARN_EVERY_S:
                    self._full_warned = time.monotonic()
                    log.warning("assay: log() still waits: %s",
                                self._full_reason(len(self.queue), self.pending_bytes))

    def run(self) -> None:
        started = time.monotonic()
        while True:
            # Draining twice per interval (from the start of one drain to the next, so a long
            # drain is followed by the next at once) bounds the age of an un-fsynced point.
            if self._pending:  # between retries, still look at the limits twice an interval
                wait = min(self._retry_at - time.monotonic(), self._interval / 2)
            elif self._stopping:
                wait = 0.0
            else:
                wait = started + self._interval / 2 - time.monotonic()
            if wait > 0:
                self._wake.wait(wait)
            self._wake.clear()
            # After a failure, attempt at the backoff's pace, or at once for a flush request
            # (it gets its answer now, not a timeout).
            if self._pending and not self._flush_asked and time.monotonic() < self._retry_at:
                self._update_full()  # waiting to retry: the queue may still grow
            else:
                started = time.monotonic()
                try:
                    self._drain()
                except Exception as exc:  # a bug, not the disk: keep the thread alive
                    log.exception("assay writer failed to write %s", self._wal.path)
                    self.error = exc
                    self._retry_at = time.monotonic() + RETRY_MAX_S
            if self._stopping:
                if not self.queue and not self._pending:
                    return
                if self._pending and time.monotonic() >= self._give_up_at:
                    try:
                        self._drain()  # a last attempt, with everything queued since
                    except Exception:
                        log.exception("assay writer failed to write %s", self._wal.path)
                    if self._pending:
                        self._give_up()
                        return

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything queued so far is fsynced. False on timeout.

        Raises:
            WalWriteError: the write failed (the records are kept and retried; a later flush
                succeeds once the disk takes them).
        """
        req = _FlushRequest()
        self.queue.append(req)
        self._flush_asked = True
        self._wake.set()
        if not req.done.wait(timeout):
            return False
        if req.error is not None:
            raise WalWriteError(req.error, hint=_HINT)
        return True

    def stop(self, timeout: float | None = None) -> None:
        """Write what is queued and end the thread: within about ``give_up_after`` seconds
        when the WAL refuses writes (then :attr:`lost` says what was not written)."""
        self._give_up_at = time.monotonic() + self._give_up_after
        self._stopping = True
        self._wake.set()
        self.join(timeout)

    # -- one pass ------------------------------------------------------------------------------
    def _drain(self) -> None:
        """Write what is queued now, in slices of WRITE_EVERY_S of encoding: a point never
        waits for the encoding of a long backlog behind it to be durable."""
        self._flush_asked = False
        self._update_full()
        n = len(self.queue)
        while True:
            if n:
                b, taken = self._batch(n, time.monotonic() + WRITE_EVERY_S)
                n -= taken
                self._pending.append(b)
            self._write_pending()
            self._update_full()  # every slice: log() keeps appending during a long drain
            if self._pending:  # the disk refuses: keep the rest too, answer its flushes now
                if n:
                    self._pending.append(self._batch(n, math.inf)[0])
                    self._fail_requests()
                self._update_full()
                return
            if not n:
                self._update_full()
                return

    def _batch(self, n: int, deadline: float) -> tuple[_Batch, int]:
        """Take up to ``n`` items off the queue, in log order, into seq-numbered encoded
        records, until ``deadline`` (checked between records); returns the batch and how
        many items it took.

        Points become columnar ``metrics`` records: a chunk per run of consecutive points
        that logged the same keys (so chunks replay in log order and the summary's ``last``
        is the last value logged), a new record before one exceeds MAX_RECORD_VALUES.
        Items are taken one at a time and a record is encoded as soon as it is full, so the
        GIL is held for one record at a time, to encode it or to free its points.
        """
        b = _Batch()
        q = self.queue
        chunks: list[dict[str, Any]] = []
        keys: tuple[str, ...] = ()
        group: list[tuple[int, float, dict[str, float]]] = []
        size = 0
        for taken in range(n):
            it = q.popleft()
            if type(it) is tuple:
                d = it[2]
                if not d:
                    continue
                kt = tuple(d)
                if kt != keys:
                    if group:
                        chunks.append(_chunk(keys, group))
                        group = []
                    keys = kt
                if size and size + len(kt) + 2 > MAX_RECORD_VALUES:
                    if group:
                        chunks.append(_chunk(keys, group))
                        group = []
                    self._add(b, {"k": "metrics", "seq": self.next_seq(), "chunks": chunks})
                    chunks, size = [], 0
                    if time.monotonic() >= deadline:
                        q.appendleft(it)  # only this thread takes from the left
                        return b, taken
                group.append(it)
                size += len(kt) + 2
            elif type(it) is _FlushRequest:
                b.requests.append(it)
            else:
                if group:
                    chunks.append(_chunk(keys, group))
                    group = []
                if chunks:
                    self._add(b, {"k": "metrics", "seq": self.next_seq(), "chunks": chunks})
                    chunks, size = [], 0
                it["seq"] = self.next_seq()
                self._add(b, it)
                if time.monotonic() >= deadline:
                    return b, taken + 1
        if group:
            chunks.append(_chunk(keys, group))
        if chunks:
            self._add(b, {"k": "metrics", "seq": self.next_seq(), "chunks": chunks})
        return b, n

    def _add(self, b: _Batch, rec: dict[str, Any]) -> None:
        try:
            frame = encode(rec)
        except (TypeError, ValueError, OverflowError):
            # Not JSON (Run checks its input, so a bug): retrying cannot help.
            self.dropped_records += 1
            log.exception("assay writer dropped a record of kind %r it cannot encode",
                          rec.get("k"))
            return
        b.frames.append(frame)
        b.records.append(rec)
        b.nbytes += len(frame)
        if rec["k"] == "metrics":
            b.points += sum(len(ch["step"]) * len(ch["keys"]) for ch in rec["chunks"])
        time.sleep(0)  # let the training thread take the GIL between encodes

    # -- writing and retrying --------------------------------------------------------------------
    def _write_pending(self) -> None:
        """Write pending batches in order, several per write up to _WRITE_BYTES."""
        while self._pending:
            n, size = 1, self._pending[0].nbytes
            while n < len(self._pending) and size + self._pending[n].nbytes <= _WRITE_BYTES:
                size += self._pending[n].nbytes
                n += 1
            group = self._pending[:n]
            try:
                self._wal.write_frames([f for b in group for f in b.frames])
            except OSError as exc:  # the WAL was cut back: nothing of the group is in it
                self._failed(exc)
                return
            del self._pending[:n]
            self._written(group)

    def _written(self, group: list[_Batch]) -> None:
        for b in group:
            recs, b.records = b.records, []
            recs.reverse()
            while recs:
                r = recs.pop()  # each record's points are freed on their own (GIL held)
                if r["k"] == "metrics":
                    with self.summary_lock:
                        for ch in r["chunks"]:
                            if not self.relogged and relogs(self.summary, ch["keys"], ch["step"]):
                                self.relogged = True  # the stored summary will differ
                            merge_summary(self.summary, ch["keys"], ch["step"], ch["vals"])
                del r
            self.points_written += b.points
        if self._failures:
            log.warning("assay writer: the WAL %s takes writes again; the records held in "
                        "memory are written", self._wal.path)
        self._failures = 0
        self._cause = self.error = None
        for b in group:
            for req in b.requests:
                req.done.set()

    def _failed(self, exc: OSError) -> None:
        """Keep every pending batch, answer their flush requests with the error, back off."""
        self._cause = exc
        self._failures += 1
        delay = min(RETRY_MAX_S, RETRY_MIN_S * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + delay
        self._fail_requests()
        if self._failures == 1:  # once per outage, not once per retry
            log.error("assay writer: %s", self._error_message())

    def _error_message(self) -> str:
        records = sum(len(b.frames) for b in self._pending)
        points = sum(b.points for b in self._pending)
        return (f"writing the write-ahead log {self._wal.path} failed: {self._cause}; "
                f"{points} points in {records} records are held in memory and retried")

    def _fail_requests(self) -> None:
        """Set :attr:`error` from what is pending and answer the pending flush requests."""
        msg = self._error_message()
        err = WalWriteError(msg, hint=_HINT)
        err.__cause__ = self._cause
        self.error = err
        for b in self._pending:
            for req in b.requests:
                req.error = msg
                req.done.set()
            b.requests = []

    def _give_up(self) -> None:
        self.lost_records = sum(len(b.frames) for b in self._pending)
        self.lost_points = sum(b.points for b in self._pending)
        self.lost = WalWriteError(
            f"{self.lost_points} points in {self.lost_records} records of the run were not "
            f"written: the write-ahead log {self._wal.path} refused them until "
            f"{self._give_up_after:g} s after finish ({self._cause})",
            hint="free space on the disk of the data directory; every record written before "
                 "them is stored",
        )
        log.error("assay writer: %s", self.lost.message)
        for b in self._pending:
            for req in b.requests:
                req.error = self.lost.message
                req.done.set()
        self._pending = []


_HINT = ("free space on the disk of the data directory (or fix its permissions): the writer "
         "retries and writes them in order once the disk takes them; finish() reports what it "
         "could not write")


def _chunk(keys: tuple[str, ...],
           group: list[tuple[int, float, dict[str, float]]]) -> dict[str, Any]:
    """One columnar chunk: points that logged exactly ``keys``, in log order."""
    if len(keys) == 1:
        k = keys[0]
        cols: list[Any] = [[d[k] for _, _, d in group]]
    else:
        cols = [list(c) for c in zip(*map(itemgetter(*keys), (d for _, _, d in group)))]
    return {"keys": list(keys), "step": [s for s, _, _ in group],
            "time": [t for _, t, _ in group], "vals": cols}
