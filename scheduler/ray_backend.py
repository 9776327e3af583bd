"""Trials as Ray tasks: the backend for one machine (embedded Ray) and for clusters.

Each attempt of a trial is one Ray task with the trial's ``num_cpus``/``num_gpus``. The task
(:func:`~assay.scheduler._ray_worker.run_trial`) opens the trial's run with its pre-assigned
id, resuming it on a retry (or from the first attempt for a spec with ``resume=True``, a
trial relaunched by a restarted agent), runs the target and finishes the run itself. A small control
actor (no CPU) carries starts, heartbeats and stop requests between the driver and its
workers, so nothing relies on a shared filesystem.

Stopping is cooperative first: a stop file ``<data dir>/control/<run_id>.stop`` (what
``run.should_stop()`` reads) plus the control actor, whose watcher thread in the worker calls
``run.request_stop(reason)``. After ``stop_grace_s`` the task is killed
(``ray.cancel(force=True)``) and the control actor finishes the run as stopped. Ray's own
task retries are off: the backend retries a trial whose worker died (SIGKILL, OOM, lost
node) itself, resuming the run, up to ``max_retries``, and reports every retry as an event.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..errors import ConflictError, NotFoundError, UserInputError
from ..sdk.settings import data_dir as resolve_data_dir
from .base import Backend, EventKind, Resources, Shortfall, TrialEvent, TrialSpec, Usage
from .clock import RealClock

__all__ = ["RayBackend", "local_resources"]

log = logging.getLogger(__name__)


class _State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINALIZING = "finalizing"  # killed; the control actor is finishing its run
    DONE = "done"


@dataclass
class _Trial:
    spec: TrialSpec
    ref: Any
    state: _State = _State.QUEUED
    attempt: int = 1
    started_at: float | None = None  # epoch seconds of the running attempt's start
    reports: int = 0
    last_report_at: float = 0.0
    stop_reason: str | None = None
    stop_status: EventKind = EventKind.STOPPED
    stop_deadline: float | None = None
    forced: bool = False
    pending: TrialEvent | None = None  # emitted once the finalizer is done
    finalizer: Any = None


class RayBackend(Backend):
    """Runs trials as Ray tasks on a local Ray (started on demand) or a cluster.

    Args:
        data_dir: The assay data directory the workers record runs into (default:
            ``$ASSAY_DIR``, else ``~/.assay``); on a cluster, storage every node reaches.
        address: Join an existing cluster (``"auto"`` or ``"ray://host:10001"``). Without
            it, and with Ray not yet initialized, a local Ray is started on 127.0.0.1 with
            ``num_cpus`` CPUs and shut down again by :meth:`shutdown`.
        num_cpus: CPUs of the embedded local Ray (default: all).
        max_concurrent: Most trials running at once (default: what the cluster fits).
        heartbeat_s: Seconds between worker heartbeats (stop latency, report detection).
        autoscaling: Whether the cluster may grow. A trial asking for more than the whole
            cluster has (``ray.cluster_resources()``, every node, custom resources too) is
            refused at :meth:`launch` with a :class:`UserInputError` when it may not, and
            waits (queued, with a warning) when it may. Default: an embedded local Ray (one
            started by this backend, or by the agent runner without ``address``) never
            grows; a joined cluster may (an autoscaler, KubeRay, the cluster launcher), so
            its trials wait rather than fail. :meth:`shortfall` reports either case.

    Raises:
        UserInputError: for invalid arguments.
    """

    def __init__(self, data_dir: str | os.PathLike[str] | None = None,
                 address: str | None = None, *, num_cpus: int | None = None,
                 max_concurrent: int | None = None, heartbeat_s: float = 0.5,
                 autoscaling: bool | None = None) -> None:
        import ray

        from ._ray_worker import TrialControl, run_trial

        if max_concurrent is not None and (isinstance(max_concurrent, bool)
                                           or not isinstance(max_concurrent, int)
                                           or max_concurrent < 1):
            raise UserInputError(f"max_concurrent must be an int >= 1, got {max_concurrent!r}",
                                 hint="leave it None to fill the cluster")
        if not isinstance(heartbeat_s, int | float) or not 0 < heartbeat_s <= 60:
            raise UserInputError(f"heartbeat_s must be in (0, 60], got {heartbeat_s!r}",
                                 hint="0.5 s is a good default")
        self.clock = RealClock()
        self.data_dir = resolve_data_dir(data_dir)
        self.max_concurrent = max_concurrent
        self.heartbeat_s = float(heartbeat_s)
        self._owns_ray = False
        if not ray.is_initialized():
            if address is not None:
                ray.init(address=address, log_to_driver=False)
            else:
                # Keeps a local Ray on loopback (see README: tests run with only loopback).
                os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
                ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
                self._owns_ray = True
        if autoscaling is not None and not isinstance(autoscaling, bool):
            raise UserInputError(f"autoscaling must be True, False or None, got {autoscaling!r}",
                                 hint="None: a joined cluster may grow, a local Ray does not")
        self.autoscaling = (not self._owns_ray) if autoscaling is None else autoscaling
        self._ray = ray
        self._run_trial = ray.remote(max_retries=0)(run_trial)
        control_cls: Any = ray.remote(num_cpus=0, max_concurrency=16)  # type: ignore[call-overload]
        self._control = control_cls(TrialControl).remote()
        self._trials: dict[str, _Trial] = {}
        self._events: list[TrialEvent] = []
        self._closed = False

    # -- Backend -----------------------------------------------------------------------------
    def launch(self, spec: TrialSpec) -> None:
        if self._closed:
            raise ConflictError("the backend is shut down", hint="create a new RayBackend")
        if not isinstance(spec, TrialSpec):
            raise UserInputError("launch() takes a TrialSpec", hint="TrialSpec(trial_id, ...)")
        if spec.trial_id in self._trials:
            raise ConflictError(f"trial {spec.trial_id} was already launched",
                                hint="give every trial a new id")
        if spec.target is None:
            raise UserInputError(f"trial {spec.trial_id} has no target",
                                 hint='set target=f, "module:func" or a command')
        self._check_fits(spec.resources)
        tr = _Trial(spec, None)
        tr.ref = self._submit(tr, resume=spec.resume)
        self._trials[spec.trial_id] = tr

    def poll(self) -> list[TrialEvent]:
        if not self._closed:
            self._step()
        out, self._events = self._events, []
        return out

    def stop(self, trial_id: str, reason: str = "stop requested") -> None:
        tr = self._trials.get(trial_id)
        if tr is None:
            raise NotFoundError(f"trial {trial_id!r} was never launched on this backend",
                                hint="check the id; running() lists the live trials")
        self._request_stop(tr, str(reason), EventKind.STOPPED)

    def end_unlaunched(self, project: str, trial_id: str, status: str, reason: str) -> None:
        from ..store.records import RunStatus
        from ._ray_worker import mark_run

        mark_run(self.data_dir, project, trial_id, RunStatus(status), reason,
                 only_unfinished=True)

    def running(self) -> set[str]:
        return {tid for tid, t in self._trials.items() if t.state is not _State.DONE}

    def capacity(self, resources: Resources | None = None) -> int:
        if self._closed:
            return 0
        r = resources or Resources()
        free = dict(self._ray.available_resources())
        for t in self._trials.values():
            if t.state is _State.QUEUED:  # queued tasks are not yet in available_resources
                for k, v in t.spec.resources.request().items():
                    free[k] = free.get(k, 0.0) - v
        n = r.fits(free)
        if self.max_concurrent is not None:
            n = min(n, max(0, self.max_concurrent - len(self.running())))
        return n

    def shortfall(self, resources: Resources) -> Shortfall | None:
        """What a trial of ``resources`` asks for beyond the cluster's total resources (all
        its nodes, as ``ray.cluster_resources()`` has them), or None if it fits."""
        if self._closed:
            return None
        return Shortfall.of(resources.request(), self._ray.cluster_resources(),
                            may_grow=self.autoscaling)

    def shutdown(self) -> None:
        """Kill every trial at once (their runs end stopped), then release the control actor
        and, if this backend started Ray, Ray itself."""
        if self._closed:
            return
        for tr in self._trials.values():
            if tr.state in (_State.QUEUED, _State.RUNNING):
                self._request_stop(tr, "backend shut down", EventKind.STOPPED, grace=0.0)
        deadline = time.monotonic() + 60
        while self.running() and time.monotonic() < deadline:
            self._step()
            if self.running():
                time.sleep(0.05)
        if self.running():
            log.warning("assay: trials %s did not wind down in time", sorted(self.running()))
        self._closed = True
        try:
            self._ray.kill(self._control)
        except Exception as e:  # noqa: BLE001 - already gone with its cluster
            log.debug("assay: control actor already gone: %s", e)
        if self._owns_ray:
            self._ray.shutdown()

    # -- internals ---------------------------------------------------------------------------
    def _check_fits(self, r: Resources) -> None:
        short = self.shortfall(r)
        if short is None:
            return
        if not short.may_grow:
            raise UserInputError(short.message, hint=short.hint)
        log.warning("assay: %s; it waits until the cluster grows", short.message)

    def _submit(self, tr: _Trial, *, resume: bool) -> Any:
        r = tr.spec.resources
        return self._run_trial.options(num_cpus=r.cpus, num_gpus=r.gpus,
                                       resources=dict(r.custom),
                                       name=f"assay-trial-{tr.spec.trial_id}").remote(
            tr.spec, tr.attempt, resume, str(self.data_dir), self._control, self.heartbeat_s,
            os.getcwd())

    def _emit(self, event: TrialEvent) -> None:
        self._events.append(event)

    def _request_stop(self, tr: _Trial, reason: str, status: EventKind, *,
                      grace: float | None = None) -> None:
        if tr.state in (_State.DONE, _State.FINALIZING) or tr.stop_reason is not None:
            if grace == 0.0 and tr.state is not _State.DONE and not tr.forced:
                tr.stop_deadline = self.clock.now()  # shutdown: no more waiting
            return
        tr.stop_reason, tr.stop_status = reason, status
        tr.stop_deadline = self.clock.now() + (tr.spec.stop_grace_s if grace is None else grace)
        try:
            stop_dir = self.data_dir / "control"
            stop_dir.mkdir(exist_ok=True)
            (stop_dir / f"{tr.spec.trial_id}.stop").write_text(reason)
        except OSError as e:  # the actor still reaches the worker
            log.warning("assay: could not write the stop file of %s: %s", tr.spec.trial_id, e)
        self._control.request_stop.remote(tr.spec.trial_id, reason, status.value)
        if tr.state is _State.QUEUED:
            # Not started (as far as we know): nothing to wind down, dequeue it now.
            self._kill(tr)

    def _kill(self, tr: _Trial) -> None:
        if not tr.forced:
            tr.forced = True
            self._ray.cancel(tr.ref, force=True)

    def _step(self) -> None:
        ray = self._ray
        now = self.clock.now()
        snap = ray.get(self._control.snapshot.remote(), timeout=60)
        for tid, attempt, t in snap["started"]:
            tr = self._trials.get(tid)
            if tr is not None and tr.attempt == attempt and tr.state is _State.QUEUED:
                self._mark_started(tr, now - max(0.0, snap["now"] - t))
        for tid, (attempt, n) in snap["reports"].items():
            tr = self._trials.get(tid)
            if tr is not None and tr.attempt == attempt and n != tr.reports:
                tr.reports, tr.last_report_at = n, now
        refs = {}
        for tr in self._trials.values():
            if tr.state in (_State.QUEUED, _State.RUNNING):
                refs[tr.ref] = tr
            elif tr.state is _State.FINALIZING:
                refs[tr.finalizer] = tr
        if refs:
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
            for ref in ready:
                tr = refs[ref]
                if tr.state is _State.FINALIZING:
                    self._finalized(tr)
                else:
                    self._attempt_ended(tr)
        now = self.clock.now()
        for tr in self._trials.values():
            if tr.state is not _State.RUNNING:
                continue
            if tr.stop_deadline is not None and now >= tr.stop_deadline:
                self._kill(tr)
            timeout = tr.spec.report_timeout_s
            if timeout is not None and tr.stop_reason is None \
                    and now - tr.last_report_at > timeout:
                self._request_stop(tr, f"no metric reported for {timeout:g} s "
                                       f"(report_timeout_s)", EventKind.FAILED)

    def _mark_started(self, tr: _Trial, t: float) -> None:
        tr.state = _State.RUNNING
        tr.started_at = t
        tr.last_report_at = self.clock.now()
        self._emit(TrialEvent(tr.spec.trial_id, EventKind.STARTED, t, tr.attempt))

    def _attempt_ended(self, tr: _Trial) -> None:
        ray = self._ray
        try:
            out = ray.get(tr.ref)
        except ray.exceptions.TaskCancelledError:
            self._killed(tr, tr.stop_reason or "cancelled")
        except ray.exceptions.RayTaskError as e:  # the wrapper itself raised: not retryable
            self._killed(tr, f"the trial wrapper failed: {e}", status=EventKind.FAILED,
                         error=str(e))
        except ray.exceptions.RayError as e:  # the worker died (SIGKILL, OOM, lost node)
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            cause = f"worker died: {type(e).__name__}: {first}"
            if tr.forced:
                self._killed(tr, tr.stop_reason or cause)
            elif tr.attempt <= tr.spec.max_retries:
                self._retry(tr, cause)
            else:
                self._killed(tr, f"{cause} (attempt {tr.attempt}, max_retries="
                                 f"{tr.spec.max_retries})", status=EventKind.FAILED)
        else:
            if tr.state is _State.QUEUED:  # it ran before we saw its start
                self._mark_started(tr, float(out["started_at"]))
            kind = EventKind(out["status"])
            self._done(tr, TrialEvent(
                tr.spec.trial_id, kind, float(out["ended_at"]), tr.attempt,
                result=out["result"], reason=out["reason"], error=out["error"],
                usage=Usage.of(tr.spec.resources, float(out["wall_s"]))))

    def _attempt_usage(self, tr: _Trial) -> Usage:
        if tr.started_at is None:
            return Usage()
        return Usage.of(tr.spec.resources, self.clock.now() - tr.started_at)

    def _retry(self, tr: _Trial, cause: str) -> None:
        usage = self._attempt_usage(tr)
        tr.attempt += 1
        tr.state, tr.started_at, tr.reports = _State.QUEUED, None, 0
        tr.ref = self._submit(tr, resume=True)
        log.info("assay: trial %s: %s; retrying (attempt %d)", tr.spec.trial_id, cause,
                 tr.attempt)
        self._emit(TrialEvent(tr.spec.trial_id, EventKind.RETRIED, self.clock.now(),
                              tr.attempt, reason=cause, usage=usage))

    def _killed(self, tr: _Trial, reason: str, *, status: EventKind | None = None,
                error: str = "") -> None:
        """The attempt was killed or its worker died: have its run finished, then report."""
        kind = status or tr.stop_status
        if kind is EventKind.STOPPED and tr.stop_reason and tr.forced and tr.started_at:
            reason = f"{reason} (killed after {tr.spec.stop_grace_s:g} s grace)"
        tr.pending = TrialEvent(tr.spec.trial_id, kind, self.clock.now(), tr.attempt,
                                reason=reason, error=error, usage=self._attempt_usage(tr))
        tr.state = _State.FINALIZING
        tr.finalizer = self._control.finalize.remote(
            str(self.data_dir), tr.spec.project, tr.spec.trial_id, kind.value,
            error or reason)

    def _finalized(self, tr: _Trial) -> None:
        try:
            self._ray.get(tr.finalizer)
        except Exception as e:  # noqa: BLE001 - the event still goes out; `assay sync` marks it crashed
            log.warning("assay: could not finish the run of trial %s: %s", tr.spec.trial_id, e)
        event, tr.pending, tr.finalizer = tr.pending, None, None
        if event is not None:
            self._done(tr, event)

    def _done(self, tr: _Trial, event: TrialEvent) -> None:
        tr.state = _State.DONE
        self._emit(event)
        self._control.forget.remote(tr.spec.trial_id)
        stop_file = self.data_dir / "control" / f"{tr.spec.trial_id}.stop"
        stop_file.unlink(missing_ok=True)

    def attempts(self, trial_id: str) -> int:
        """How many attempts a trial has had so far (1 + retries)."""
        tr = self._trials.get(trial_id)
        if tr is None:
            raise NotFoundError(f"trial {trial_id!r} was never launched on this backend")
        return tr.attempt


def local_resources() -> dict[str, float] | None:
    """What a local Ray started on this machine without arguments would have (``CPU``,
    ``GPU`` and custom resources, as Ray detects them: cgroup limits,
    ``CUDA_VISIBLE_DEVICES``, ``RAY_OVERRIDE_RESOURCES``), without starting it; None when
    Ray cannot tell. What a server checks an objective against before it starts an agent
    that runs on the embedded local Ray."""
    try:
        from ray._private.resource_and_label_spec import ResourceAndLabelSpec

        spec = ResourceAndLabelSpec().resolve(is_head=True, node_ip_address="127.0.0.1")
        out = {k: float(v) for k, v in (spec.resources or {}).items()
               if not k.startswith("node:")}
        out["CPU"] = float(spec.num_cpus or 0)
        out["GPU"] = float(spec.num_gpus or 0)
        return out
    except Exception as e:  # noqa: BLE001 - a private Ray API: without it, the agent checks
        log.debug("assay: could not read this machine's Ray resources: %s", e)
        return None
