"""Run an objective on Ray: the agent as a Ray actor, live progress, the sweep result.

The embedded default starts a local Ray on 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
keeps it off external interfaces); ``address=`` joins an existing cluster instead. The agent
runs inside a Ray actor that Ray restarts if its process dies (``max_restarts``); a restarted
actor restores the agent from the experiment graph, so no trial is repeated, and relaunches
the trials that died with it, resuming their runs (see :mod:`assay.agents.agent`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from ..store.control import AgentStatus
from .objective import Objective

__all__ = ["SweepResult", "check_resources", "ensure_ray", "prior_trials", "run_objective"]


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Initialize Ray once: a local, loopback-only Ray by default, or join ``address``."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
    return ray


def _joins_cluster(address: str | None) -> bool:
    """Whether the agent runs on a cluster it joins (``address=``, or ``RAY_ADDRESS``, which
    ``ray.init`` follows) rather than on an embedded local Ray started for it."""
    return bool(address or os.environ.get("RAY_ADDRESS"))


def check_resources(objective: Objective, *, address: str | None = None,
                    running: bool = True) -> None:
    """Refuse an objective whose trials ask for more than the whole cluster has.

    Where the agent runs on an embedded local Ray (no ``address``, no ``RAY_ADDRESS``), that
    cluster never grows: a trial larger than it could never start, so the objective is
    refused before any agent starts (the API answers 400). The check uses the running Ray
    when this process has one and ``running`` (the agent will run on it), else what a new
    local Ray on this machine would detect (without starting it). A cluster the agent joins may grow (an autoscaler), so it is
    not refused here: the agent waits for it, with a decision saying why.

    Raises:
        UserInputError: naming what a trial asks for, what the cluster has, and the fix.
    """
    from ..scheduler.base import Resources, Shortfall
    from ..scheduler.ray_backend import local_resources

    if _joins_cluster(address):
        return
    import ray

    total = ray.cluster_resources() if running and ray.is_initialized() \
        else local_resources()
    if total is None:
        return  # Ray cannot tell: the agent checks against the running cluster
    short = Shortfall.of(Resources(**dict(objective.resources)).request(), total)
    if short is not None:
        raise UserInputError(f"objective {objective.name}: {short.message} (a local Ray on "
                             "this machine)", hint=short.hint)


def trials_server() -> str | None:
    """The ``assay server`` this process's trials log to, if any: ``$ASSAY_SERVER`` as Ray
    workers inherit it (``assay.init`` in a trial follows it, with ``$ASSAY_TOKEN``), so the
    agent reads their curves and warm-start runs there."""
    return os.environ.get("ASSAY_SERVER") or None


def _public(url: str | None) -> str | None:
    from ..sdk.remote import public_url

    return public_url(url) if url else None


def control_for(root: Path, server: str | None, *, retry_for: float = 8.0) -> Any:
    """Where an agent keeps its state, decisions, overrides and leases: the server its trials
    log to, when that server keeps agents (feature ``agent_store``: supervisors then see and
    steer it there, and agents of the project on other machines share its leases), else the
    data directory."""
    from ..store.control import LanceControlStore
    from ..store.ingest import IngestLock
    from ..store.lance import LanceStore

    if server:
        from ..store.control_remote import RemoteControlStore

        remote = RemoteControlStore(server, os.environ.get("ASSAY_TOKEN") or None,
                                    retry_for=retry_for)
        if remote.serves():  # a server that cannot be asked: ServerUnreachableError, now
            return remote
        remote.close()
        import logging

        logging.getLogger(__name__).warning(
            "the server %s is too old to keep agents: the agent's state stays in %s (its "
            "trials still log to the server)", server, root)
    return LanceControlStore(LanceStore(root), IngestLock(root))


def check_trials_server(root: Path, agent_id: str | None) -> Any:
    """Refuse to resume an agent whose trials logged somewhere else than trials would now
    (``$ASSAY_SERVER`` set then and not now, or the other way round): it would poll the wrong
    place for the curves of the trials it relaunches, and its stoppers would see nothing.

    Also asks the server the trials would log to (``$ASSAY_SERVER``), so that one that does
    not answer, or a missing token, fails here rather than in the agent's Ray actor.

    Returns:
        The saved row of ``agent_id`` (None: no such agent, here or on the server: a new
        agent takes that id).

    Raises:
        UserInputError: naming where its trials logged and what to export.
        ServerUnreachableError: ``$ASSAY_SERVER`` does not answer.
    """
    from ..sdk.remote import public_url

    now = trials_server()
    if not now and not agent_id:
        return None
    if now and not os.environ.get("ASSAY_TOKEN"):
        raise UserInputError(f"$ASSAY_SERVER is {public_url(now)}, where the trials would log, "
                             "but $ASSAY_TOKEN is not set",
                             hint="export ASSAY_TOKEN=<a researcher's token of that server> "
                                  "(`assay token create NAME --role researcher` there), or "
                                  "unset ASSAY_SERVER to keep everything in the data directory")
    row = None
    if now:
        # Asks the server: one that does not answer fails the run now (after 2 s of tries).
        control = control_for(root, now, retry_for=2.0)
        try:
            if hasattr(control, "whoami"):  # a refused token fails here, not in a Ray actor
                me = control.whoami()
                if me.get("role") == "viewer":
                    raise UserInputError(
                        f"$ASSAY_TOKEN is {me.get('name')!r}'s, a viewer's token on "
                        f"{public_url(now)}: the trials and the agent write there",
                        hint="export ASSAY_TOKEN=<a researcher's token of that server> "
                             "(`assay token create NAME --role researcher` there)")
            row = control.get_agent(agent_id) if agent_id else None
        finally:
            if hasattr(control, "close"):
                control.close()
    if row is None and agent_id:  # an agent kept here (its trials logged here, or to a
        from ..store.control import LanceControlStore  # server too old to keep agents)
        from ..store.ingest import IngestLock
        from ..store.lance import LanceStore

        row = LanceControlStore(LanceStore(root), IngestLock(root)).get_agent(agent_id)
    if row is None:
        return None
    saved = row.state.get("runs_server") or None
    if saved != (None if now is None else public_url(now)):
        where = f"the server {saved}" if saved else f"the data directory {root}"
        raise UserInputError(
            f"agent {agent_id}'s trials logged to {where}, and trials started now would log "
            f"to {'the server ' + public_url(now) if now else 'the data directory'}",
            hint=(f"export ASSAY_SERVER={saved} (and ASSAY_TOKEN) before resuming it"
                  if saved else "unset ASSAY_SERVER before resuming it"))
    return row


def prior_trials(data_dir: Path, objective: Objective, server: str | None = None) -> list[Any]:
    """Finished runs of the project whose configs lie in the objective's space and that
    report its metric: warm-start evidence for the searcher (not counted in the budget).
    Read from ``server`` (with ``$ASSAY_TOKEN``) when the trials log to one."""
    import math

    from ..policies import TrialResult, TrialStatus, as_space

    space = as_space(dict(objective.space))
    out = []
    for run_id, status, config, summary in _project_runs(data_dir, objective.project, server):
        if status != "completed":
            continue
        v = summary.get(objective.metric)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        try:
            cfg = space.validate({k: config[k] for k in space if k in config})
        except UserInputError:  # a run outside the space is simply not evidence
            continue
        out.append(TrialResult(run_id, cfg, TrialStatus.COMPLETED, (), float(v)))
    return out


def _project_runs(data_dir: Path, project: str, server: str | None
                  ) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(run id, status, config, summary values) of the project's runs."""
    if server is None:
        from ..store.lance import LanceStore
        from ..store.records import run_from_row

        runs = [run_from_row(row) for row in LanceStore(data_dir).runs_table(project).to_pylist()]
        return [(r.run_id, str(r.status), dict(r.config), r.summary_values()) for r in runs]
    from ..sdk.remote_api import RemoteReader
    from ..store.canonical import NON_FINITE_STRINGS

    # The listing's JSON, not a frame: a column mixing types would cast every run's value.
    with RemoteReader(server, os.environ.get("ASSAY_TOKEN") or None) as reader:
        items = list(reader.run_items(project))
    return [(str(i["run_id"]), str(i["status"]), dict(i.get("config") or {}),
             {k: NON_FINITE_STRINGS.get(v, v) if isinstance(v, str) else v
              for k, v in (i.get("summary") or {}).items()}) for i in items]


