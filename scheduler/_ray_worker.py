"""The worker side of :class:`~assay.scheduler.ray_backend.RayBackend`.

:func:`run_trial` runs inside a Ray task: it opens (or, on a retry, resumes) the trial's run,
runs the target, and finishes the run completed, failed (with the traceback) or stopped (a
resumed attempt whose run had completed already reports its result instead of running). A
watcher thread beside it heartbeats to the backend's :class:`TrialControl` actor with the
number of metric records the run has logged so far (read from the run's write-ahead log,
which works for function and command trials alike) and receives stop requests, which it
passes on with ``run.request_stop(reason)`` and a stop file, so cooperative stopping works
even where workers do not share the driver's filesystem.

A worker that Ray ends with SIGTERM (preemption, a draining node, an owner that died) is a
dead worker, not a failed trial: Ray's ``SystemExit`` marks the run crashed and propagates,
so the backend retries the trial by resuming its run. A trial's own ``sys.exit`` is a failure.

The control actor also finalizes runs whose worker was killed: it resumes the run and
finishes it with the status the backend decided (:func:`mark_run`).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from importlib import import_module
from pathlib import Path
from typing import Any

from ..errors import AssayError, ConflictError, NotFoundError, UserInputError
from ..sdk.jsonable import to_jsonable
from ..store.records import RunStatus
from ..store.wal import read_wal
from .base import TargetKind, TrialSpec

__all__ = ["TrialControl", "command_argv", "mark_run", "resolve_target", "run_trial"]

_LOG_TAIL = 4000


class TrialControl:
    """A small actor between the driver and its workers (one per backend, no CPU).

    Workers report their start and heartbeat through it and learn about stop requests;
    the driver drains it once per poll. Runs as a threaded actor, hence the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stops: dict[str, tuple[str, str]] = {}
        self._started: list[tuple[str, int, float]] = []
        self._reports: dict[str, tuple[int, int]] = {}

    def started(self, trial_id: str, attempt: int, t: float) -> None:
        with self._lock:
            self._started.append((trial_id, attempt, t))

    def heartbeat(self, trial_id: str, attempt: int, reports: int) -> tuple[str, str] | None:
        """Record progress; return ``(reason, status)`` once the trial should stop."""
        with self._lock:
            self._reports[trial_id] = (attempt, reports)
            return self._stops.get(trial_id)

    def request_stop(self, trial_id: str, reason: str, status: str) -> None:
        with self._lock:
            self._stops.setdefault(trial_id, (reason, status))

    def forget(self, trial_id: str) -> None:
        with self._lock:
            self._stops.pop(trial_id, None)
            self._reports.pop(trial_id, None)

    def snapshot(self) -> dict[str, Any]:
        """Starts since the last snapshot, and every trial's latest report count."""
        with self._lock:
            started, self._started = self._started, []
            return {"now": time.time(), "started": started, "reports": dict(self._reports)}

    def finalize(self, data_dir: str, project: str, run_id: str, status: str,
                 error: str) -> bool:
        """Finish the run of a killed worker (see :func:`mark_run`)."""
        return mark_run(Path(data_dir), project, run_id, RunStatus(status), error,
                        only_unfinished=True)


