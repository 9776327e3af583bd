"""Fixes from a supervisor review of the live fleet: the agent page's "best so far" chart
counts completed trials only, as its card does; a live run's chart counts each point once
(the stream resends some) and says "shown" only when it holds fewer than the run has;
durations and "… ago" times are rounded before they are split ("12m 00s", not "11m 60s");
an override the server stores with a warning (the agent may be dead) shows the warning; a
trial whose run finished shows the run's status, not the agent's lagging "running"; Compare
and the Runs table default to the objective's metric, else to a metric before a counter
such as epoch; an ended agent's budget shows nothing left, and a trials limit lowered below
what launched says so instead of "7 / 3 · 0 left"."""

from __future__ import annotations

import re
import time
from typing import Any

import assay
import pytest
from assay.store import control
from assay.store.control import AgentRow, AgentStatus, Decision, LanceControlStore
from assay.store.ingest import IngestLock
from assay.store.lance import LanceStore
from dash_support import AGENT_ID, ingested, patch_agent
from loopback_server import wait_for

pytestmark = pytest.mark.integration

def test_best_so_far_chart_counts_completed_trials_only_as_its_card_does(tab, dash) -> None:
    failed, live = dash["trials"][3], dash["live"].id

    def edit(body: dict[str, Any]) -> None:
        for tr in body["trials"]:
            if tr["trial_id"] == failed:
                tr["final"] = 0.99  # the failed trial's last value, above every completed one
            if tr["trial_id"] == live:
                tr["final"] = 0.98  # a running trial's latest value
    t = tab("viewer")
    patch_agent(t.page, edit)
    page = t.open(f"#/agents/{AGENT_ID}")
    page.wait_for_selector(".chart[data-best]")
    page.wait_for_function("() => document.querySelector('.chart[data-best]').dataset.best !== ''")
    best = float(page.get_attribute(".chart[data-best]", "data-best"))
    card = page.inner_text(".stat .value.best")
    assert best == pytest.approx(float(card), abs=1e-3), (best, card)
    assert best < 0.96
    assert page.inner_text(".stat .detail a") == dash["best"]
    assert not t.errors, t.errors


def test_a_live_runs_chart_counts_each_point_once(tab, dash) -> None:
    data_dir = dash["data_dir"]
    run = assay.init(project="ptsqa", name="live-count", dir=data_dir, system_metrics_interval=0,
                     capture=False)
    try:
        for s in range(41):
            run.log({"loss": 1.0 / (s + 1)}, step=s)
        run.flush()
        wait_for(lambda: ingested(data_dir, run.id, 40), timeout=30)
        t = tab("viewer")
        page = t.open(f"#/runs/{run.id}")
        page.wait_for_function("() => performance.getEntriesByName('assay:run-chart-rendered').length > 0")
        meta = '.chart-card[data-key="loss"] .chart-title .meta'
        page.wait_for_timeout(2500)  # the stream resumes before the history's end: resends
        assert page.inner_text(meta).startswith("41 pts · last"), page.inner_text(meta)
        for s in range(41, 46):
            run.log({"loss": 1.0 / (s + 1)}, step=s)
        run.flush()
        page.wait_for_function(
            "() => document.querySelector('.chart-card[data-key=\"loss\"]').dataset.last === '45'",
            timeout=20_000)
        assert page.inner_text(meta).startswith("46 pts · last"), page.inner_text(meta)
        assert not t.errors, t.errors
    finally:
        run.finish()


