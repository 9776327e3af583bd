"""``GET /api/fleet``: the supervisor's overview in one read.

Runs by state, CPU/GPU use of the running runs (their latest ``sys/`` values, from the
cached runs index, so 10,000 runs cost milliseconds), every agent with its budget used and
left, the latest decisions with their reasons, and alerts (failed or crashed runs, running
runs that went silent, stalled agents). ``GET /api/fleet/agents/{id}`` is one agent's budget.

Budget use is recomputed from the agent's persisted ledger the same way
:class:`~assay.scheduler.budget.BudgetLedger` counts it: trials launched; CPU- and
GPU-hours as reserved resources times wall time of every attempt (running ones so far);
wall clock since the search started. A finished or stopped agent's clock stops at its last
update.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Annotated, Any

import polars as pl
from fastapi import APIRouter, Path, Query, Request

from ..errors import NotFoundError, UserInputError
from ..store.control import AGENT_HEARTBEAT_S, AgentRow, ControlStore
from .agents import control_store  # the one lazily made control store of the app
from .auth import Viewer
from .http import ERROR_RESPONSES, SafeJSONResponse, StrictJSONRoute, ok
from .query import RunsIndex

__all__ = ["agent_budget", "router"]

router = APIRouter(prefix="/api", tags=["fleet"], route_class=StrictJSONRoute,
                   responses=ERROR_RESPONSES)

_ACTIVE = ("running", "paused")
_FAILED = ("failed", "crashed")
AGENT_STALL_S = 3 * AGENT_HEARTBEAT_S  # as the override API's "it may be dead" warning


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _limit(budget: dict[str, Any], key: str, unit_s: float) -> float | None:
    from ..scheduler.budget import parse_duration

    v = budget.get(key)
    if v is None:
        return None
    try:
        return parse_duration(v) / unit_s if isinstance(v, str) else float(v)
    except (UserInputError, TypeError, ValueError):  # unreadable: shown as unlimited, not a 500
        return None


def agent_budget(a: AgentRow, now: float | None = None) -> dict[str, Any]:
    """Used, limit and left per budget dimension of one agent (None limit: unlimited)."""
    st = a.state or {}
    budget = dict(st.get("budget") or a.spec.get("budget") or {})
    if "wall_clock" in budget:
        budget["wall_clock_s"] = budget.pop("wall_clock")
    ledger = st.get("ledger") or {}
    runs = ledger.get("runs") or {}
    active = str(a.status) in _ACTIVE
    clock = (now or time.time()) if active else (a.updated_at or now or time.time())
    cpu_s = gpu_s = 0.0
    for r in runs.values():
        cpu_s += _num(r.get("cpu_s")) or 0.0
        gpu_s += _num(r.get("gpu_s")) or 0.0
        started = _num(r.get("started_at"))
        if started is not None and not r.get("finished"):
            wall = max(0.0, clock - started)
            cpu_s += (_num(r.get("cpus")) or 0.0) * wall
            gpu_s += (_num(r.get("gpus")) or 0.0) * wall
    started_at = _num(ledger.get("started_at"))
    trials = max(len(runs), len(st.get("trials") or {}))
    used = {"trials": trials, "cpu_hours": cpu_s / 3600.0, "gpu_hours": gpu_s / 3600.0,
            "wall_clock_s": None if started_at is None else max(0.0, clock - started_at)}
    limits = {"trials": _num(budget.get("trials")),
              "cpu_hours": _limit(budget, "cpu_hours", 3600.0),
              "gpu_hours": _limit(budget, "gpu_hours", 3600.0),
              "wall_clock_s": _limit(budget, "wall_clock_s", 1.0)}
    out: dict[str, Any] = {}
    for k in ("trials", "wall_clock_s", "cpu_hours", "gpu_hours"):
        u, lim = used[k], limits[k]
        left = None if lim is None or u is None else max(0.0, lim - u)
        frac = None if lim is None or u is None or lim <= 0 else min(1.0, u / lim)
        out[k] = {"used": u, "limit": lim, "left": left, "fraction": frac}
    return out


def _agent_row(a: AgentRow, now: float, stall_after: float) -> dict[str, Any]:
    st = a.state or {}
    trials = st.get("trials") or {}
    counts: dict[str, int] = {}
    for t in trials.values():
        counts[t.get("status", "?")] = counts.get(t.get("status", "?"), 0) + 1
    best_id = st.get("best")
    best = trials.get(best_id) if best_id else None
    # An agent saves its state every HEARTBEAT_S while it runs or is paused: three missed
    # saves, as the override API says, and it may be dead (runs get ``stall_after``).
    stalled = str(a.status) in ("running", "paused") and bool(a.updated_at) and \
        now - a.updated_at > min(stall_after, AGENT_STALL_S)
    return {"agent_id": a.agent_id, "objective": a.objective, "project": a.project,
            "status": str(a.status), "metric": a.spec.get("metric"),
            "mode": a.spec.get("mode"), "owner": a.spec.get("owner", ""),
            "searcher": a.spec.get("searcher"), "updated_at": a.updated_at,
            "concurrency": st.get("concurrency", a.spec.get("concurrency")),
            "counts": counts, "trials_total": len(trials), "stalled": stalled,
            "best": None if best is None else {"trial_id": best_id, "value": best.get("final"),
                                               "config": best.get("config")},
            "budget": agent_budget(a, now)}


class _Cache:
    """Agents and the latest decisions, re-read only when their tables change."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.key: tuple[int, int] | None = None
        self.agents: list[AgentRow] = []
        self.decisions: list[dict[str, Any]] = []