def resolve_target(target: Any) -> Callable[..., Any]:
    """The callable behind a function or ``"module.sub:func"`` target.

    Raises:
        UserInputError: when the module or attribute cannot be found.
    """
    if callable(target):
        return target
    mod_name, _, attr = str(target).partition(":")
    try:
        obj: Any = import_module(mod_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise UserInputError(f"cannot load target {target!r}: {e}",
                             hint="the module must be importable on the workers") from e
    if not callable(obj):
        raise UserInputError(f"target {target!r} is not callable",
                             hint="point it at a function f(config, run)")
    return obj


def command_argv(spec: TrialSpec) -> list[str]:
    """The command line of a command trial: its words plus ``--key=value`` per config entry.

    Strings pass as they are, other values as JSON; ``python``/``python3`` as the first word
    means the worker's own interpreter (so the command sees the environment assay runs in).
    """
    t = spec.target
    if t is None or callable(t):
        raise UserInputError(f"trial {spec.trial_id} has no command target",
                             hint='e.g. target=["python", "train.py"]')
    argv = shlex.split(t) if isinstance(t, str) else list(t)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    for k, v in spec.config.items():
        argv.append(f"--{k}={v if isinstance(v, str) else json.dumps(v)}")
    return argv


def _numbers(m: Mapping[str, Any]) -> dict[str, float]:
    return {str(k): float(v) for k, v in m.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
            and not str(k).startswith("sys/")}


def mark_run(data_dir: Path, project: str, run_id: str, status: RunStatus, error: str, *,
             only_unfinished: bool, config: Mapping[str, Any] | None = None) -> bool:
    """Give a run the final ``status`` its own process could not (it was killed, or a
    command exited without saying). Returns whether it changed anything.

    With ``only_unfinished`` a run that is already completed, failed or stopped is left as
    it is; otherwise only one that already has ``status`` is. A run that never became
    durable is created when ``config`` is given, else left alone.
    """
    from .. import sdk

    rec = _stored_run(data_dir, run_id)
    current = None if rec is None else rec.status
    if current is not None and (current == status or only_unfinished and current in (
            RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.STOPPED)):
        return False
    kw: dict[str, Any] = {"dir": data_dir, "system_metrics_interval": 0, "capture": False}
    try:
        run = sdk.init(project, resume=run_id, **kw)
    except NotFoundError:
        if config is None:
            return False
        try:
            run = sdk.init(project, id=run_id, config=dict(config), **kw)
        except ConflictError:  # claimed by a process that died before its first flush
            return False
    run.finish(status, error)
    return True


class _Watcher(threading.Thread):
    """Heartbeats to the control actor and relays its stop request to the trial."""

    def __init__(self, control: Any, spec: TrialSpec, attempt: int, data_dir: Path,
                 interval: float) -> None:
        super().__init__(name=f"assay-watch-{spec.trial_id}", daemon=True)
        self.control, self.spec, self.attempt = control, spec, attempt
        self.data_dir, self.interval = data_dir, interval
        self.request: tuple[str, str] | None = None
        self.on_stop: Callable[[str], None] = lambda reason: None
        self._done = threading.Event()
        self._reports = 0
        self._offsets: dict[Path, int] = {}

    def check(self) -> tuple[str, str] | None:
        """One heartbeat; returns the stop request once there is one."""
        import ray

        self._count_reports()
        try:
            req = ray.get(self.control.heartbeat.remote(self.spec.trial_id, self.attempt,
                                                        self._reports), timeout=30)
        except Exception:  # noqa: BLE001 - driver gone or slow: keep training, try again
            return self.request
        if req is not None and self.request is None:
            self.request = (str(req[0]), str(req[1]))
            stop_dir = self.data_dir / "control"
            stop_dir.mkdir(parents=True, exist_ok=True)
            (stop_dir / f"{self.spec.trial_id}.stop").write_text(self.request[0])
            self.on_stop(self.request[0])
        return self.request

    def _count_reports(self) -> None:
        """Count the run's metric records (not ``sys/``) appended to its WAL since last time:
        ``<dir>/wal/<id>/``, or ``<dir>/outbox/<id>/`` for a run that logs to a server."""
        segments: list[Path] = []
        for folder in ("wal", "outbox"):
            try:
                segments += sorted((self.data_dir / folder / self.spec.trial_id).glob("*.wal"))
            except OSError:
                continue
        for seg in segments:
            try:
                for rec in read_wal(seg, self._offsets.get(seg, 0)):
                    self._offsets[seg] = rec.end
                    d = rec.data
                    if d.get("k") == "metrics" and any(
                            not k.startswith("sys/") for c in d.get("chunks", ())
                            for k in c.get("keys", ())):
                        self._reports += 1
            except OSError:  # ingested and deleted meanwhile
                continue

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.check()

    def close(self) -> None:
        self._done.set()


def run_trial(spec: TrialSpec, attempt: int, resume: bool, data_dir: str, control: Any,
              heartbeat_s: float, cwd: str | None) -> dict[str, Any]:
    """Run one attempt of a trial inside a Ray worker and say how it ended.

    Returns:
        ``status`` (completed/failed/stopped), ``result``, ``reason``, ``error``,
        ``started_at``/``ended_at`` (epoch seconds) and ``wall_s``.
    """
    t0, m0 = time.time(), time.monotonic()
    root = Path(data_dir)
    control.started.remote(spec.trial_id, attempt, t0)
    watcher = _Watcher(control, spec, attempt, root, heartbeat_s)
    out: dict[str, Any] = {"status": "failed", "result": {}, "reason": "", "error": "",
                           "started_at": t0}
    try:
        req = watcher.check()
        finished = _finished_run(root, spec) if resume else None
        if req is not None:
            out.update(status=RunStatus(req[1]).value, reason=req[0])
        elif finished is not None:
            out.update(finished)
        elif spec.target_kind is TargetKind.COMMAND:
            out.update(_run_command(spec, attempt, resume, root, watcher, cwd))
        else:
            out.update(_run_function(spec, resume, root, watcher))
    except BaseException as e:  # the driver must always hear how it ended (unless Ray ends us)
        if _ray_ending(e):  # the worker itself is going (SIGTERM): a worker death, retryable
            raise
        out.update(status="failed", reason=f"{type(e).__name__}: {e}",
                   error="".join(traceback.format_exception(e)))
    finally:
        watcher.close()
    out["ended_at"] = time.time()
    out["wall_s"] = time.monotonic() - m0
    return out


#: Summary key under which a function trial's attempt stores what the function returned,
#: just before it completes the run: a resumed attempt reuses a completed run only with it.
TRIAL_RESULT_KEY = "assay/trial_result"


def _finished_run(root: Path, spec: TrialSpec) -> dict[str, Any] | None:
    """The stored outcome, when a resumed attempt finds its trial's run completed already.

    The previous attempt (or the agent that launched it) can die after the run completed but
    before anyone heard: running the target again would reopen a finished run and log its
    steps twice, so the attempt reports the run's result instead. A failed or stopped run is
    run again: that is what dying mid-run looks like (Ray ends an orphaned worker with a
    ``SystemExit``, which the run records as a failure). So is a run of another project or
    config (a caller-chosen id), and a function trial's run completed without the result
    its attempt stores last (:data:`TRIAL_RESULT_KEY`): the interpreter's exit handler
    completes a run that a worker ending at the wrong moment left open.
    """
    rec = _stored_run(root, spec.trial_id, sync=True)  # what a dead attempt left counts too
    if rec is None or RunStatus(rec.status) is not RunStatus.COMPLETED:
        return None
    wanted = to_jsonable(dict(spec.config), what="config")
    if rec.project != spec.project or any(rec.config.get(k, wanted) != v
                                          for k, v in wanted.items()):
        return None  # the trial's own config keys must match (it may have added others)
    if spec.target_kind is TargetKind.COMMAND:
        result = _command_result(root, spec.trial_id)
    else:
        stored = rec.summary_set.get(TRIAL_RESULT_KEY)
        if not isinstance(stored, Mapping):
            return None
        result = _numbers(stored)
    return {"status": RunStatus.COMPLETED.value, "result": result,
            "reason": "its run had already completed (resumed, not run again)", "error": ""}


def _open_run(spec: TrialSpec, resume: bool, root: Path) -> Any:
    from .. import sdk

    kw: dict[str, Any] = {"config": dict(spec.config), "dir": root}
    if resume:
        try:
            # The run rewinds to the step the target logs first: 0 when it starts again
            # from the top, k when it restores its own checkpoint at k. The points of the
            # attempt that died from there on are superseded, not mixed into the new curve;
            # those below it stay.
            return sdk.init(spec.project, resume=spec.trial_id, resume_from_step="auto", **kw)
        except NotFoundError:  # the first attempt died before its run was durable
            pass
    return sdk.init(spec.project, id=spec.trial_id, **kw)


def _run_function(spec: TrialSpec, resume: bool, root: Path, watcher: _Watcher) -> dict[str, Any]:
    run = _open_run(spec, resume, root)
    ret: Any = None
    status, reason, error = RunStatus.COMPLETED, "", ""
    try:  # from here on, any way out finishes the run (Ray's SIGTERM as crashed)
        run.flush()  # the run is durable before the target starts: a retry can resume it
        watcher.on_stop = run.request_stop
        if watcher.request is not None:
            run.request_stop(watcher.request[0])
        watcher.start()
        fn = resolve_target(spec.target)
        ret = fn(dict(spec.config), run)
    except KeyboardInterrupt:
        status, reason = RunStatus.STOPPED, run.stop_reason or "interrupted"
    except BaseException as e:  # a trial's failure is data, not our crash
        if ending := _ray_ending(e):  # SIGTERM: preemption, a dead owner, a draining node
            watcher.close()
            run.finish(RunStatus.CRASHED, f"the worker was ended: {ending}")
            raise  # the driver sees a dead worker and retries, resuming this run
        status, reason = RunStatus.FAILED, f"{type(e).__name__}: {e}"
        error = "".join(traceback.format_exception(e))
    else:
        if run.stop_reason is not None:
            status, reason = _stop_status(watcher.request), run.stop_reason
    watcher.close()
    result = _numbers(ret) if isinstance(ret, Mapping) else {}
    if not result:
        result = _numbers(run.summary.to_dict())
    if status is RunStatus.COMPLETED:
        run.summary[TRIAL_RESULT_KEY] = result
    run.finish(status, error or reason)
    return {"status": status.value, "result": result, "reason": reason, "error": error}


def _ray_ending(e: BaseException) -> str:
    """Ray's message when it raised this ``SystemExit`` to end the worker (its SIGTERM
    handler sets ``ray_terminate_msg``); empty for anything else, a trial's own
    ``sys.exit`` included."""
    msg = getattr(e, "ray_terminate_msg", None) if isinstance(e, SystemExit) else None
    return str(msg) if msg is not None else ""


def _stop_status(request: tuple[str, str] | None) -> RunStatus:
    """The status a stopped trial ends with: what the backend asked for, else stopped
    (a stop file written by someone else)."""
    return RunStatus(request[1]) if request is not None else RunStatus.STOPPED


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the worker dies (a forced stop kills the worker)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _run_command(spec: TrialSpec, attempt: int, resume: bool, root: Path, watcher: _Watcher,
                 cwd: str | None) -> dict[str, Any]:
    argv = command_argv(spec)
    env = {**os.environ, **spec.env, "ASSAY_CONFIG": json.dumps(dict(spec.config)),
           "ASSAY_PROJECT": spec.project, "ASSAY_DIR": str(root)}
    env.pop("ASSAY_RUN_ID", None)
    env.pop("ASSAY_RESUME_ID", None)
    env["ASSAY_RESUME_ID" if resume else "ASSAY_RUN_ID"] = spec.trial_id
    log_path = root / "logs" / "trials" / f"{spec.trial_id}-{attempt}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    watcher.start()
    with open(log_path, "ab") as log:
        # preexec_fn only calls prctl before exec; it is the one way to tie the child's
        # life to the worker's (a forced stop SIGKILLs the worker, no cleanup runs there).
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent,  # noqa: PLW1509
                                cwd=cwd if cwd and os.path.isdir(cwd) else None)
        try:
            rc = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            try:
                rc = proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
    watcher.close()
    # The driver writes the stop file before it tells the control actor, so a polite command
    # can see the request and exit 0 before our last heartbeat did: ask once more.
    req = watcher.request or watcher.check()
    if req is None:
        stop_file = root / "control" / f"{spec.trial_id}.stop"
        if stop_file.exists():
            req = (stop_file.read_text(errors="replace").strip() or "stop requested",
                   RunStatus.STOPPED.value)
    if rc == 0 and req is None:
        status, reason, error = RunStatus.COMPLETED, "", ""
    elif rc == 0 or req is not None:
        status, reason, error = _stop_status(req), req[0] if req else "interrupted", ""
    else:
        tail = log_path.read_text(errors="replace")[-_LOG_TAIL:]
        status, reason = RunStatus.FAILED, f"command exited with code {rc}"
        error = f"{reason} ({socket.gethostname()}:{log_path}); output tail:\n{tail}"
    try:
        mark_run(root, spec.project, spec.trial_id, status, error or reason,
                 only_unfinished=False, config=spec.config)
        result = _command_result(root, spec.trial_id)
    except AssayError as exc:  # the server the run logs to is away: the command's own
        # finish() recorded its run; the agent takes the result from the curve it read
        logging.getLogger(__name__).warning("could not read or mark run %s: %s",
                                            spec.trial_id, exc)
        result = {}
    return {"status": status.value, "result": result, "reason": reason, "error": error}


