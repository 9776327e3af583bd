"""The ingest daemon: the single ingester of a local data directory.

Training processes only write their write-ahead logs (no LanceDB, Arrow or pandas in the
training process: that keeps ``import assay`` light and the GIL free for training). One
daemon per data directory, started on demand by the first ``assay.init`` and exiting after an
idle period, moves every segment into LanceDB:

- a live segment (its writer holds the segment lock) is ingested every ``INGEST_INTERVAL``;
- a closed segment (the run finished, or its process died) is ingested to the end, its run
  marked crashed if it never finished, and the file deleted. ``Run.finish`` waits for that
  deletion, so once ``finish()`` returns every point is queryable.

Exactly one daemon runs per directory: it holds an ``flock`` on ``ingestd.pid``. Its commits
also take the directory's ingest lock, so ``assay sync`` and ``assay compact`` can run beside it.

Run it by hand with ``python -m assay.store.ingestd DIR`` (``--once`` drains and exits).
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["IngestDaemon", "daemon_alive", "ensure_daemon", "wait_segment_ingested"]

log = logging.getLogger("assay.ingestd")

POLL = 0.05  # seconds between scans of the WAL folder
IDLE_EXIT = float(os.environ.get("ASSAY_INGESTD_IDLE", "30"))
INGEST_INTERVAL = float(os.environ.get("ASSAY_INGEST_INTERVAL", "1.0"))
COMPACT_EVERY = 200  # commits between compactions
RETRY_MAX_S = 10.0  # longest wait between failed ingest rounds


def _pid_path(data_dir: Path) -> Path:
    return data_dir / "ingestd.pid"


def daemon_alive(data_dir: Path) -> bool:
    """Whether a daemon holds the directory's daemon lock."""
    try:
        fd = os.open(_pid_path(data_dir), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def ensure_daemon(data_dir: Path) -> None:
    """Start the directory's daemon unless one is running (a race start exits by itself)."""
    if daemon_alive(data_dir):
        return
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    with open(logs / "ingestd.log", "ab") as out:
        subprocess.Popen(
            [sys.executable, "-c",
             "import sys; from assay.store.ingestd import main; sys.exit(main())",
             str(data_dir)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            start_new_session=True, close_fds=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def wait_segment_ingested(data_dir: Path, segment: Path, timeout: float) -> bool:
    """Wait until the daemon has ingested and removed a closed segment. False on timeout."""
    deadline = time.monotonic() + timeout
    restarted = time.monotonic()
    while segment.exists():
        now = time.monotonic()
        if now >= deadline:
            return False
        if now - restarted > 1.0 and not daemon_alive(data_dir):
            ensure_daemon(data_dir)  # it idled out or was killed: start another
            restarted = now
        time.sleep(0.01)
    return True


def local_ingester(data_dir: Path) -> tuple[Any, Any, Any]:
    """``(store, lock, ingester)`` for a local data directory; the ingester seals the
    records of runs that finish and audits rewinds (see :mod:`assay.store.provenance`)."""
    from .ingest import Ingester, IngestLock
    from .lance import LanceStore
    from .provenance import Finalizer

    store = LanceStore(data_dir)
    lock = IngestLock(data_dir)
    fin = Finalizer(store, data_dir, lock)
    return store, lock, Ingester(store, fin, on_rewind=fin.rewound)


class IngestDaemon:
    """Scans ``<dir>/wal`` and ingests every segment (see the module docstring)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.store, self.lock, self.ingester = local_ingester(data_dir)
        self._last: dict[Path, float] = {}
        self._commits = 0

    def step(self, *, force: bool = False) -> int:
        """One scan: returns the number of segments present."""
        from .ingest import sync_orphans
        from .wal import list_segments, try_lock_segment

        segs = list_segments(self.data_dir / "wal")
        live: list[Path] = []
        closed = False
        now = time.monotonic()
        for p in segs:
            fd = try_lock_segment(p)
            if fd is None:
                if force or now - self._last.get(p, 0.0) >= INGEST_INTERVAL:
                    live.append(p)
            else:
                os.close(fd)
                closed = True
        if live:
            with self.lock:
                self.ingester.ingest(live)
                self._commits += 1
            for p in live:
                self._last[p] = now
        if closed:
            st = sync_orphans(self.data_dir, self.store, self.lock, self.ingester)
            for p in st.segments_done:
                self._last.pop(p, None)
            self._commits += len(st.segments_done)
        if self._commits >= COMPACT_EVERY:
            self._commits = 0
            with self.lock:
                self.store.compact()
        return len(segs)

    def run_forever(self) -> None:
        idle_since = time.monotonic()
        failures, last = 0, ""
        while self.data_dir.exists():
            try:
                n = self.step()
                failures, last = 0, ""
            except Exception as exc:
                # Backs off (1, 2, 4, 8, then every 10 s) and logs a traceback once per
                # error: a full disk must not fill the log with the same one every second.
                failures += 1
                wait = min(RETRY_MAX_S, 2.0 ** (failures - 1))
                text = f"{type(exc).__name__}: {exc}"
                if text != last:
                    log.exception("ingest round failed; the WAL keeps everything, retrying "
                                  "in %.0f s", wait)
                else:
                    log.warning("ingest round failed again (%d in a row): %s; retrying in "
                                "%.0f s", failures, text, wait)
                last = text
                n = 1
                time.sleep(wait)
            now = time.monotonic()
            if n:
                idle_since = now
            elif now - idle_since > IDLE_EXIT:
                return
            time.sleep(POLL)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m assay.store.ingestd")
    if argv is None:
        argv = sys.argv[1:]
    ap.add_argument("dir", type=Path)
    ap.add_argument("--once", action="store_true", help="ingest everything now and exit")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s ingestd %(levelname)s %(message)s")
    data_dir = a.dir.resolve()
    fd = os.open(_pid_path(data_dir), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another daemon owns this directory
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    daemon = IngestDaemon(data_dir)
    if a.once:
        daemon.step(force=True)
        return 0
    log.info("ingesting %s (pid %d)", data_dir, os.getpid())
    daemon.run_forever()
    log.info("idle for %.0f s; exiting", IDLE_EXIT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