def test_metric_grid_counts_resent_points_once_and_says_shown_only_when_downsampled(tab) -> None:
    t = tab("viewer")
    page = t.open("#/")
    got = page.evaluate("""async () => {
      const { MetricGrid } = await import('/ui/js/metrics.js');
      const el = document.createElement('div');
      el.style.width = '500px';
      document.body.append(el);
      const pts = (key) => el.querySelector(`.chart-card[data-key="${key}"] .meta`).textContent.split(' · ')[0];
      const g = new MetricGrid(el, 'nosuchrun', ['all', 'down'], { series: {
        all: { step: [0, 1, 2], value: [1, 2, 3], time: [0, 0, 0], total: 3 },
        down: { step: [0, 50, 99], value: [1, 2, 3], time: [0, 0, 0], total: 100 } } });
      await g.load();
      const out = [pts('all'), pts('down')];
      // The stream resends what the history read held, then brings new points.
      g.append({ all: { step: [1, 2, 3], value: [2, 3, 4], time: [0, 0, 0] },
                 down: { step: [98, 99, 100], value: [2, 3, 4], time: [0, 0, 0] } });
      out.push(pts('all'), pts('down'));
      g.append({ all: { step: [3], value: [4], time: [0] } });  // the same point again
      out.push(pts('all'));
      g.destroy();
      el.remove();
      return out;
    }""")
    assert got == ["3 pts", "100 pts (3 shown)", "4 pts", "101 pts (4 shown)", "4 pts"]
    assert not t.errors, t.errors