class StoreArtifactHooks:
    """Re-evaluation's view of the graph: latest artifact versions, stale marks, lineage."""

    def __init__(self, data_dir: Path) -> None:
        from ..sdk.graph import open_graph

        self.graph = open_graph(data_dir)

    def latest_version(self, name: str) -> int | None:
        return self.graph.artifacts._aliases(name).get("latest")  # type: ignore[no-any-return]

    def mark_stale(self, run_ids: list[str], reason: str) -> None:
        from dataclasses import replace

        store = self.graph.store
        with self.graph.lock:
            runs = [r for r in (store.get_run(i) for i in run_ids) if r is not None]
            store.upsert_runs([replace(r, tags=tuple(sorted({*r.tags, "stale"}))) for r in runs])
        for r in run_ids:
            self.graph.audit.record("agent", "run.stale", f"run:{r}", reason)

    def link(self, old_run: str, new_run: str) -> None:
        from ..store.lineage import add_edges, run_node

        with self.graph.lock:
            add_edges(self.graph.store, [(run_node(old_run), run_node(new_run), "reevaluated_as")])


def _build_agent(spec: dict[str, Any], data_dir: str, agent_id: str, ahead: bool = True,
                 autoscaling: bool | None = None) -> Any:
    from ..scheduler.metrics import StoreMetricSource
    from ..scheduler.ray_backend import RayBackend
    from .agent import Agent

    objective = Objective.from_dict(spec)
    root = Path(data_dir)
    backend = RayBackend(data_dir=root, autoscaling=autoscaling)
    server = trials_server()  # trials log there: their curves are read there
    metrics = StoreMetricSource(root, keys=[objective.metric], server=server)
    control = control_for(root, server)  # the agent lives there too, if the server keeps agents
    prior = prior_trials(root, objective, server) if objective.warm_start else []
    hooks = StoreArtifactHooks(root) if objective.reevaluate_on else None
    return Agent(objective, backend, metrics, control, agent_id=agent_id, prior=prior,
                 ahead=ahead, artifacts=hooks)


