"""The run's writer thread: drains the in-memory buffer into the write-ahead log.

``Run.log`` only appends ``(step, time, metrics)`` to a deque (thread-safe, no lock, no
I/O). Every ``FLUSH_INTERVAL`` seconds, or when asked, this thread drains the deque, groups
consecutive steps that logged the same keys into columnar chunks (a C-speed transpose, so the
per-point Python cost stays off the training thread), writes them with any control records
in one ``write`` and fsyncs. A flush request is an Event put in the same deque: it is set once
everything queued before it is durable.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from operator import itemgetter
from typing import Any

from ..store.records import merge_summary
from ..store.wal import WalWriter

__all__ = ["Writer"]

log = logging.getLogger(__name__)


class Writer(threading.Thread):
    """Owns one WAL segment; the only thread that writes to it."""

    def __init__(self, wal: WalWriter, seq_base: int, interval: float,
                 summary: dict[str, dict[str, float]]) -> None:
        super().__init__(name=f"assay-writer-{wal.path.parent.name}", daemon=True)
        self.queue: deque[Any] = deque()
        self._wal = wal
        self._seq = seq_base
        self._interval = interval
        self._wake = threading.Event()
        self._stopping = False
        self.summary = summary  # automatic summary, updated after each durable flush
        self.summary_lock = threading.Lock()
        self.error: BaseException | None = None
        self.points_written = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def run(self) -> None:
        while True:
            # Waking twice per interval bounds the age of an un-fsynced point by the interval.
            self._wake.wait(self._interval / 2)
            self._wake.clear()
            try:
                self._drain()
            except BaseException as exc:  # keep the thread alive; surfaced by flush()
                log.exception("assay writer failed to write %s", self._wal.path)
                self.error = exc
            if self._stopping and not self.queue:
                return

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything queued so far is fsynced. False on timeout."""
        done = threading.Event()
        self.queue.append(done)
        self._wake.set()
        return done.wait(timeout)

    def stop(self, timeout: float | None = None) -> None:
        self._stopping = True
        self._wake.set()
        self.join(timeout)

    def _drain(self) -> None:
        q = self.queue
        n = len(q)
        if not n:
            return
        popleft = q.popleft
        items = [popleft() for _ in range(n)]
        records: list[dict[str, Any]] = []
        events: list[threading.Event] = []
        run: list[tuple[int, float, dict[str, float]]] = []
        for it in items:
            if type(it) is tuple:
                run.append(it)
            elif isinstance(it, threading.Event):
                events.append(it)
            else:
                if run:
                    records.append(self._metrics_record(run))
                    run = []
                it["seq"] = self.next_seq()
                records.append(it)
        if run:
            records.append(self._metrics_record(run))
        self._wal.append(records)
        with self.summary_lock:
            for r in records:
                if r["k"] == "metrics":
                    for ch in r["chunks"]:
                        merge_summary(self.summary, ch["keys"], ch["step"], ch["vals"])
                        self.points_written += len(ch["step"]) * len(ch["keys"])
        for e in events:
            e.set()

    def _metrics_record(self, items: list[tuple[int, float, dict[str, float]]]) -> dict[str, Any]:
        groups: dict[tuple[str, ...], tuple[list[int], list[float], list[dict[str, float]]]] = {}
        for step, t, d in items:
            kt = tuple(d)
            g = groups.get(kt)
            if g is None:
                g = groups[kt] = ([], [], [])
            g[0].append(step)
            g[1].append(t)
            g[2].append(d)
        chunks = []
        for keys, (steps, times, dicts) in groups.items():
            if not keys:
                continue
            if len(keys) == 1:
                k = keys[0]
                cols: list[Any] = [[d[k] for d in dicts]]
            else:
                cols = [list(c) for c in zip(*map(itemgetter(*keys), dicts))]
            chunks.append({"keys": list(keys), "step": steps, "time": times, "vals": cols})
        return {"k": "metrics", "seq": self.next_seq(), "chunks": chunks}