def _version(ctl: ControlStore, name: str) -> int:
    store = getattr(ctl, "store", None)
    tbl = store.table(name) if store is not None else None
    return -1 if tbl is None else int(tbl.version)


def _latest_decisions(ctl: ControlStore, n: int) -> list[dict[str, Any]]:
    import json

    store = getattr(ctl, "store", None)
    tbl = store.table("decisions") if store is not None else None
    if tbl is None:
        return []
    t = tbl.to_arrow()
    if t.num_rows == 0:
        return []
    df = pl.from_arrow(t)
    if not isinstance(df, pl.DataFrame):
        return []
    out = []
    for r in df.sort("hlc", descending=True).head(n).to_dicts():
        try:
            r["explanation"] = json.loads(r["explanation"] or "{}")
        except ValueError:
            r["explanation"] = {"raw": r["explanation"]}
        out.append(r)
    return out


def _agents_and_decisions(request: Request, n: int) -> tuple[list[AgentRow], list[dict[str, Any]]]:
    cache: _Cache | None = getattr(request.app.state, "fleet_cache", None)
    if cache is None:
        cache = request.app.state.fleet_cache = _Cache()
    ctl = control_store(request)
    key = (_version(ctl, "agents"), _version(ctl, "decisions"))
    with cache.lock:
        if key != cache.key or len(cache.decisions) < n:
            cache.agents = ctl.list_agents()
            cache.decisions = _latest_decisions(ctl, max(n, 50))
            cache.key = key
        return cache.agents, cache.decisions[:n]


def _resources(index: RunsIndex, running: list[str]) -> dict[str, Any]:
    hosts: dict[str, dict[str, Any]] = {}
    users: dict[tuple[str, str], list[str]] = {}  # (host, GPU index) -> runs on it
    for rid in running:
        d = index.detail(rid)
        if d is None:
            continue
        s = d.get("summary") or {}
        for k, v in s.items():
            if k.startswith("sys/gpu.") and k.endswith(".process_memory_used_mb") \
                    and (_num(v) or 0.0) > 0:
                users.setdefault((d.get("host") or "?", k[8:].partition(".")[0]), []).append(rid)
        h = hosts.setdefault(d.get("host") or "?", {
            "host": d.get("host") or "?", "runs": 0, "process_cpu_percent": 0.0, "rss_mb": 0.0,
            "cpu_percent": None, "memory_used_percent": None, "_at": -1.0, "gpus": {}})
        h["runs"] += 1
        h["process_cpu_percent"] += _num(s.get("sys/cpu.process_percent")) or 0.0
        h["rss_mb"] += _num(s.get("sys/memory.process_rss_mb")) or 0.0
        at = d.get("updated_at") or 0.0
        cpu = _num(s.get("sys/cpu.system_percent"))
        # Host-wide values: the most recent report wins, among the runs that sample them
        # (a run without system metrics must not blank the host's).
        if cpu is not None and at >= h["_at"]:
            h["_at"] = at
            h["cpu_percent"] = cpu
            h["memory_used_percent"] = _num(s.get("sys/memory.system_used_percent"))
            for k, v in s.items():
                if k.startswith("sys/gpu.") and not k.endswith(".process_memory_used_mb"):
                    idx, _, field = k[8:].partition(".")
                    h["gpus"].setdefault(idx, {"index": idx})[field] = _num(v)
    out_hosts = []
    for h in sorted(hosts.values(), key=lambda x: x["host"]):
        h.pop("_at")
        h["gpus"] = [{**h["gpus"][k], "runs": users.get((h["host"], k), [])}
                     for k in sorted(h["gpus"], key=lambda x: (len(x), x))]
        out_hosts.append(h)
    gpus = [g for h in out_hosts for g in h["gpus"]]
    utils = [g["utilization_percent"] for g in gpus if g.get("utilization_percent") is not None]
    cpus = [h["cpu_percent"] for h in out_hosts if h["cpu_percent"] is not None]
    return {
        "running_runs": len(running), "hosts": out_hosts[:200], "host_count": len(out_hosts),
        "process_cpu_percent": sum(h["process_cpu_percent"] for h in out_hosts),
        "rss_mb": sum(h["rss_mb"] for h in out_hosts),
        "cpu_percent_mean": sum(cpus) / len(cpus) if cpus else None,
        "gpu_count": len(gpus),
        "gpu_util_mean": sum(utils) / len(utils) if utils else None,
        "gpu_mem_used_mb": sum(g.get("memory_used_mb") or 0.0 for g in gpus),
        "gpu_mem_total_mb": sum(g.get("memory_total_mb") or 0.0 for g in gpus),
    }