class _AgentLoop:
    """What runs inside the Ray actor: the agent and a thread stepping it."""

    def __init__(self, spec: dict[str, Any], data_dir: str, agent_id: str,
                 poll_interval: float, autoscaling: bool | None = None) -> None:
        import threading

        self.agent = _build_agent(spec, data_dir, agent_id, autoscaling=autoscaling)
        self.poll_interval = poll_interval
        self.error = ""
        self._t = threading.Thread(target=self._loop, name="assay-agent-loop", daemon=True)
        self._t.start()

    def _loop(self) -> None:
        import traceback

        try:
            self.agent.run(self.poll_interval)
        except Exception as e:  # noqa: BLE001 - any crash of the loop is the agent's failure, recorded
            self.error = traceback.format_exc()
            try:  # its trials are stopped and ended, each with a decision
                self.agent.fail(f"{type(e).__name__}: {e}",
                                "see the traceback; fix the objective or the train function")
            except Exception:  # noqa: BLE001 - the failure itself is still recorded
                self.agent.status = AgentStatus.FAILED
                self.agent._persist(force=True)

    def snapshot(self) -> dict[str, Any]:
        a = self.agent
        counts: dict[str, int] = {}
        for t in list(a.trials.values()):
            counts[str(t.status)] = counts.get(str(t.status), 0) + 1
        rem = a.ledger.remaining()
        return {"agent_id": a.agent_id, "status": str(a.status), "counts": counts,
                "best": None if a.best is None else {"trial_id": a.best.trial_id,
                                                     "config": a.best.config,
                                                     "value": a.best.final},
                "remaining": {"trials": rem.trials, "wall_clock_s": rem.wall_clock_s},
                "error": self.error, "failure": a.failure, "failure_hint": a.failure_hint,
                "runs_server": getattr(a.metrics, "server", None),
                "agent_server": _public(getattr(a.control, "server", None)),
                # The status turns terminal inside a step; the step then writes its decisions
                # and state. Only a finished loop thread means everything is in the graph.
                "done": not self._t.is_alive()}