def _stored_run(root: Path, run_id: str, *, sync: bool = False) -> Any:
    """The run's stored record (None if there is none), where the trial logs: the data
    directory, or the ``assay server`` named by ``$ASSAY_SERVER`` (with ``$ASSAY_TOKEN``),
    which ``assay.init`` in the trial follows. ``sync``: first ingest (or ship to the server)
    what a dead attempt left in its write-ahead log."""
    server = os.environ.get("ASSAY_SERVER") or None
    if server is None:
        if sync:
            from ..sdk.run import _sync_and_get

            return _sync_and_get(root, run_id)
        from ..sdk.api import Api

        try:
            return Api(root).run(run_id)
        except NotFoundError:
            return None
    from ..sdk.remote import sync_outbox
    from ..sdk.remote_api import RemoteReader
    from ..sdk.settings import FINISH_TIMEOUT

    token = os.environ.get("ASSAY_TOKEN") or None
    if sync:
        sync_outbox(root, server, token, timeout=FINISH_TIMEOUT, run_id=run_id)
        _wait_ingested(server, token, run_id, FINISH_TIMEOUT)
    with RemoteReader(server, token) as reader:
        try:
            return reader.run(run_id)
        except NotFoundError:
            return None


def _wait_ingested(server: str, token: str | None, run_id: str, timeout: float) -> None:
    """Wait (up to ``timeout`` s) until the server's record of the run holds every record
    it has durably received: its status then says how the last attempt ended (a completed
    run read before is still "running", and would be run again)."""
    from ..sdk.remote import RemoteClient

    client = RemoteClient(server, token)
    try:
        durable = client.durable_seq(run_id)
        deadline = time.monotonic() + timeout
        while durable >= 0 and time.monotonic() < deadline:
            try:
                if int(client.get_run(run_id).get("ingested_seq", -1)) >= durable:
                    return
            except NotFoundError:
                pass  # its first records are not ingested yet
            time.sleep(0.2)
    except NotFoundError:
        return  # the server has nothing of it
    finally:
        client.close()


def _command_result(root: Path, run_id: str) -> dict[str, float]:
    rec = _stored_run(root, run_id)
    if rec is None:
        return {}
    res = {k: v["last"] for k, v in rec.summary.items()}
    res.update(rec.summary_set)
    return _numbers(res)
