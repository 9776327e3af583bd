"""The fleet overview's counts and host figures (a supervisor review's findings)."""

from __future__ import annotations

import assay
import pytest
from assay.api.fleet import _resources

pytestmark = pytest.mark.integration


class _Index:
    def __init__(self, details):
        self.details = details

    def detail(self, rid):
        return self.details.get(rid)


def test_a_run_without_system_metrics_does_not_blank_its_hosts_figures() -> None:
    sampled = {"host": "h", "updated_at": 10.0, "summary": {
        "sys/cpu.system_percent": 54.0, "sys/memory.system_used_percent": 40.0}}
    quiet = {"host": "h", "updated_at": 11.0, "summary": {"loss": 0.5}}  # newer, no sys/
    res = _resources(_Index({"a": sampled, "b": quiet}), ["a", "b"])
    [host] = res["hosts"]
    assert (host["runs"], host["cpu_percent"], host["memory_used_percent"]) == (2, 54.0, 40.0)
    assert res["cpu_percent_mean"] == 54.0


def test_each_hosts_gpu_lists_the_running_runs_that_use_it() -> None:
    def gpus(**mine):
        s = {"sys/cpu.system_percent": 50.0}
        for i in range(2):
            s[f"sys/gpu.{i}.utilization_percent"] = 90.0
            s[f"sys/gpu.{i}.memory_used_mb"] = 1000.0
        s.update({f"sys/gpu.{i[1:]}.process_memory_used_mb": v for i, v in mine.items()})
        return s

    details = {"a": {"host": "h", "updated_at": 10.0, "summary": gpus(g0=900.0)},
               "b": {"host": "h", "updated_at": 11.0, "summary": gpus(g1=700.0)},
               "c": {"host": "h2", "updated_at": 12.0, "summary": gpus(g1=100.0)},
               "d": {"host": "h", "updated_at": 13.0, "summary": gpus()}}  # a CPU trial
    res = _resources(_Index(details), ["a", "b", "c", "d"])
    h, h2 = res["hosts"]
    assert [(g["index"], g["runs"]) for g in h["gpus"]] == [("0", ["a"]), ("1", ["b"])]
    assert [(g["index"], g["runs"]) for g in h2["gpus"]] == [("0", []), ("1", ["c"])]
    assert "process_memory_used_mb" not in h["gpus"][0]  # per run, not the host's
    assert res["gpu_count"] == 4


def test_the_failed_count_and_alert_counts_are_not_capped_by_the_list(server, client,
                                                                      data_dir) -> None:
    kw = {"dir": data_dir, "system_metrics_interval": None, "capture": False}
    for i in range(23):
        run = assay.init(project="fleetcap", **kw)
        run.log({"loss": float(i)})
        run.finish("failed" if i % 2 else "crashed", error=f"boom {i}")
    f = client("viewer").get("/api/fleet").json()
    assert f["runs"]["failed_recent"] == 23  # was the list's cap, 20
    assert len([a for a in f["alerts"] if a["kind"].startswith("run_")]) == 20  # newest 20
    assert f["alert_counts"] == {"error": 23, "warn": 0}


def test_an_agent_silent_for_three_heartbeats_is_flagged_as_the_override_api_warns(
        server, client, data_dir, monkeypatch) -> None:
    """helper-63: a killed agent showed as healthy for 10 minutes (the fleet's stall_after)
    while the override API already warned after 3 missed state saves (180 s); a paused
    agent was never flagged at all."""
    import time

    from assay.api import fleet
    from assay.store.control import AGENT_HEARTBEAT_S, AgentRow, AgentStatus, LanceControlStore
    from assay.store.ingest import IngestLock
    from assay.store.lance import LanceStore

    ctl = LanceControlStore(LanceStore(data_dir), IngestLock(data_dir))
    spec = {"name": "o", "project": "p", "metric": "m", "mode": "max"}
    for aid, status in (("agdead0001", AgentStatus.RUNNING), ("agdead0002", AgentStatus.PAUSED),
                        ("agdone0001", AgentStatus.FINISHED)):
        ctl.save_agent(AgentRow(aid, "o", "p", spec, status=status, hlc="1"))  # saved now
    saved = time.time()

    def stalled_after(silent: float) -> tuple[set[str], dict]:
        monkeypatch.setattr(fleet.time, "time", lambda: saved + silent)
        f = client("viewer").get("/api/fleet").json()
        return {a["agent_id"] for a in f["agents"] if a["stalled"]}, f

    assert stalled_after(1.5 * AGENT_HEARTBEAT_S)[0] == set()
    got, f = stalled_after(3.5 * AGENT_HEARTBEAT_S)  # well before the runs' 600 s
    assert got == {"agdead0001", "agdead0002"}
    [msg] = [a["message"] for a in f["alerts"] if a["target"] == "agdead0001"]
    assert "has not reported for" in msg and "may be dead" in msg
    assert client("viewer").get("/api/fleet/agents/agdead0002").json()["stalled"] is True