_ACTOR: list[Any] = []
_ACTOR_LOCK = threading.Lock()


def _actor_class() -> Any:
    """The Ray actor class of the agent loop, made once per process (two threads starting
    agents at once must not declare it twice)."""
    with _ACTOR_LOCK:
        if not _ACTOR:
            ray = ensure_ray()
            _ACTOR.append(ray.remote(num_cpus=0, max_restarts=3, max_task_retries=-1)(_AgentLoop))
        return _ACTOR[0]


@dataclass
class SweepResult:
    """How a sweep ended."""

    agent_id: str
    status: str
    best_config: dict[str, Any] | None
    best_value: float | None
    best_run: str | None
    trials: dict[str, int] = field(default_factory=dict)
    report: Path | None = None
    runs_server: str | None = None  # the assay server its trials logged to, if any
    agent_server: str | None = None  # the one that keeps the agent, if not the directory


def run_objective(objective: Objective, *, dir: str | os.PathLike[str] | None = None,
                  address: str | None = None, agent_id: str | None = None,
                  poll_interval: float = 0.5,
                  on_progress: Callable[[dict[str, Any]], None] | None = None) -> SweepResult:
    """Run ``objective`` until its budget is spent (or it is stopped); returns the result.

    ``agent_id`` resumes that agent from the graph (a stopped and restarted ``assay run``).
    """
    import secrets

    from ..sdk.settings import data_dir

    root = data_dir(dir)
    check_trials_server(root, agent_id)  # and that the server its trials log to answers
    ray = ensure_ray(address)
    check_resources(objective, address=address)  # an embedded Ray too small: refused now
    aid = agent_id or "ag" + "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789")
                                     for _ in range(10))
    actor_cls = _actor_class()
    # An embedded local Ray never grows: a trial larger than it fails the agent. A joined
    # cluster may (an autoscaler): the agent waits for it, with a decision saying why.
    actor = actor_cls.options(name=f"assay-agent-{aid}").remote(
        objective.to_dict(), str(root), aid, poll_interval, _joins_cluster(address))
    snap: dict[str, Any] = {}
    down_since: float | None = None
    while True:
        try:
            snap = ray.get(actor.snapshot.remote(), timeout=60)
            down_since = None
        except (ray.exceptions.RayActorError, ray.exceptions.RaySystemError) as e:
            from ..errors import AssayError

            if "creation task" in str(e):  # __init__ raised: a restart cannot help
                raise AssayError(f"agent {aid} could not start: {e}",
                                 hint="fix the objective or the train function") from None
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since > 300:
                raise AssayError(f"agent {aid} has been down for 5 minutes: {e}",
                                 hint="check the Ray logs; `assay run --agent-id "
                                 f"{aid}` resumes it") from None
            time.sleep(1.0)  # the actor is restarting; it restores itself from the graph
            continue
        except Exception as e:  # "Can't find actor": its registration is not visible yet
            if "find actor" not in str(e):
                raise
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since > 120:
                raise
            time.sleep(0.5)
            continue
        if on_progress is not None:
            on_progress(snap)
        if snap.get("done"):
            break
        time.sleep(poll_interval)
    ray.kill(actor, no_restart=True)
    if snap.get("error"):
        from ..errors import AssayError

        raise AssayError(f"agent {aid} failed:\n{snap['error']}",
                         hint="see the traceback; fix the objective or the train function")
    if snap.get("failure"):
        from ..errors import AssayError

        raise AssayError(f"agent {aid} failed: {snap['failure']}",
                         hint=str(snap.get("failure_hint") or ""))
    best = snap.get("best") or {}
    report = None
    try:
        from .report import write_report

        report = write_report(root, aid, control=control_for(root, trials_server()))
    except Exception:  # a report that cannot be written must not lose the sweep's result
        import logging

        logging.getLogger(__name__).exception("the sweep report of %s could not be written", aid)
    return SweepResult(aid, snap["status"], best.get("config"), best.get("value"),
                       best.get("trial_id"), snap.get("counts", {}), report,
                       snap.get("runs_server"), snap.get("agent_server"))
