"""Server-side write path: WAL records from remote clients into server-owned WAL segments.

A remote client (``assay.init(server=...)``, the MLflow protocol) never touches LanceDB: the
server appends its records, as the exact WAL frames of :mod:`assay.store.wal`, to
``<data dir>/wal/<run_id>/<attach:06d>.wal``, fsyncs, and only then acknowledges the highest
durable ``seq``. The ingest daemon (:mod:`assay.store.ingestd`) moves those segments into
LanceDB like any other. Idempotency: a record whose ``seq`` is not above the run's durable
seq is a retry and is dropped, so retries never duplicate; the durable seq after a server
restart is the highest of the store's ``ingested_seq`` and the records still in segments.

The server holds a segment's ``flock`` while its client may still write, so the daemon
treats it as live. A segment is closed when its status record arrives (the run finished),
when a finished run has been idle for ``idle_close`` seconds, or when an unfinished run's
client has been silent for ``stale_after`` seconds (the daemon then marks it crashed; if the
client comes back, its records are still accepted and its final status record wins). While
the server holds a run, ``<dir>/wal/<run_id>/remote.hold`` exists (see the report to the
store owner: recovery should not mark such a run crashed during a server restart).

Ownership: ``<dir>/remote/<run_id>.json`` records the token name that created the run; a
researcher may only write to runs it owns, a supervisor to any.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from ..errors import ConflictError, PermissionDeniedError
from ..store.ingestd import ensure_daemon
from ..store.wal import (
    HOLD_FILE,
    SEQ_BITS,
    encode,
    fsync_dirs,
    iter_file_frames,
    read_wal,
    segment_path,
)
from .audit import AuditTrail
from .auth import Principal, Role
from .store_ext import ServerStore

__all__ = ["HOLD_FILE", "SEQ_BITS", "AppendResult", "RemoteIngest"]

log = logging.getLogger("assay.api.ingest")

_PENDING_CAP = 200_000  # metric points kept for read-your-writes per run


@dataclass(frozen=True)
class AppendResult:
    run_id: str
    durable_seq: int
    accepted: int
    duplicates: int


class _Segment:
    """An exclusively locked, append-only server segment (fsync per write)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise HTTPException(503, f"the WAL segment {path.name} of run "
                                    f"{path.parent.name} is being ingested; retry",
                                    headers={"Retry-After": "1"}) from None
            # The daemon may have ingested and unlinked the file between our open and our
            # lock: writing to that inode would lose the records. Reopen the path then.
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd, self.path = fd, path
                if os.fstat(fd).st_size == 0:
                    fsync_dirs(path)
                else:
                    self._cut_torn_tail()
                return
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        raise HTTPException(503, f"could not open {path}", headers={"Retry-After": "1"})

    def _cut_torn_tail(self) -> None:
        """Cut a torn last frame (a server killed mid-write) before appending: records written
        after it would be hidden, since readers stop at the first frame that is not intact."""
        size = os.fstat(self.fd).st_size
        end = 0
        for _, end, _payload in iter_file_frames(self.path):  # in pieces, never whole
            pass
        if end < size:
            log.warning("cut a torn tail of %d bytes from %s", size - end, self.path)
            os.ftruncate(self.fd, end)
            os.fsync(self.fd)

    def write(self, data: bytes) -> None:
        """Append and fsync; on failure cut the segment back so no torn frame hides later ones."""
        size = os.fstat(self.fd).st_size
        try:
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
            os.fsync(self.fd)
        except OSError as exc:
            try:
                os.ftruncate(self.fd, size)
            except OSError:
                log.exception("could not cut %s back after a failed write", self.path)
            raise HTTPException(503, f"the server could not write run {self.path.parent.name}'s "
                                f"records: {exc.strerror or exc}",
                                headers={"Retry-After": "5"}) from None

    def close(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


@dataclass
class _Run:
    run_id: str
    durable: int = -1
    owner: str | None = None
    owned_since: float | None = None  # when this server gave the run to its owner (epoch s)
    known: bool = False  # exists somewhere (store, segments or state file)
    attaches: dict[str, str] = field(default_factory=dict)
    seg: _Segment | None = None
    seg_attach: int = -1
    finished: bool = False
    project: str = ""
    last_contact: float = field(default_factory=time.monotonic)
    pending: list[dict[str, Any]] | None = None  # metric records not yet seen ingested
    lock: threading.RLock = field(default_factory=threading.RLock)


def _origin(rec: dict[str, Any]) -> str:
    """Who wrote an attach's run record: host, pid and time (distinct for every writer)."""
    return f"{rec.get('host', '')}:{rec.get('pid', '')}:{rec.get('time', '')}"


class RemoteIngest:
    """Appends remote runs' WAL records to server segments (thread-safe; one per server)."""

    def __init__(self, data_dir: Path, store: ServerStore, audit: AuditTrail, *,
                 stale_after: float = 600.0, idle_close: float = 30.0,
                 start_daemon: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.wal_dir = self.data_dir / "wal"
        self.state_dir = self.data_dir / "remote"
        self.store, self.audit = store, audit
        self.stale_after, self.idle_close = stale_after, idle_close
        self.start_daemon = start_daemon
        self._runs: dict[str, _Run] = {}
        self._mutex = threading.Lock()
        self._server_lock = -1

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Take the directory's server lock and adopt runs a previous server left held."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_dir / "server.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConflictError(f"another assay server is serving {self.data_dir}",
                                hint="run one server per data directory (uvicorn --workers 1)"
                                ) from None
        self._server_lock = fd
        for hold in self.wal_dir.glob(f"*/{HOLD_FILE}"):
            self._get(hold.parent.name)  # its client gets stale_after seconds to come back
        # The daemon starts when there is something to ingest (here, or at the first segment).
        if self.start_daemon and next(self.wal_dir.glob("*/*.wal"), None) is not None:
            ensure_daemon(self.data_dir)

    def stop(self) -> None:
        """Close every segment (hold files stay: the clients may come back to the next server)."""
        with self._mutex:
            runs = list(self._runs.values())
        for r in runs:
            with r.lock:
                if r.seg is not None:
                    r.seg.close()
                    r.seg = None
        self.audit.flush_metrics()
        if self._server_lock >= 0:
            os.close(self._server_lock)
            self._server_lock = -1

    # -- state ----------------------------------------------------------------------------
    def _get(self, run_id: str) -> _Run:
        with self._mutex:
            r = self._runs.get(run_id)
            if r is None:
                r = self._runs[run_id] = self._load(run_id)
            return r

    def _load(self, run_id: str) -> _Run:
        r = _Run(run_id)
        state = self.state_dir / f"{run_id}.json"
        if state.exists():
            d = json.loads(state.read_text())
            r.owner, r.attaches, r.known = d.get("owner"), d.get("attaches", {}), True
            r.owned_since = d.get("owned_since")
            r.project = d.get("project") or ""
        stored = self.store.get_run(run_id)
        if stored is not None:
            r.known = True
            r.project = r.project or stored.project
            r.durable = stored.ingested_seq
            r.finished = stored.status.finished
        for seg in sorted((self.wal_dir / run_id).glob("*.wal")):
            last, kind = -1, ""
            for rec in read_wal(seg):
                last, kind = rec.data.get("seq", last), rec.data.get("k", "")
            if last > r.durable:
                r.durable, r.finished = last, kind == "status"
            r.known = True
        r.seg_attach = r.durable >> SEQ_BITS if r.durable >= 0 else -1
        return r

    def _save_state(self, r: _Run, project: str) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / f"{r.run_id}.json"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"owner": r.owner, "owned_since": r.owned_since, "project": project,
                       "attaches": r.attaches}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def run_lock(self, run_id: str) -> threading.RLock:
        """The run's (reentrant) lock: hold it to make several appends and side effects atomic."""
        return self._get(run_id).lock

    def durable_seq(self, run_id: str) -> int:
        """The highest seq of the run the server holds durably (-1: none)."""
        return self._get(run_id).durable

    def owner(self, run_id: str) -> str | None:
        return self._get(run_id).owner

    def owned_since(self, run_id: str) -> float | None:
        """When this server gave the run to its owner (None: unknown, or no owner)."""
        return self._get(run_id).owned_since

    def run_state(self, run_id: str) -> tuple[str, bool]:
        """The run's project and whether its last durable record ends it (a status)."""
        r = self._get(run_id)
        with r.lock:
            return r.project, r.finished

    def check_writer(self, who: Principal, run_id: str) -> None:
        """Refuse a researcher who does not own an existing run (supervisors may write any)."""
        r = self._get(run_id)
        if r.known and r.owner != who.name and not who.can(Role.SUPERVISOR):
            raise PermissionDeniedError(
                f"run {run_id} belongs to {r.owner or 'another writer'}, not {who.name}",
                hint="write to your own runs, or use a supervisor token")

    # -- appending ------------------------------------------------------------------------
    def append(self, who: Principal, run_id: str, records: list[tuple[dict[str, Any], bytes]],
               reason: str = "", *, track_pending: bool = False) -> AppendResult:
        """Append validated records (``(record, frame)`` pairs in seq order) durably.

        Raises:
            PermissionDeniedError: a researcher writing to another's run.
            ConflictError: a new run whose first record is not its run record, or whose id
                is taken.
        """
        r = self._get(run_id)
        with r.lock:
            # Before anything else: a heartbeat (no records) or a resent batch from someone
            # who does not own the run must not keep it open either.
            self.check_writer(who, run_id)
            r.last_contact = time.monotonic()
            if track_pending and r.pending is None:
                r.pending = []
            new = [(rec, fr) for rec, fr in records if rec["seq"] > r.durable]
            dups = len(records) - len(new)
            for rec, _ in records[:dups]:
                if rec["k"] == "run" and r.attaches.get(str(rec["seq"] >> SEQ_BITS),
                                                        _origin(rec)) != _origin(rec):
                    raise ConflictError(f"run id {run_id!r} is already used by another writer",
                                        hint="start a new run (a fresh id)")
            if not new:
                return AppendResult(run_id, r.durable, 0, dups)
            i = 0
            while i < len(new):
                attach = new[i][0]["seq"] >> SEQ_BITS
                j = i
                while j < len(new) and new[j][0]["seq"] >> SEQ_BITS == attach:
                    j += 1
                self._append_attach(who, r, attach, new[i:j], reason)
                i = j
            return AppendResult(run_id, r.durable, len(new), dups)

    def _append_attach(self, who: Principal, r: _Run, attach: int,
                       batch: list[tuple[dict[str, Any], bytes]], reason: str) -> None:
        first = batch[0][0]
        if attach != r.seg_attach or not r.known:
            if first["k"] != "run":
                raise ConflictError(
                    f"run {r.run_id}: attach {attach} starts with a {first['k']!r} record, "
                    "not its run record", hint="send records from the start of the segment")
            self._new_attach(who, r, attach, first, reason)
        if r.seg is None:
            self._open(r, attach)
        r.seg.write(b"".join(fr for _, fr in batch))  # type: ignore[union-attr]
        r.durable = batch[-1][0]["seq"]
        kinds: dict[str, int] = {}
        points = 0
        for rec, _ in batch:
            kinds[rec["k"]] = kinds.get(rec["k"], 0) + 1
            if rec["k"] == "metrics":
                points += sum(len(c["step"]) * len(c["keys"]) for c in rec["chunks"])
                if r.pending is not None:
                    r.pending.append(rec)
            elif rec["k"] == "run":
                r.finished = False
            elif rec["k"] == "status":
                r.finished = True
        if r.pending is not None and len(r.pending) > _PENDING_CAP:
            del r.pending[: len(r.pending) - _PENDING_CAP]
        seqs = (batch[0][0]["seq"], batch[-1][0]["seq"])
        if set(kinds) == {"metrics"}:
            self.audit.count_metrics(who.name, r.run_id, *seqs, len(batch), points)
        else:
            self.audit.record(who.name, "log_records", r.run_id, reason or "remote logging",
                              {"kinds": kinds, "first_seq": seqs[0], "last_seq": seqs[1],
                               "points": points})
        if r.finished:
            self._close(r)

    def _new_attach(self, who: Principal, r: _Run, attach: int, rec: dict[str, Any],
                    reason: str) -> None:
        origin = _origin(rec)
        if not r.known:
            try:
                (self.data_dir / "runs").mkdir(exist_ok=True)
                os.mkdir(self.data_dir / "runs" / r.run_id)
            except FileExistsError:
                raise ConflictError(f"run id {r.run_id!r} is already taken on the server",
                                    hint="start a new run (a fresh id)") from None
            r.owner, r.owned_since = who.name, time.time()
            r.known = True
        if r.seg is not None:
            self._close(r, keep_hold=True)
        r.attaches[str(attach)] = origin
        r.project = rec.get("project") or r.project
        self._save_state(r, r.project)
        r.seg_attach = attach
        self.audit.record(who.name, "start_run" if attach == 0 else "resume_run", r.run_id,
                          reason or "remote logging",
                          {"attach": attach, "project": rec.get("project"), "origin": origin})

    def _open(self, r: _Run, attach: int) -> None:
        path = segment_path(self.wal_dir, r.run_id, attach)
        r.seg = _Segment(path)
        r.seg_attach = attach
        (path.parent / HOLD_FILE).touch()
        if self.start_daemon:
            ensure_daemon(self.data_dir)

    def _close(self, r: _Run, *, keep_hold: bool = False) -> None:
        if not keep_hold:
            (self.wal_dir / r.run_id / HOLD_FILE).unlink(missing_ok=True)
        if r.seg is not None:
            r.seg.close()
            r.seg = None
            if self.start_daemon:
                ensure_daemon(self.data_dir)
        self.audit.flush_metrics(r.run_id)

    def append_records(self, who: Principal, run_id: str, records: list[dict[str, Any]],
                       reason: str = "", *, track_pending: bool = False) -> AppendResult:
        """Append records the server itself made (MLflow), numbering them after the durable seq."""
        r = self._get(run_id)
        with r.lock:  # reentrant: append() takes it again, so no seq is handed out twice
            base = max(r.durable, 0)
            framed = []
            for n, rec in enumerate(records, start=1):
                rec = {**rec, "seq": base + n}
                rec.setdefault("time", time.time())
                framed.append((rec, encode(rec)))
            return self.append(who, run_id, framed, reason, track_pending=track_pending)

    # -- read-your-writes -----------------------------------------------------------------
    def pending_metrics(self, run_id: str, ingested_seq: int) -> list[dict[str, Any]]:
        """Metric records written through this server and not yet ingested (for MLflow reads)."""
        with self._mutex:
            r = self._runs.get(run_id)
        if r is None or r.pending is None:
            return []
        with r.lock:
            r.pending = [p for p in r.pending if p["seq"] > ingested_seq]
            return list(r.pending)

    # -- housekeeping ---------------------------------------------------------------------
    def sweep(self) -> None:
        """Close idle finished segments, give up on silent clients, flush audit counters."""
        now = time.monotonic()
        with self._mutex:
            runs = list(self._runs.values())
        for r in runs:
            if not r.lock.acquire(blocking=False):
                continue
            try:
                idle = now - r.last_contact
                hold = (self.wal_dir / r.run_id / HOLD_FILE).exists()
                if r.finished and r.seg is not None and idle > self.idle_close:
                    self._close(r)
                elif not r.finished and (r.seg is not None or hold) and idle > self.stale_after:
                    self._reap(r, idle)
                elif r.seg is None and not hold and idle > max(self.stale_after, 600.0):
                    with self._mutex:
                        self._runs.pop(r.run_id, None)
            finally:
                r.lock.release()
        self.audit.flush_metrics(older_than=60.0)
        # Any segment, open or closed, needs a daemon; one that idled out while this server
        # was restarting (or exits just as a segment appears) is replaced here.
        if self.start_daemon and next(self.wal_dir.glob("*/*.wal"), None) is not None:
            ensure_daemon(self.data_dir)

    def _reap(self, r: _Run, idle: float) -> None:
        log.warning("run %s: no contact from its client for %.0f s; releasing it (recovery "
                    "marks it crashed unless its client returns and finishes it)", r.run_id, idle)
        if r.seg is None and r.seg_attach >= 0:
            try:
                self._open(r, r.seg_attach)  # an empty segment: recovery marks the run crashed
            except HTTPException:
                return
        self._close(r)
        self.audit.record("assay-server", "release_run", r.run_id,
                          f"no contact from the client for {idle:.0f} s", {"durable_seq": r.durable})
        r.finished = True

    def open_runs(self) -> list[str]:
        with self._mutex:
            return [r.run_id for r in self._runs.values() if r.seg is not None]