def test_durations_and_ago_times_round_before_they_split(tab) -> None:
    t = tab("viewer")
    page = t.open("#/")
    got = page.evaluate("""async () => {
      const { fmtDuration, fmtAgo } = await import('/ui/js/format.js');
      const now = 1_000_000;
      return {
        dur: [0.25, 0.9996, 59.4, 59.6, 719.6, 3599.4, 3599.7, 3661, 7199.9, 86399, 90000, 2.5 * 86400 + 1799]
          .map(fmtDuration),
        ago: [5, 59.4, 59.6, 61, 3569, 3590, 3600 * 23.4, 3600 * 23.6].map((d) => fmtAgo(now - d, now)),
      };
    }""")
    assert got["dur"] == ["250 ms", "1s", "59s", "1m 00s", "12m 00s", "59m 59s", "1h 00m", "1h 01m",
                          "2h 00m", "1d 0h", "1d 1h", "2d 12h"]
    assert got["ago"][:7] == ["5 s ago", "59 s ago", "1 min ago", "1 min ago", "59 min ago",
                              "1 h ago", "23 h ago"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", got["ago"][7])  # a day ago: the date
    assert not t.errors, t.errors


def _save_agent(dash: dict[str, Any], row: AgentRow, *, age: float = 0.0, monkeypatch: Any = None) -> None:
    """Save an agent row as if its process last reported ``age`` seconds ago."""
    ctl = LanceControlStore(LanceStore(dash["data_dir"]), IngestLock(dash["data_dir"]))
    if age:
        class Then:
            @staticmethod
            def time() -> float:
                return time.time() - age
        monkeypatch.setattr(control, "time", Then)
    try:
        ctl.save_agent(row)
    finally:
        if age:
            monkeypatch.undo()


def test_an_override_to_a_silent_agent_shows_the_servers_warning_and_a_refusal_its_reason(
        tab, dash, monkeypatch) -> None:
    aid = "agsilentqa01"
    spec = {"name": "silent-qa", "project": "silentqa", "metric": "loss", "mode": "min",
            "owner": "researcher", "budget": {"trials": 4}}
    row = AgentRow(aid, "silent-qa", "silentqa", spec, AgentStatus.RUNNING,
                   state={"trials": {}, "budget": spec["budget"], "concurrency": 1}, hlc="1")
    _save_agent(dash, row, age=600, monkeypatch=monkeypatch)  # silent for 10 minutes
    try:
        t = tab("supervisor")
        page = t.page
        paused = {"on": True}

        def as_paused(route: Any) -> None:  # the page believes it paused (a stale read)
            resp = route.fetch()
            body = resp.json()
            if paused["on"]:
                body["status"] = "paused"
            route.fulfill(response=resp, json=body)
        page.route(re.compile(rf".*/api/agents/{aid}$"), as_paused)
        t.open(f"#/agents/{aid}")
        # A resume the server refuses (409: the agent is not paused): the dialog stays open
        # with the server's reason, and an error toast says it too.
        page.click('button[data-action="resume"]')
        page.fill("form.ask textarea[name=reason]", "go on")
        page.click("form.ask button[type=submit]")
        page.wait_for_selector(".toast.error")
        assert "is not paused" in page.inner_text(".toast.error")
        assert "nothing to resume" in page.inner_text("form.ask .form-error")
        page.click("form.ask button:has-text('Cancel')")
        paused["on"] = False
        page.wait_for_function("() => !document.querySelector('button[data-action=\"pause\"]').disabled",
                               timeout=10_000)
        # A pause it stores, warning that the agent has not reported for 600 s.
        page.click('button[data-action="pause"]')
        page.fill("form.ask textarea[name=reason]", "looks stuck")
        page.click("form.ask button[type=submit]")
        page.wait_for_selector(".toast.ok >> text=pause")
        page.wait_for_selector(".toast.warn")
        warn = page.inner_text(".toast.warn")
        assert "has not reported for" in warn and "may be dead" in warn, warn
        assert page.evaluate("() => getComputedStyle(document.querySelector('.toast.warn')).borderLeftColor") != \
            page.evaluate("() => getComputedStyle(document.querySelector('.toast.ok')).borderLeftColor")
        t.shot("agent-silent-override-warning")
        assert not t.unexpected("status of 409"), t.errors
    finally:
        _save_agent(dash, AgentRow(aid, "silent-qa", "silentqa", spec, AgentStatus.STOPPED,
                                   state=row.state, hlc="2"))


def test_a_trial_whose_run_finished_shows_the_runs_status_and_no_stop_button(tab, dash) -> None:
    done, failed, live = dash["trials"][0], dash["trials"][3], dash["live"].id

    def edit(body: dict[str, Any]) -> None:  # the agent's saved state lags (or it died)
        for tr in body["trials"]:
            if tr["trial_id"] in (done, failed):
                tr["status"] = "running"
    t = tab("supervisor")
    patch_agent(t.page, edit)
    page = t.open(f"#/agents/{AGENT_ID}")
    page.wait_for_selector(f'tr[data-key="{live}"] button:has-text("stop")')
    pill = lambda tid: page.inner_text(f'tr[data-key="{tid}"] .pill')
    page.wait_for_function(f"() => document.querySelector('tr[data-key=\"{done}\"] .pill').textContent === 'completed'",
                           timeout=10_000)
    assert pill(failed) == "failed"
    assert pill(live) == "running"
    page.wait_for_timeout(3000)  # a refresh redraws the table from the same reads
    assert (pill(done), pill(failed), pill(live)) == ("completed", "failed", "running")
    for tid in (done, failed):
        assert page.locator(f'tr[data-key="{tid}"] button:has-text("stop")').count() == 0
    assert page.locator(f'tr[data-key="{live}"] button:has-text("stop")').count() == 1
    assert "saved state says running" in (page.get_attribute(f'tr[data-key="{done}"] .pill', "title") or "")
    assert not t.errors, t.errors


def _seed_keys_project(dash: dict[str, Any], project: str) -> list[str]:
    """Two finished runs logging epoch, lr, train/loss and val/acc (alphabetically, the
    counter and the learning rate come first)."""
    data_dir, ids, runs = dash["data_dir"], [], []
    for i, lr in enumerate((0.5, 0.25)):  # not what other tests filter for (lr0.0)
        with assay.init(project=project, name=f"{project}-{i}", dir=data_dir, config={"lr": lr},
                        system_metrics_interval=0, capture=False) as run:
            for s in range(5):
                run.log({"epoch": s, "lr": lr, "train/loss": 1 / (s + 1), "val/acc": s / 5}, step=s)
        ids.append(run.id)
        runs.append(run.id)
    wait_for(lambda: all(ingested(data_dir, r, 4, (r,)) for r in runs), timeout=30)
    return ids


def test_compare_and_the_runs_table_default_to_the_objectives_metric(tab, dash) -> None:
    ids = _seed_keys_project(dash, "objqa")
    aid = "agobjqa01"
    spec = {"name": "objqa", "project": "objqa", "metric": "val/acc", "mode": "max",
            "owner": "researcher", "budget": {"trials": 2}}
    trials = {r: {"config": {"lr": 0.1}, "status": "completed", "final": 0.8, "origin": "searcher",
                  "reason": "", "curve": []} for r in ids}
    _save_agent(dash, AgentRow(aid, "objqa", "objqa", spec, AgentStatus.FINISHED,
                               state={"trials": trials, "budget": spec["budget"]}, hlc="1"))
    ctl = LanceControlStore(LanceStore(dash["data_dir"]), IngestLock(dash["data_dir"]))
    ctl.add_decisions([Decision(aid, "objqa", r, "launch", "launch (random)", {}, f"{50 + n:04d}",
                                time.time()) for n, r in enumerate(ids)])
    plain = _seed_keys_project(dash, "plainqa")  # no agent: a metric, not the epoch counter
    t = tab("viewer")
    page = t.page
    for run_ids, want in ((ids, "val/acc"), (plain, "lr")):
        t.open(f"#/compare?ids={','.join(run_ids)}")
        page.wait_for_function("() => performance.getEntriesByName('assay:compare-rendered').length > 0",
                               timeout=15_000)
        assert page.input_value(".chart-card .toolbar select") == want
        assert page.inner_text("#pc-key") == want
    for project, first in (("objqa", "summary.val/acc"), ("plainqa", None)):
        t.open(f"#/runs?project={project}")
        page.wait_for_selector("table.data thead th[title^='summary.']")
        cols = page.eval_on_selector_all("table.data thead th[title^='summary.']", "ths => ths.map((th) => th.title)")
        assert len(cols) == 3 and "summary.epoch" not in cols, cols
        assert first is None or cols[0] == first, cols
    assert not t.errors, t.errors


def test_budget_wording_for_an_ended_agent_and_a_lowered_trials_limit(tab, dash) -> None:
    t = tab("viewer")
    page = t.page
    st = {"status": "finished", "lowered": False}

    def agent(body: dict[str, Any]) -> None:
        body["status"] = st["status"]
    patch_agent(page, agent)

    def fleet(route: Any) -> None:
        resp = route.fetch()
        body = resp.json()
        body["budget"]["wall_clock_s"] = {"used": 694.4, "limit": 1200, "left": 505.6, "fraction": 0.58}
        if st["lowered"]:
            body["budget"]["trials"] = {"used": 7, "limit": 3, "left": 0, "fraction": 1}
        route.fulfill(response=resp, json=body)
    page.route(re.compile(rf".*/api/fleet/agents/{AGENT_ID}(\?.*)?$"), fleet)
    t.open(f"#/agents/{AGENT_ID}")
    order = ["trials", "wall_clock_s"]  # the panel's first rows
    row = lambda k: page.locator(".budget .v").nth(order.index(k)).inner_text()
    page.wait_for_function("() => document.querySelectorAll('.budget .v').length >= 2")
    assert row("wall_clock_s") == "11m 34s / 20m 00s", row("wall_clock_s")  # finished: no "left"
    assert row("trials") == "5 / 8"
    assert "left" not in page.inner_text(".budget")
    st.update(status="running", lowered=True)
    page.wait_for_function("() => document.querySelector('.budget .v').textContent.startsWith('7 ')",
                           timeout=10_000)
    assert row("trials") == "7 launched / limit 3 (lowered)"
    assert row("wall_clock_s") == "11m 34s / 20m 00s · 8m 26s left"  # running: what is left
    assert not t.errors, t.errors