def _run_brief(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in ("run_id", "name", "project", "status", "updated_at",
                                    "error")}


@router.get("/fleet", summary="Fleet overview: runs, resources, agents, decisions, alerts")
def fleet(request: Request, who: Viewer,
          stall_after: Annotated[float, Query(ge=1, le=86400 * 30, description=(
              "seconds without an update after which a running agent or run is an alert"))] = 600.0,
          failed_within: Annotated[float, Query(ge=1, le=86400 * 365, description=(
              "failed and crashed runs of this many recent seconds are alerts"))] = 86400.0,
          decisions: Annotated[int, Query(ge=0, le=200)] = 15) -> SafeJSONResponse:
    """Everything the overview page shows, in one response."""
    now = time.time()
    index: RunsIndex = request.app.state.index
    df = index.refresh()
    by_status: dict[str, int] = {}
    running: list[str] = []
    failed: list[dict[str, Any]] = []
    silent: list[dict[str, Any]] = []
    failed_total = silent_total = 0
    projects = 0
    if df.height and "status" in df.columns:
        by_status = {r["status"]: r["len"] for r in df.group_by("status").len().to_dicts()}
        projects = df["project"].n_unique()
        run_df = df.filter(pl.col("status") == "running")
        running = run_df["run_id"].to_list()
        silent = [_run_brief(r) for r in run_df.filter(pl.col("updated_at") < now - stall_after)
                  .sort("updated_at").head(20).to_dicts()]
        failed_df = df.filter(
            pl.col("status").is_in(list(_FAILED)) & (pl.col("updated_at") > now - failed_within))
        failed_total = failed_df.height  # the count is every one; the list, the newest 20
        failed = [_run_brief(r) for r in
                  failed_df.sort("updated_at", descending=True).head(20).to_dicts()]
        silent_total = run_df.filter(pl.col("updated_at") < now - stall_after).height
    agents, latest = _agents_and_decisions(request, decisions)
    agent_rows = [_agent_row(a, now, stall_after) for a in agents]
    alerts: list[dict[str, Any]] = []
    for a in agent_rows:
        if a["stalled"]:
            alerts.append({"level": "warn", "kind": "agent_stalled", "target": a["agent_id"],
                           "href": f"#/agents/{a['agent_id']}", "time": a["updated_at"],
                           "message": f"agent {a['objective']} ({a['agent_id']}) has not "
                                      f"reported for {_ago(now - a['updated_at'])}: it may be "
                                      "dead, and its trials with it"})
        if a["status"] == "failed":
            alerts.append({"level": "error", "kind": "agent_failed", "target": a["agent_id"],
                           "href": f"#/agents/{a['agent_id']}", "time": a["updated_at"],
                           "message": f"agent {a['objective']} ({a['agent_id']}) failed"})
    for r in failed:
        first = (r.get("error") or "").strip().splitlines()
        alerts.append({"level": "error", "kind": f"run_{r['status']}", "target": r["run_id"],
                       "href": f"#/runs/{r['run_id']}", "time": r["updated_at"],
                       "message": f"run {r['name'] or r['run_id']} ({r['project']}) "
                                  f"{r['status']}" + (f": {first[-1][:200]}" if first else "")})
    for r in silent:
        alerts.append({"level": "warn", "kind": "run_silent", "target": r["run_id"],
                       "href": f"#/runs/{r['run_id']}", "time": r["updated_at"],
                       "message": f"run {r['name'] or r['run_id']} ({r['project']}) is running "
                                  f"but silent for {_ago(now - (r['updated_at'] or now))}"})
    alerts.sort(key=lambda x: -(x["time"] or 0))
    return ok({"now": now, "runs": {"total": df.height if "run_id" in df.columns else 0,
                                    "by_status": by_status, "projects": projects,
                                    "failed_recent": failed_total},
               "resources": _resources(index, running), "agents": agent_rows,
               "decisions": latest, "alerts": alerts,
               # The alerts listed are capped (the newest 20 failed and 20 silent runs);
               # these count them all.
               "alert_counts": {
                   "error": failed_total + sum(a["status"] == "failed" for a in agent_rows),
                   "warn": silent_total + sum(bool(a["stalled"]) for a in agent_rows)}})


@router.get("/fleet/agents/{agent_id}", summary="One agent's budget used and left")
def agent_fleet(request: Request, who: Viewer,
                agent_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9]{4,64}$")],
                stall_after: Annotated[float, Query(ge=1, le=86400 * 30)] = 600.0,
                ) -> SafeJSONResponse:
    """The overview's row of one agent (status, counts, best, stalled, budget)."""
    a = control_store(request).get_agent(agent_id)
    if a is None:
        raise NotFoundError(f"no agent {agent_id!r}", hint="list agents with GET /api/agents")
    return ok(_agent_row(a, time.time(), stall_after))


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h"
