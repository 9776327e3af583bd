"""The audit trail: who changed what, when and why, hash-chained and signed (one per data dir).

Built on :class:`assay.store.signing.AuditLog` (a storage-agnostic signed chain); this module
is its storage: an append-only JSON-lines file ``<data dir>/audit/audit.jsonl``, one
:meth:`ChainedRecord.to_row` per line, appended under an ``flock`` (the head is re-read under
the lock, so several processes never fork the chain) and fsynced before the write it records
is acknowledged. The data directory's signing key (``signing_key.pem``) signs every entry;
``GET /api/audit/verify`` checks the chain.

Metric points are data, not decisions: batches that only append metric points are counted
per run and written as one ``log_metrics`` entry (seq range and counts) when the run's
segment closes or every :data:`METRICS_FLUSH_INTERVAL` seconds; every other write (a run
created, config/summary/env/status records, tokens, MLflow params and tags, and later
overrides) gets its own entry.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .signing import AuditEntry, AuditLog, ChainedRecord, KeyPair, verify_audit_log

__all__ = ["METRICS_FLUSH_INTERVAL", "AuditTrail"]

METRICS_FLUSH_INTERVAL = 60.0
_TAIL = 1 << 16


class _TrailIndex:
    """seq -> hash of a trail's entries read so far, and where reading stopped."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.hashes: dict[int, str] = {}
        self.inode, self.offset, self.last = -1, 0, b""


_INDEXES: dict[str, _TrailIndex] = {}
_INDEX_LOCK = threading.Lock()


class AuditTrail:
    """Appends signed audit entries to ``<data dir>/audit/audit.jsonl``."""

    def __init__(self, data_dir: Path, key: KeyPair | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / "audit" / "audit.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.key = key or KeyPair.load_or_create(self.data_dir)
        self._mutex = threading.Lock()
        self._metrics: dict[str, dict[str, Any]] = {}

    # -- writing --------------------------------------------------------------------------
    def record(self, actor: str, action: str, target: str, reason: str = "",
               details: Mapping[str, Any] | None = None) -> ChainedRecord:
        """Append one entry, durably, and return its sealed record."""
        with self._mutex:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                head = self._head(fd)

                def sink(rec: ChainedRecord) -> None:
                    line = json.dumps(rec.to_row(), separators=(",", ":")) + "\n"
                    os.write(fd, line.encode())
                    os.fsync(fd)

                log = AuditLog(self.key, head, sink=sink)
                return log.append(actor, action, target, reason, details=details)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def count_metrics(self, actor: str, run_id: str, first_seq: int, last_seq: int,
                      records: int, points: int) -> None:
        """Count a metrics-only batch; written later as one ``log_metrics`` entry per run."""
        with self._mutex:
            acc = self._metrics.get(run_id)
            if acc is None:
                acc = self._metrics[run_id] = {"actor": actor, "first_seq": first_seq,
                                               "last_seq": last_seq, "records": 0,
                                               "points": 0, "since": time.time()}
            acc["last_seq"] = max(acc["last_seq"], last_seq)
            acc["first_seq"] = min(acc["first_seq"], first_seq)
            acc["records"] += records
            acc["points"] += points

    def flush_metrics(self, run_id: str | None = None, *, older_than: float = 0.0) -> int:
        """Write the pending ``log_metrics`` entries (of one run, or those older than a bound)."""
        now = time.time()
        with self._mutex:
            ids = [r for r, a in self._metrics.items()
                   if (run_id is None or r == run_id) and now - a["since"] >= older_than]
            pending = [(r, self._metrics.pop(r)) for r in ids]
        for rid, acc in pending:
            actor = acc.pop("actor")
            acc.pop("since")
            self.record(actor, "log_metrics", rid, "remote logging", details=acc)
        return len(pending)

    # -- reading --------------------------------------------------------------------------
    @staticmethod
    def _head(fd: int) -> ChainedRecord | None:
        size = os.fstat(fd).st_size
        if size == 0:
            return None
        start = max(0, size - _TAIL)
        while True:
            data = os.pread(fd, size - start, start)
            lines = data.rstrip(b"\n").split(b"\n")
            if len(lines) > 1 or start == 0:
                return ChainedRecord.from_row(json.loads(lines[-1]))
            start = max(0, start - _TAIL)

    def anchor(self) -> dict[str, Any] | None:
        """The newest entry's ``{"seq", "hash"}`` (None while the trail is empty): a run's
        signed record holds it, so a trail later cut back past it, or deleted, is found by
        ``verify``."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            head = self._head(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return None if head is None else {"seq": head.seq, "hash": head.hash}

    def hash_at(self, seq: Any) -> str | None:
        """The hash of entry ``seq``, or None when the trail holds none (cut back, deleted).
        The process keeps an index of each trail it read (shared by every AuditTrail of the
        same file: a server opens one per request) and reads only the lines appended since
        (the whole file again if it was replaced, shrank or changed where reading stopped),
        so checking one run's anchor stays cheap on a long trail."""
        if not isinstance(seq, int):
            return None
        with _INDEX_LOCK:
            ix = _INDEXES.setdefault(str(self.path), _TrailIndex())
            if not self.path.exists():
                ix.reset()
                return None
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                if ix.inode != st.st_ino or st.st_size < ix.offset or (
                        ix.last and os.pread(f.fileno(), len(ix.last),
                                             ix.offset - len(ix.last)) != ix.last):
                    ix.reset()
                f.seek(ix.offset)
                for line in f:
                    if not line.endswith(b"\n"):
                        break  # being appended right now
                    ix.offset += len(line)
                    ix.last = line
                    if line.strip():
                        row = json.loads(line)
                        ix.hashes[int(row["seq"])] = str(row["hash"])
                ix.inode = st.st_ino
            return ix.hashes.get(seq)

    def records(self) -> list[ChainedRecord]:
        """Every record, in chain order."""
        if not self.path.exists():
            return []
        out = []
        with open(self.path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # a line being appended right now: not a record yet
                if line.strip():
                    out.append(ChainedRecord.from_row(json.loads(line)))
        return out

    def entries(self, *, limit: int = 100, offset: int = 0,
                target: str | None = None, actor: str | None = None) -> tuple[int, list[dict[str, Any]]]:
        """Newest-first entries (decoded) and the total count after filtering."""
        rows = []
        for rec in self.records():
            e = AuditEntry.from_record(rec)
            if target is not None and e.target != target:
                continue
            if actor is not None and e.actor != actor:
                continue
            rows.append({"seq": rec.seq, "at": e.at, "actor": e.actor, "action": e.action,
                         "target": e.target, "reason": e.reason, "details": e.details,
                         "hash": rec.hash})
        rows.reverse()
        return len(rows), rows[offset: offset + limit]

    def verify(self) -> list[str]:
        """Problems found in the chain (empty when intact)."""
        return [str(p) for p in verify_audit_log(self.records(), self.key)]
