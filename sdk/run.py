"""``assay.init`` and :class:`Run`: what a training script talks to.

``Run.log`` is the hot path: it checks its input and appends one tuple to a deque; the writer
thread (:mod:`assay.sdk.writer`) makes it durable and the ingest service
(:mod:`assay.sdk.local`) moves it into the experiment graph.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ..errors import ConflictError, NotFoundError, UserInputError
from ..store.ingestd import ensure_daemon, wait_segment_ingested
from ..store.records import RESERVED_PREFIX, RunStatus, check_tags, validate_name
from ..store.wal import SEQ_BITS as _SEQ_BITS
from ..store.wal import WalWriter, segment_path
from . import lifecycle
from .capture import capture_env, capture_git
from .jsonable import to_jsonable
from .mappings import Config, Summary
from .prior import (
    _claim_run_id,
    _config_dict,
    _refuse_if_live,
    _remote_prior,
    _server_rewinds,
    _sync_and_get,
    trial_config,
)
from .remote import RemoteClient, RemoteSender, outbox_segment, wait_ingested
from .rewind import AUTO, REWIND_FIELD, check_resume_from_step, rewound_summary
from .settings import FINISH_TIMEOUT, FLUSH_INTERVAL, INGEST_MODE, data_dir
from .system import SystemSampler
from .writer import Writer

__all__ = ["Config", "Run", "Summary", "init"]

log = logging.getLogger(__name__)

_ADJ = ("amber", "brisk", "calm", "deft", "eager", "fair", "gentle", "hardy", "keen",
        "lucid", "mellow", "nimble", "quiet", "rapid", "sunny", "vivid")
_NOUN = ("otter", "falcon", "cedar", "comet", "delta", "ember", "fjord", "grove", "heron",
         "iris", "lynx", "meadow", "nova", "orbit", "pine", "quartz")
#: Seconds finish() waits for the server to acknowledge a remote run's last records.
REMOTE_FINISH_TIMEOUT = float(os.environ.get("ASSAY_REMOTE_FINISH_TIMEOUT", "60"))
CAPTURE_WAIT_S = 10.0  # the most finish() waits for a capture still running (git on a huge repo)


_BIG_INT = 1 << 53
"""Integers at or past this magnitude are stored as floats (the store's value column is
float64; Arrow refuses integers past int64, which would stall ingest for every run)."""
MAX_STEP = (1 << 63) - 1


def _int_to_float(key: str, v: int) -> float:
    try:
        return float(v)
    except OverflowError:
        raise UserInputError(f"metric {key!r} has value {v}, too large for a float64",
                             hint="log a float (say, its logarithm) instead") from None


def _float_or_raise(key: str, v: Any) -> float:
    """Convert a Python, NumPy or torch scalar to float; anything else is an input error."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return _int_to_float(key, v) if isinstance(v, int) else float(v)
    item = getattr(v, "item", None)
    if callable(item):
        size = getattr(v, "size", None)
        numel = getattr(v, "numel", None)
        n = numel() if callable(numel) else size
        if n in (None, 1):
            try:
                x = item()
            except (ValueError, RuntimeError):
                x = None
            if isinstance(x, (int, float)):
                return _int_to_float(key, x) if isinstance(x, int) else float(x)
    raise UserInputError(
        f"metric {key!r} has value {v!r} of type {type(v).__name__}, which is not a number",
        hint="log int/float or NumPy/torch scalars (use .item() on one-element tensors); "
        "put text in config or summary instead",
    )


