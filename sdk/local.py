"""The in-process ingester of a local data directory (one per process and directory).

A background thread moves this process's WAL segments into LanceDB every
``INGEST_INTERVAL`` seconds, taking the directory's ingest lock without waiting (if another
process holds it, this round is skipped; the WAL keeps everything). Its first round also
adopts orphaned segments left by crashed processes. ``finish_segment`` does a final,
blocking ingest of one run's segment when the run finishes.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from ..store.ingest import IngestLock, Ingester, sync_orphans
from ..store.lance import LanceStore
from .settings import INGEST_INTERVAL

__all__ = ["LocalIngestService"]

log = logging.getLogger(__name__)

_COMPACT_EVERY = 200  # ingest commits between background compactions


class LocalIngestService:
    """Background ingestion for the runs of this process in one data directory."""

    _instances: dict[Path, LocalIngestService] = {}
    _instances_lock = threading.Lock()

    @classmethod
    def for_dir(cls, data_dir: Path) -> LocalIngestService:
        with cls._instances_lock:
            svc = cls._instances.get(data_dir)
            if svc is None:
                svc = cls._instances[data_dir] = cls(data_dir)
            return svc

    def __init__(self, data_dir: Path, interval: float = INGEST_INTERVAL) -> None:
        self.data_dir = data_dir
        self.store = LanceStore(data_dir)
        self.lock = IngestLock(data_dir)
        self.ingester = Ingester(self.store)
        self.interval = interval
        self._own: set[Path] = set()
        self._mu = threading.Lock()  # serializes use of the ingester and the lock object
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._commits = 0
        self._adopted = False

    # -- segments ----------------------------------------------------------------------------
    def register(self, segment: Path) -> None:
        with self._mu:
            self._own.add(segment)
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._loop, name="assay-ingest", daemon=True
            )
            self._thread.start()

    def finish_segment(self, segment: Path, timeout: float = 60.0) -> bool:
        """Ingest the rest of a finished run's segment and delete it. False if the ingest
        lock could not be had in time (the segment then stays for the next sync)."""
        with self._mu:
            if not self.lock.acquire(timeout):
                self._own.discard(segment)
                return False
            try:
                self.ingester.ingest([segment])
                self._commits += 1
            finally:
                self.lock.release()
            self._own.discard(segment)
            self.ingester.forget(segment)
        segment.unlink(missing_ok=True)
        try:
            segment.parent.rmdir()
        except OSError:
            pass
        return True

    def sync_run(self, run_id: str, timeout: float | None = 60.0) -> None:
        """Adopt one run's orphaned segments now (before resuming it)."""
        with self._mu:
            sync_orphans(self.data_dir, self.store, self.lock, self.ingester,
                         run_id=run_id, timeout=timeout)

    # -- background loop ---------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.tick(wait=0)
            except Exception:
                log.exception("assay ingest round failed; the WAL keeps the data, will retry")
            with self._mu:
                if not self._own:
                    self._thread = None
                    return

    def tick(self, wait: float | None = 0) -> bool:
        """One ingest round. Returns False if the ingest lock was busy."""
        with self._mu:
            if not self.lock.acquire(wait):
                return False
            try:
                if not self._adopted:
                    self._adopted = True
                    sync_orphans(self.data_dir, self.store, self.lock, self.ingester)
                if self._own:
                    self.ingester.ingest(sorted(self._own))
                    self._commits += 1
                if self._commits >= _COMPACT_EVERY:
                    self._commits = 0
                    self.store.compact()
            finally:
                self.lock.release()
        return True


def _reset_after_fork() -> None:
    # Threads do not survive fork; a child must build its own services.
    LocalIngestService._instances = {}
    LocalIngestService._instances_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)
