"""The routes behind the dashboard: its public page and assets, artifacts, lineage,
verification, a run's diff, and the fleet overview (over HTTP against the seeded server)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from assay.api.fleet import agent_budget
from assay.store.control import AgentRow, AgentStatus
from dash_support import AGENT_ID, git_checkout, ingested
from loopback_server import wait_for


def _client(dash: dict[str, Any], role: str | None = "viewer") -> httpx.Client:
    headers = {"Authorization": f"Bearer {dash['tokens'][role]}"} if role else {}
    return httpx.Client(base_url=dash["server"].url, headers=headers, timeout=60)


@pytest.mark.integration
def test_the_page_and_its_assets_are_public_code_behind_a_strict_csp(dash) -> None:
    anon = _client(dash, None)
    r = anon.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    js = anon.get("/ui/js/main.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    again = anon.get("/ui/js/main.js", headers={"If-None-Match": js.headers["etag"]})
    assert again.status_code == 304
    assert anon.get("/ui/vendor/uplot/LICENSE").status_code == 200
    for bad in ("/ui/../dashboard.py", "/ui/%2e%2e/dashboard.py", "/ui/js/nothing.js",
                "/ui/../../pyproject.toml", "/ui/"):
        r = anon.get(bad)
        assert r.status_code == 404 and "error" in r.json(), bad
    assert anon.get("/api/fleet").status_code == 401  # the data is not public
    assert anon.get("/api/artifacts").status_code == 401


@pytest.mark.integration
def test_artifacts_lineage_and_diff_routes(dash) -> None:
    c = _client(dash)
    # The seeded project's (other dashboard tests add artifacts in projects of their own).
    arts = c.get("/api/artifacts", params={"project": "vision"}).json()["artifacts"]
    assert {a["id"] for a in arts} == {"digits:v0", "mlp:v0"}
    one = c.get("/api/artifacts/digits/prod").json()
    assert one["aliases"] == ["latest", "prod"] and one["manifest"][0]["path"] == "digits.csv"
    r = c.get("/api/artifacts/digits/v7")
    assert r.status_code == 404 and "v0..v0" in r.json()["hint"]
    assert c.get("/api/artifacts/digits/not an alias").status_code == 400
    run = dash["trials"][0]
    g = c.get("/api/lineage", params={"node": f"run:{run}"}).json()
    kinds = {n["id"]: n for n in g["nodes"]}
    assert kinds[f"run:{run}"]["depth"] == 0 and kinds["artifact:digits:v0"]["depth"] == -1
    assert kinds["artifact:mlp:v0"]["depth"] == 1 and kinds["artifact:mlp:v0"]["type"] == "model"
    assert kinds[f"run:{dash['prep']}"]["label"] == "prep-data"
    down = c.get("/api/lineage", params={"node": "digits:prod", "direction": "down",
                                         "depth": 1}).json()
    assert down["root"] == "artifact:digits:v0"
    assert {n["run_id"] for n in down["nodes"] if n["kind"] == "run"} == set(dash["trials"])
    cut = c.get("/api/lineage", params={"node": "digits:v0", "direction": "down",
                                        "max_nodes": 2}).json()
    assert cut["truncated"] and len(cut["nodes"]) == 2
    for bad, status in [("run:nosuchrun", 404), ("nothing:v0", 404), ("bad node!", 400),
                        ("artifact:x", 400)]:
        assert c.get("/api/lineage", params={"node": bad}).status_code == status, bad
    r = c.get(f"/api/runs/{run}/diff")
    assert r.status_code == 404 and "captured no diff" in r.json()["error"]


@pytest.mark.integration
def test_a_run_from_a_dirty_checkout_serves_its_diff(dash, tmp_path) -> None:
    import assay

    with git_checkout(tmp_path / "code", dirty=True):
        run = assay.init(project="vision", name="dirty", dir=dash["data_dir"],
                         system_metrics_interval=0)
        run.log({"score": 0.5}, step=0)
        run.finish()
    wait_for(lambda: ingested(dash["data_dir"], run.id, 0, (run.id,)), timeout=30)
    r = _client(dash).get(f"/api/runs/{run.id}/diff")
    assert r.status_code == 200 and "+lr = 0.01  # tuned" in r.text


@pytest.mark.integration
def test_verify_one_run_and_all(dash) -> None:
    c = _client(dash)
    one = c.get("/api/verify", params={"run_id": dash["trials"][0]}).json()
    assert one["ok"] and one["sealed"] and one["checked"] == 1
    running = c.get("/api/verify", params={"run_id": dash["live"].id}).json()
    assert running["sealed"] is False and running["status"] == "running"
    assert c.get("/api/verify", params={"run_id": "nosuchrun"}).status_code == 404
    every = c.get("/api/verify").json()
    assert every["ok"] and every["checked"] >= 5


@pytest.mark.integration
def test_fleet_overview_counts_runs_resources_agents_and_alerts(dash) -> None:
    c = _client(dash)

    def sampled() -> dict | None:  # the live run's sys/ values arrive with its next ingest
        f = c.get("/api/fleet").json()
        hosts = f["resources"]["hosts"]
        return f if hosts and hosts[0]["cpu_percent"] is not None else None

    f = wait_for(sampled, timeout=30)
    assert f["runs"]["by_status"]["failed"] == 1 and f["runs"]["by_status"]["running"] >= 1
    assert f["resources"]["running_runs"] >= 1
    # Other tests of the session add agents of their own projects: this one is the seeded.
    [a] = [x for x in f["agents"] if x["agent_id"] == AGENT_ID]
    assert a["budget"]["trials"]["limit"] == 8
    assert a["budget"]["trials"]["used"] == 5 and a["best"]["trial_id"] == dash["best"]
    assert any(x["kind"] == "run_failed" and "CUDA out of memory" in x["message"]
               for x in f["alerts"])
    [last, *_] = [d for d in f["decisions"] if d["agent_id"] == AGENT_ID]
    assert last["kind"] == "stop" and "asha" in last["summary"]
    # With stall_after=1 the seeded agent counts as stalled a second after it was saved.
    wait_for(lambda: any(x["kind"] == "agent_stalled" for x in c.get(
        "/api/fleet", params={"stall_after": 1}).json()["alerts"]), timeout=10)
    one = c.get(f"/api/fleet/agents/{AGENT_ID}").json()
    assert one["budget"]["gpu_hours"]["limit"] == 2
    assert c.get("/api/fleet/agents/nosuchagent").status_code == 404
    assert c.get("/api/fleet", params={"stall_after": 0}).status_code == 400


def test_agent_budget_counts_running_attempts_and_stops_the_clock_when_finished() -> None:
    now = 10_000.0
    state = {"budget": {"trials": 4, "gpu_hours": 1, "wall_clock": "1h"},
             "trials": {"a": {}, "b": {}},
             "ledger": {"started_at": now - 1800, "runs": {
                 "a": {"cpus": 2, "gpus": 1, "cpu_s": 7200, "gpu_s": 1800, "started_at": None,
                       "finished": True},
                 "b": {"cpus": 1, "gpus": 1, "cpu_s": 0, "gpu_s": 0, "started_at": now - 900,
                       "finished": False}}}}
    row = AgentRow("ag1234", "o", "p", {"budget": {"trials": 2}}, AgentStatus.RUNNING, state,
                   updated_at=now - 60)
    b = agent_budget(row, now)
    assert b["trials"] == {"used": 2, "limit": 4.0, "left": 2.0, "fraction": 0.5}
    assert b["gpu_hours"]["used"] == pytest.approx(0.75) and b["gpu_hours"]["left"] == pytest.approx(0.25)
    assert b["cpu_hours"]["used"] == pytest.approx(2.25) and b["cpu_hours"]["limit"] is None
    assert b["wall_clock_s"]["used"] == pytest.approx(1800) and b["wall_clock_s"]["limit"] == 3600
    done = AgentRow("ag1234", "o", "p", {}, AgentStatus.FINISHED, state, updated_at=now - 600)
    assert agent_budget(done, now)["wall_clock_s"]["used"] == pytest.approx(1200)
    broken = AgentRow("ag1234", "o", "p", {}, AgentStatus.RUNNING,
                      {"budget": {"gpu_hours": "soon"}, "ledger": {"runs": {"x": {"gpu_s": "?"}}}})
    assert agent_budget(broken, now)["gpu_hours"]["limit"] is None  # never a 500


def test_the_decision_filter_offers_every_kind_an_agent_records() -> None:
    """The agent page's filter is a fixed list: a new decision kind must be added to it."""
    import re
    from pathlib import Path

    import assay

    root = Path(assay.__file__).parent
    recorded = {k for f in sorted((root / "agents").glob("*.py"))  # agent.py, recovery.py, ...
                for k in re.findall(r'_decide\([^,]+, "([a-z_]+)"', f.read_text())}
    page = (root / "api" / "static" / "js" / "pages" / "agent.js").read_text()
    options = re.search(r'title: "decision kind" \}, \[([^\]]*)\]', page)
    assert options is not None, "the decision-kind filter moved; update this test"
    offered = set(re.findall(r'"([a-z_]+)"', options.group(1)))
    assert {"launch", "stop", "resume", "fail"} <= recorded  # the pattern still finds them
    assert recorded <= offered, f"kinds missing from the filter: {sorted(recorded - offered)}"