class Run:
    """A tracked run. Create it with :func:`assay.init`; use it as a context manager."""

    def __init__(self, *, run_id: str, project: str, name: str, dir: Path, attach: int,
                 config: dict[str, Any], summary_auto: dict[str, dict[str, float]],
                 summary_set: dict[str, Any], next_step: int, init_record: dict[str, Any],
                 system_metrics_interval: float | None, capture: bool,
                 server: str | None = None, token: str | None = None) -> None:
        self.id = run_id
        self.project = project
        self.name = name
        self.dir = dir
        self.attach = attach
        self._finished = False
        self._forked = False  # True in a forked child: the run is the parent's
        self._last: dict[str, float] = {}  # each metric's last value logged by this process
        self._step = next_step
        self._warned_step_back = False
        self._known_keys: set[str] = set()
        # System metrics count their own steps, continuing an earlier attach's (a resumed
        # run must not overwrite the system curve it already has).
        self._sys_step = 1 + max((int(v.get("step", -1)) for k, v in summary_auto.items()
                                  if k.startswith(RESERVED_PREFIX)), default=-1)
        self._env: dict[str, Any] = {}
        self._stop_reason: str | None = None
        self._stop_checked = 0.0
        self.server = server
        self._sender: RemoteSender | None = None
        self._remote_artifacts: Any = None  # RemoteArtifacts, made by the first artifact call
        self._rewind_pending = False  # resume_from_step="auto": until the first log()
        self._rewind_lock = threading.Lock()
        # A remote run's WAL stays local, outside wal/: the server, not the local daemon,
        # ingests it.
        self.segment = (outbox_segment(dir, run_id, attach) if server
                        else segment_path(dir / "wal", run_id, attach))
        try:
            wal = WalWriter(self.segment)
        except BlockingIOError:
            raise ConflictError(
                f"run {run_id} is being written by another process",
                hint="finish it there first, or start a new run",
            ) from None
        self._writer = Writer(wal, attach << _SEQ_BITS, FLUSH_INTERVAL, summary_auto,
                              on_full=self._on_writer_full)
        self._queue_append = self._writer.queue.append
        self.config = Config(self, config)
        self.summary = Summary(self, summary_set)
        self._enqueue(init_record)
        self._writer.start()
        if server:
            self._sender = RemoteSender(server, run_id, self.segment, token=token)
            self._sender.start()
        elif INGEST_MODE == "daemon":
            ensure_daemon(dir)
        self._sampler: SystemSampler | None = None
        if system_metrics_interval:
            self._sampler = SystemSampler(self._log_system, system_metrics_interval)
            self._sampler.start()
        self._capturing: threading.Thread | None = None
        if capture:
            # The working directory is read now: the script may chdir before the thread runs.
            self._capturing = threading.Thread(target=self._capture, args=(os.getcwd(),),
                                               name="assay-capture", daemon=True)
            self._capturing.start()
        self._pid = os.getpid()  # a forked child must never finish (or unlock) this run
        lifecycle._active_runs.add(self)
        lifecycle.watch_stderr()
        lifecycle._exit_code.clear()  # a sys.exit caught before this run says nothing about it

    # -- logging -----------------------------------------------------------------------------
    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Record metric values at ``step`` (default: one past the last step logged).

        The history keeps one value per metric and step: the same step may be logged in
        several calls, and an earlier step may be filled in later (a warning, once per run,
        says that a value it held before is replaced).

        Returns in microseconds: the points are durable within ``ASSAY_FLUSH_INTERVAL``
        seconds (0.2 s by default), or at once after :meth:`flush`. Only when the writer is
        over a memory limit (``ASSAY_MAX_BUFFERED_STEPS`` steps waiting, or
        ``ASSAY_MAX_PENDING_MB`` held for a disk that refuses writes) does it wait for room,
        with a warning that says why.
        """
        if self._finished:
            if self._forked:
                raise self._forked_error("log()")
            raise ConflictError(f"run {self.id} is finished; log() is closed",
                                hint="start a new run, or assay.init(resume=run_id)")
        if type(metrics) is not dict:
            metrics = self._coerce_mapping(metrics)
        if not self._known_keys.issuperset(metrics):
            self._check_keys(metrics)
        for v in metrics.values():
            tv = type(v)
            if tv is not float and (tv is not int or not -_BIG_INT < v < _BIG_INT):
                metrics = self._coerce_values(metrics)
                break
        else:
            metrics = metrics.copy()
        if step is None:
            step = self._step
        else:
            if type(step) is not int or not 0 <= step < MAX_STEP:
                step = self._check_step(step)
            if step < self._step - 1 and not self._warned_step_back:
                self._warn_step_back(step)
        self._step = step + 1
        self._last.update(metrics)  # run.summary[key] reads it without waiting on the writer
        self._queue_append((step, time.time(), metrics))

    def _coerce_mapping(self, metrics: Any) -> dict[str, Any]:
        if not isinstance(metrics, Mapping):
            raise UserInputError(
                f"log() takes a mapping of metric names to numbers, got {type(metrics).__name__}",
                hint='e.g. run.log({"train/loss": 0.31})',
            )
        flat: dict[str, Any] = {}

        def walk(prefix: str, m: Mapping[Any, Any]) -> None:
            for k, v in m.items():
                if not isinstance(k, str):
                    raise UserInputError(f"metric name {k!r} is not a string",
                                         hint="use string keys such as 'val/acc'")
                if isinstance(v, Mapping):
                    walk(f"{prefix}{k}/", v)
                elif prefix + k in flat:
                    raise UserInputError(
                        f"metric {prefix + k!r} is given twice (as a key with '/' and nested)",
                        hint="give each metric once: either {'a/b': x} or {'a': {'b': x}}")
                else:
                    flat[prefix + k] = v

        walk("", metrics)
        return flat

    def _check_keys(self, metrics: dict[str, Any]) -> None:
        for k in metrics:
            if type(k) is not str or not k or len(k) > 256:
                raise UserInputError(f"invalid metric name {k!r}",
                                     hint="metric names are non-empty strings up to 256 chars")
            if k.startswith(RESERVED_PREFIX):
                raise UserInputError(
                    f"metric name {k!r} uses the reserved prefix {RESERVED_PREFIX!r}",
                    hint="system metrics own 'sys/'; rename it, e.g. 'system_" + k[4:] + "'",
                )
        self._known_keys.update(metrics)

    def _coerce_values(self, metrics: dict[str, Any]) -> dict[str, float]:
        if any(isinstance(v, Mapping) for v in metrics.values()):
            metrics = self._coerce_mapping(metrics)
            self._check_keys(metrics)
        return {k: _float_or_raise(k, v) for k, v in metrics.items()}

    def _warn_step_back(self, step: int) -> None:
        """Once per run: a lower step than the last one is stored (it may fill a gap, e.g. a
        late evaluation), but a metric logged at that step before is replaced, which a
        mistaken step (an epoch for a batch count) does silently otherwise."""
        self._warned_step_back = True
        log.warning("assay: run %s logged step %d after step %d: the history keeps one value "
                    "per metric and step, so a metric logged at step %d before is replaced "
                    "(said once per run); leave step= out to log at %d", self.id, step,
                    self._step - 1, step, self._step)

    @staticmethod
    def _check_step(step: Any) -> int:
        if isinstance(step, bool) or not hasattr(step, "__index__"):
            raise UserInputError(f"step must be an integer, got {step!r}",
                                 hint="pass step=int(step), or leave it out to auto-increment")
        step = int(step)
        if step < 0:
            raise UserInputError(f"step must be >= 0, got {step}", hint="steps count from 0")
        if step >= MAX_STEP:
            raise UserInputError(f"step {step} is too large (steps are int64, below 2**63 - 1)",
                                 hint="count steps from 0 in units of batches or samples")
        return step

    def _rewind_at_first_log(self, item: Any) -> None:
        """``resume_from_step="auto"``: the first point logged declares the rewind to its
        step (a ``rewind`` record just before it); later ones go straight to the queue.

        Under a lock: threads logging at once at the start get one rewind, queued ahead of
        every point of this attach (a point queued before it would be superseded by it)."""
        w = self._writer
        with self._rewind_lock:
            if self._rewind_pending:
                step = item[0]
                with w.summary_lock:  # the writer merges sys/ samples into it meanwhile
                    current = {k: dict(v) for k, v in w.summary.items()}
                try:
                    summary = rewound_summary(self.dir, self.server, self.id, step, current)
                except Exception:  # run.summary only: the store's summary is rebuilt anyway
                    log.warning("assay: could not recompute run %s's summary below step %d; "
                                "run.summary may show the superseded points until it is "
                                "ingested", self.id, step, exc_info=True)
                    summary = current
                with w.summary_lock:  # nothing of this attach is durable yet
                    w.summary = summary
                w.queue.append({"k": "rewind", "time": item[1], REWIND_FIELD: step,
                                "attach": self.attach})
                self._rewind_pending = False
                self._queue_append = self._append_when_room if w.full else w.queue.append
            w.queue.append(item)

    def _on_writer_full(self, full: bool) -> None:
        """The writer thread's signal: over a memory limit, log() waits after appending
        (an attribute swap, so below the limits log() pays nothing for the check)."""
        with self._rewind_lock:
            if self._rewind_pending:
                return  # the first log swaps in the right append once the rewind is queued
            self._queue_append = self._append_when_room if full else self._writer.queue.append

    def _append_when_room(self, item: Any) -> None:
        self._writer.queue.append(item)
        self._writer.wait_for_room()

    def _log_system(self, metrics: dict[str, float]) -> None:
        if not self._finished and metrics:  # never waits: finish() joins this thread
            self._writer.queue.append((self._sys_step, time.time(), metrics))
            self._sys_step += 1

    def _enqueue(self, record: dict[str, Any]) -> None:
        # Config, summary and status records never wait for room: finish() must not hang.
        record.setdefault("time", time.time())
        self._writer.queue.append(record)

    def _record_env_update(self, env_update: dict[str, Any]) -> None:
        self._env.update(env_update)
        self._enqueue({"k": "env", "env": dict(self._env)})

    def _capture(self, cwd: str) -> None:
        stored: list[Any] = []  # the blob store the diff went into, once it did

        def put(data: bytes) -> str | None:
            # The diff is context: a store that fails (an object store away, a conflicting
            # ASSAY_BLOB_STORE) costs the diff, never the rest of the record.
            try:
                from ..store.blob_config import blob_store_for
                from ..store.blobs import LocalBlobStore

                # A remote run's diff waits in its local folder for the upload; a local run's
                # goes where the data directory keeps its blobs (maybe an object store).
                blobs = (LocalBlobStore(self.dir / "blobs") if self._sender is not None
                         else blob_store_for(self.dir))
                digest = blobs.put_bytes(data).digest
            except Exception as exc:  # noqa: BLE001 - best effort, said in the record
                log.warning("assay could not store the git diff of run %s: %s", self.id, exc)
                return None
            stored.append(blobs)
            return digest

        try:
            git = capture_git(cwd, put)
            env = capture_env()
        except Exception:  # capture is best effort; training must go on
            log.warning("assay could not capture the environment", exc_info=True)
            return
        if git.get("diff_blob"):
            # Where the record is verified, its diff must be stored too: a remote run's
            # diff goes to the server before the record names it as stored there.
            git["diff_stored"] = (self._upload_diff(stored[0], git["diff_blob"])
                                  if self._sender is not None else True)
        elif git.get("diff_bytes"):
            git["diff_stored"] = False
        self._env = env
        if not self._finished:
            self._enqueue({"k": "env", "env": env, "git": git})

    def _upload_diff(self, blobs: Any, digest: str) -> bool:
        """Send the captured git diff to the run's server (best effort: a server without blob
        routes, one away or busy, or one that refuses, leaves it in this machine's data
        directory)."""
        import httpx

        from ..store.blobs import BlobRef
        from .remote import _auth_headers
        from .remote_artifacts import HttpBlobStore

        sender = self._sender
        assert sender is not None
        try:
            # Quick to give up, a server away included (no retry budget): finish() waits only
            # CAPTURE_WAIT_S for the capture, and the environment record waits for this.
            with httpx.Client(base_url=sender.server, headers=_auth_headers(sender.token),
                              timeout=4.0) as http:
                store = HttpBlobStore(http, sender.server, attempts=2, max_backoff=1.0,
                                      upload_timeout=4.0, retry_budget=0.0)
                store.upload(blobs.path_of(digest), BlobRef(digest, blobs.size(digest)))
        except Exception as exc:  # noqa: BLE001 - the diff is context; training must go on
            log.warning("assay could not send the git diff of run %s to %s (%s); it stays in "
                        "%s", self.id, sender.server, exc, self.dir / "blobs")
            return False
        return True

    def flush(self, timeout: float | None = 30.0) -> None:
        """Block until every point logged so far is fsynced to the write-ahead log."""
        if self._forked:
            raise self._forked_error("flush()")
        if not self._writer.is_alive():
            return
        # A failed write raises WalWriteError here at once (the records stay in memory and
        # are retried in order until the run finishes).
        if not self._writer.flush(timeout):
            raise ConflictError(f"flushing run {self.id} timed out after {timeout} s",
                                hint="the disk may be stalled; the data is still buffered")
        if self._sender is not None:
            self._sender.wake()

    # -- artifacts ---------------------------------------------------------------------------
    def log_artifact(self, path: str | os.PathLike[str], name: str, type: str = "dataset", *,
                     aliases: list[str] | tuple[str, ...] = (),
                     metadata: dict[str, Any] | None = None, description: str = "") -> Any:
        """Store a file or folder as a new immutable version of artifact ``name``, produced by
        this run (content equal to the latest version's makes no new version).

        Returns an :class:`~assay.sdk.graph.Artifact` with ``name``, ``version``, ``digest``.
        """
        from .graph import Artifact, open_graph

        self._check_open("log_artifact() is")
        # A string is passed through for the registry to refuse (list("prod") is 4 aliases).
        names = aliases if isinstance(aliases, str) else list(aliases)
        meta = to_jsonable(metadata or {}, what="metadata")
        if self._sender is not None:
            from ..store.artifacts import check_version_args

            check_version_args(name, type, names)  # before any file is hashed or sent
            g = self._remote_graph()
            v = g.artifacts.log(path, name, type, project=self.project, run_id=self.id,
                                aliases=names, metadata=meta, description=description)
            return Artifact(v, g)
        graph = open_graph(self.dir)
        v = graph.artifacts.log(path, name, type, project=self.project, run_id=self.id,
                                aliases=names, metadata=meta, description=description)
        return Artifact(v, graph)

    def use_artifact(self, spec: str) -> Any:
        """Declare that this run consumes ``spec`` (``name``, ``name:latest``, ``name:v0``,
        ``name:ALIAS``); returns the artifact, whose ``download()`` gives its files."""
        from .graph import Artifact, open_graph

        self._check_open("use_artifact() is")
        if self._sender is not None:
            from ..store.artifacts import parse_spec

            parse_spec(spec)
            rg = self._remote_graph()
            return Artifact(rg.artifacts.use(spec, self.id), rg)
        g = open_graph(self.dir)
        return Artifact(g.artifacts.use(spec, self.id), g)

    def _remote_graph(self) -> Any:
        """The server's artifacts, for a run that logs to a server. The first call waits
        until the server holds the run's records: a version names its producing run, and
        only a run the server knows (and owns) may add one."""
        from .remote_artifacts import RemoteArtifacts, RemoteGraph, server_cache

        sender = self._sender
        assert sender is not None
        if self._remote_artifacts is None:
            self.flush()
            acked = sender.wait(REMOTE_FINISH_TIMEOUT)
            if sender.error is not None:  # the server refused the run (a token, a conflict)
                raise sender.error
            if not acked:
                raise ConflictError(
                    f"the server {sender.server} has not acknowledged run {self.id}'s records "
                    f"after {REMOTE_FINISH_TIMEOUT:g} s, so it cannot take its artifacts yet",
                    hint="check that the server is up and reachable, then log the artifact "
                         "again")
            client = RemoteClient(sender.server, sender.token)
            try:
                client.server_info().require("remote_artifacts",
                                             "the artifacts of runs that log to it")
            finally:
                client.close()
            self._remote_artifacts = RemoteArtifacts(sender.server, sender.token)
        return RemoteGraph(server_cache(self.dir, sender.server), self._remote_artifacts)

    def _forked_error(self, what: str) -> ConflictError:
        return ConflictError(
            f"run {self.id} belongs to process {self._pid}; in this forked child "
            f"(process {os.getpid()}) {what} would store nothing: the run's writer does not "
            "exist here", hint="log from the parent (return the values from the workers), or "
                               "start a run in each worker: assay.init(project=..., group=...)")

    def _check_open(self, what: str) -> None:
        if self._forked:
            raise self._forked_error(what)
        if self._finished:
            raise ConflictError(f"run {self.id} is finished; {what} closed (nothing more "
                                "would be stored)",
                                hint="set it before finish(), or resume the run: "
                                     f"assay.init(project=..., resume={self.id!r})")

    def should_stop(self) -> bool:
        """Whether an agent or a person asked this run to stop (cooperative stopping).

        True after :meth:`request_stop` (a backend's watcher thread calls it) or once the
        stop file ``<data dir>/control/<run_id>.stop`` exists (checked at most twice a
        second, so calling this every step costs nothing).
        """
        if self._stop_reason is not None:
            return True
        now = time.monotonic()
        if now - self._stop_checked >= 0.5:
            self._stop_checked = now
            f = self.dir / "control" / f"{self.id}.stop"
            if f.exists():
                self._stop_reason = f.read_text(errors="replace").strip() or "stop requested"
                return True
        return False

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask the training loop to stop at its next ``should_stop()`` check (thread-safe)."""
        self._stop_reason = reason

    @property
    def stop_reason(self) -> str | None:
        return self._stop_reason

    # -- finishing ---------------------------------------------------------------------------
    def finish(self, status: str | RunStatus | None = None, error: str = "") -> None:
        """Flush, mark the run finished, ingest its last records. Idempotent.

        ``status`` defaults to ``stopped`` when a stop was requested (``should_stop()``),
        else ``completed``.
        """
        if os.getpid() != self._pid:
            # A forked child (multiprocessing) shares the parent's WAL descriptor and its
            # lock: closing it here would unlock the parent's live segment for the ingester.
            log.warning("assay: finish() of run %s ignored in forked process %d: the run "
                        "belongs to process %d", self.id, os.getpid(), self._pid)
            return
        if self._finished:
            return
        if status is None:
            status = RunStatus.STOPPED if self._stop_reason is not None else RunStatus.COMPLETED
            error = error or (self._stop_reason or "")
        try:
            st = RunStatus(status)
        except ValueError:
            raise UserInputError(
                f"unknown run status {status!r}",
                hint="one of: " + ", ".join(s.value for s in RunStatus if s.finished),
            ) from None
        if not st.finished:
            raise UserInputError("finish() needs a final status, not 'running'",
                                 hint="use 'completed', 'failed', 'stopped' or 'crashed'")
        if self._sampler is not None:
            self._sampler.stop()
        if self._capturing is not None:
            # A run shorter than its capture still records its code and environment.
            self._capturing.join(CAPTURE_WAIT_S)
        self._enqueue({"k": "status", "status": st.value, "error": error})
        self._finished = True
        self._writer.stop()  # on a disk that refuses writes: retries for GIVE_UP_AFTER_S
        self._writer._wal.close()  # releases the segment: the daemon ingests it to the end
        lifecycle._active_runs.discard(self)
        try:
            self._after_close()
        finally:
            if self._writer.lost is not None:  # every record before them is stored
                raise self._writer.lost

    def _after_close(self) -> None:
        if self._sender is not None:
            # Never marks the run crashed: what the server did not acknowledge stays in the
            # outbox for `assay sync --server`.
            deadline = time.monotonic() + REMOTE_FINISH_TIMEOUT
            if self._sender.close(REMOTE_FINISH_TIMEOUT):
                got = wait_ingested(self._sender, self.id, deadline)
                if got is not None:
                    self._stored_summary(got.get("summary_stats"))
        elif INGEST_MODE != "daemon" and lifecycle._exiting:
            # LanceDB cannot be loaded once the interpreter shuts down (it registers exit
            # callbacks): the ingest daemon takes the closed segment instead.
            ensure_daemon(self.dir)
        elif INGEST_MODE != "daemon":
            rec = _sync_and_get(self.dir, self.id)
            self._stored_summary(rec.summary if rec is not None else None)
        elif not wait_segment_ingested(self.dir, self.segment, FINISH_TIMEOUT):
            log.warning("assay: run %s is finished and durable, but not yet queryable after "
                        "%g s: its WAL %s will be ingested by the ingest daemon or `assay "
                        "sync` (why it is late, e.g. a full disk: %s)", self.id,
                        FINISH_TIMEOUT, self.segment, self.dir / "logs" / "ingestd.log")
        elif self._writer.relogged and not lifecycle._exiting:
            from ..store.lance import LanceStore

            rec = LanceStore(self.dir).get_run(self.id)
            self._stored_summary(rec.summary if rec is not None else None)

    def _stored_summary(self, summary: Any) -> None:
        """A step logged again: the store counted only its last write in min and max (as
        the history reads), while this process counted every write; take the store's."""
        if self._writer.relogged and isinstance(summary, dict):
            # A server's JSON writes NaN and infinities as strings.
            special: dict[str, Any] = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
            with self._writer.summary_lock:
                self._writer.summary = {
                    k: {f: special.get(x, x) if isinstance(x, str) else x for f, x in v.items()}
                    for k, v in summary.items()}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.finish()
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish(RunStatus.STOPPED, "KeyboardInterrupt")
        else:
            self.finish(RunStatus.FAILED, "".join(traceback.format_exception(exc_type, exc, tb)))

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, project={self.project!r}, name={self.name!r})"


def init(project: str | None = None, *, name: str | None = None, config: Any = None,
         tags: str | list[str] | tuple[str, ...] | None = None, group: str | None = None,
         notes: str | None = None, dir: str | os.PathLike[str] | None = None,
         resume: str | None = None, resume_from_step: int | str | None = None,
         id: str | None = None,
         system_metrics_interval: float | None = 2.0, capture: bool = True,
         server: str | None = None, token: str | None = None) -> Run:
    """Start (or, with ``resume=run_id``, continue) a tracked run.

    Args:
        project: project name (letters, digits, ``_ . -``); default ``$ASSAY_PROJECT``
            (set for command trials launched by an agent).
        name: display name; a readable one is generated if omitted.
        config: JSON-serializable hyperparameters (NumPy scalars are converted): a
            mapping, an ``argparse.Namespace`` or a dataclass instance.
        tags, group, notes: free labels for filtering (``tags``: a list, or one tag).
        dir: data directory; default ``$ASSAY_DIR``, else ``~/.assay``.
        resume: id of an earlier run to continue; its config, summary and step carry on.
        resume_from_step: with ``resume``, the step the run restarts at (W&B's rewind): the
            points its earlier attaches logged at this step or later are superseded, so its
            history holds only this attach's from there on (summary and last step follow).
            ``"auto"``: the step of this attach's first ``log()`` (0 for a script that
            starts again from the top, k for one that restores a checkpoint at step k).
        id: the id of the new run (4-64 letters/digits; agents and backends pre-assign ids
            this way); an id already taken is a ConflictError (continue it with ``resume``).
            Default: the ``ASSAY_RUN_ID`` environment variable (set for command trials),
            else a random id. ``ASSAY_RESUME_ID`` likewise defaults ``resume`` (a backend
            relaunching a command trial sets it; ``resume_from_step`` then defaults to
            ``"auto"``: the dead attempt's points from the first step logged on are
            superseded). ``resume_from_step`` without any resume (the first attempt of a
            command trial) is ignored when it is ``"auto"``.
        system_metrics_interval: seconds between ``sys/`` samples; None or 0 disables.
        capture: record git state, packages and environment (in the background).
        server: an assay server URL (default ``$ASSAY_SERVER``): the WAL stays local and a
            background thread ships it there (retries, backoff; training never waits).
        token: the bearer token for ``server`` (default ``$ASSAY_TOKEN``), a researcher's.
    """
    if project is None:
        project = os.environ.get("ASSAY_PROJECT")
        if not project:
            raise UserInputError("assay.init() needs a project",
                                 hint='pass project="my-project" or set ASSAY_PROJECT')
    validate_name("project", project)
    if name is not None:
        validate_name("run", name)
    if group:
        validate_name("group", group)
    tag_list = check_tags(tags or [])  # one string is one tag, not its letters
    cfg = to_jsonable(_config_dict(config), what="config")
    if system_metrics_interval is not None and (
        not isinstance(system_metrics_interval, (int, float))
        or math.isnan(system_metrics_interval) or system_metrics_interval < 0
    ):
        raise UserInputError(f"system_metrics_interval must be seconds >= 0, got "
                             f"{system_metrics_interval!r}", hint="use e.g. 2.0, or 0 to disable")
    root = data_dir(dir)
    server = server or os.environ.get("ASSAY_SERVER") or None
    token = token or os.environ.get("ASSAY_TOKEN") or None
    if server and not token:  # every route but /api/health needs one: fail here, not at exit
        raise UserInputError(f"logging to the server {server} needs a token",
                             hint="pass token= (or set ASSAY_TOKEN) to a researcher's token: "
                                  "`assay token create NAME --role researcher` on the server")
    summary_auto: dict[str, dict[str, float]] = {}
    summary_set: dict[str, Any] = {}
    attach = 0
    next_step = 0
    relaunched = False  # a backend relaunching a command trial: it starts from the top
    if id is None and resume is None:
        id = os.environ.get("ASSAY_RUN_ID") or None
        resume = os.environ.get("ASSAY_RESUME_ID") or None
        if id and resume:
            id = None
        if (id or resume) and os.environ.get("ASSAY_CONFIG"):  # a command trial's: it wins
            cfg = {**cfg, **trial_config(os.environ["ASSAY_CONFIG"])}
        relaunched = resume is not None
        if relaunched and resume_from_step is None:
            resume_from_step = AUTO  # from the top: 0; from its own checkpoint: that step
    resume_from_step = check_resume_from_step(resume_from_step, resume)
    auto_rewind = resume_from_step == AUTO
    rewinds = True  # False: the server cannot take a rewind record
    if id is not None and (not isinstance(id, str) or not id.isalnum() or not 4 <= len(id) <= 64):
        raise UserInputError(f"invalid run id {id!r}", hint="run ids are 4-64 letters and digits")
    if resume is not None:
        if not isinstance(resume, str) or not resume.isalnum():
            raise UserInputError(f"resume must be a run id, got {resume!r}",
                                 hint="pass the id of an earlier run: assay.init(..., resume=run.id)")
        _refuse_if_live(root, resume)
        prior = (_remote_prior(root, server, token, resume, REMOTE_FINISH_TIMEOUT) if server
                 else _sync_and_get(root, resume))
        if prior is None and server:
            raise NotFoundError(f"cannot resume run {resume!r}: the server {server} has no "
                                "such run", hint="check the id (GET /api/runs on the server), "
                                "or the server= / ASSAY_SERVER it logs to")
        if prior is None:
            raise NotFoundError(f"cannot resume run {resume!r}: no such run in {root}",
                                hint="check the id with `assay runs`, or the data directory "
                                "(dir= or ASSAY_DIR)")
        if prior.project != project:
            raise UserInputError(f"run {resume} belongs to project {prior.project!r}, "
                                 f"not {project!r}", hint=f"use project={prior.project!r}")
        if server and resume_from_step is not None:
            rewinds = _server_rewinds(prior.server, resume_from_step)
        run_id = resume
        attach = prior.attach + 1
        cfg = {**prior.config, **cfg}
        summary_auto = {k: dict(v) for k, v in prior.summary.items()}
        summary_set = dict(prior.summary_set)
        if auto_rewind:  # implicit steps start again from 0; the rewind waits for log()
            # (a server too old for rewinds gets none: the steps logged again overwrite)
            next_step = 0
        elif isinstance(resume_from_step, int):
            next_step = resume_from_step
            summary_auto = rewound_summary(root, server, run_id, resume_from_step, summary_auto)
        else:
            next_step = prior.last_step + 1
        name = name or prior.name
    else:
        if server:
            client = RemoteClient(server, token, timeout=5.0)
            try:
                client.check_can_log()
            finally:
                client.close()
        run_id = _claim_run_id(root, id)
        name = name or f"{secrets.choice(_ADJ)}-{secrets.choice(_NOUN)}-{run_id[:4]}"
    record = {
        "k": "run", "run_id": run_id, "project": project, "name": name,
        "group": group or "", "tags": tag_list, "notes": notes or "", "config": cfg,
        "host": socket.gethostname(), "pid": os.getpid(), "attach": attach,
    }
    if isinstance(resume_from_step, int):
        record[REWIND_FIELD] = resume_from_step
    run = Run(run_id=run_id, project=project, name=name, dir=root, attach=attach,
              config=dict(cfg), summary_auto=summary_auto, summary_set=summary_set,
              next_step=next_step, init_record=record,
              system_metrics_interval=system_metrics_interval, capture=capture,
              server=server, token=token)
    if auto_rewind and rewinds:
        with run._rewind_lock:
            run._rewind_pending = True
            run._queue_append = run._rewind_at_first_log
    return run


lifecycle.install()  # last, so that exit finishes runs before later exit hooks run
