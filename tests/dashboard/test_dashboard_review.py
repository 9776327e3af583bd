"""Fixes from a supervisor review of the dashboard: the budget dialog starts from the agent's
current limits and sends only what changed; the pin dialog does not offer a config already
run and shows the server's refusal; "… ago" times stay current; a run's chart card shows a
NaN or infinite last value; deleted artifact versions look deleted; a trial's stop button is
for the agent's owner and supervisors only; the agent page's live stream, restarted when the
set of running trials changes, loses no point."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import assay
import pytest
from assay.api.auth import TokenStore
from assay.store.control import LanceControlStore
from assay.store.ingest import IngestLock
from assay.store.lance import LanceStore
from dash_support import AGENT_ID, ingested, patch_agent
from loopback_server import wait_for

pytestmark = pytest.mark.integration

def _overrides(dash: dict[str, Any], action: str) -> list[Any]:
    ctl = LanceControlStore(LanceStore(dash["data_dir"]), IngestLock(dash["data_dir"]))
    return [o for o in ctl.overrides(AGENT_ID) if o.action == action]


def test_budget_dialog_starts_from_the_current_limits_and_sends_only_the_changes(tab, dash) -> None:
    # An earlier override raised trials to 12 and set a wall clock and CPU-hours; the
    # objective's own budget still says 8 trials. Pre-filling that and sending everything
    # would silently undo the earlier override.
    def edit(body: dict[str, Any]) -> None:
        body["budget"] = {"trials": 12, "gpu_hours": 2, "wall_clock_s": 5400, "cpu_hours": 3}
    t = tab("supervisor")
    patch_agent(t.page, edit)
    page = t.open(f"#/agents/{AGENT_ID}")
    page.click('button[data-action="budget"]')
    form = "form.ask"
    page.wait_for_selector(f"{form} input[name=cpu_hours]")
    shown = {n: page.input_value(f"{form} input[name={n}]")
             for n in ("trials", "wall_clock", "cpu_hours", "gpu_hours")}
    assert shown == {"trials": "12", "wall_clock": "1h30m", "cpu_hours": "3", "gpu_hours": "2"}
    # Nothing changed: refused on the page, nothing sent.
    page.fill(f"{form} textarea[name=reason]", "longer search")
    page.click(f"{form} button[type=submit]")
    assert "Change at least one limit" in page.inner_text(f"{form} .form-error")
    n_before = len(_overrides(dash, "budget"))
    page.fill(f"{form} input[name=wall_clock]", "2h")
    page.fill(f"{form} input[name=cpu_hours]", "")  # emptied: no CPU-hour limit
    page.click(f"{form} button[type=submit]")
    page.wait_for_selector(".toast.ok >> text=budget")
    sent = wait_for(lambda: _overrides(dash, "budget")[n_before:], 10)
    assert sent[-1].params == {"budget": {"wall_clock": "2h", "cpu_hours": None}}
    assert page.locator(form).count() == 0
    assert not t.errors, t.errors


def test_pin_dialog_offers_no_config_already_run_and_shows_the_servers_refusal(tab, dash) -> None:
    t = tab("supervisor")
    page = t.open(f"#/agents/{AGENT_ID}")
    page.click('button[data-action="pin"]')
    form = "form.ask"
    page.wait_for_selector(f"{form} textarea[name=config]")
    best = page.evaluate(f"() => JSON.parse(document.querySelector('{form} textarea[name=config]').value)")
    assert best == {"lr": 0.1}  # the best trial's config, as a template ...
    assert "template" in page.inner_text(form) and dash["best"] in page.inner_text(form)
    n_before = len(_overrides(dash, "pin"))
    page.fill(f"{form} textarea[name=reason]", "near the best")
    page.click(f"{form} button[type=submit]")  # ... that cannot be sent unchanged
    assert "already ran this config" in page.inner_text(f"{form} .form-error")
    assert len(_overrides(dash, "pin")) == n_before
    # The server refuses a pin (a duplicate it knows of, say): the dialog stays open and says
    # why, and so does a toast.
    refusal = {"error": "the pinned config was run already (trial zz1)",
               "hint": "pin a config no trial has run"}
    page.route(re.compile(rf".*/api/agents/{AGENT_ID}/overrides$"),
               lambda r: r.fulfill(status=400, json=refusal) if r.request.method == "POST"
               else r.continue_())
    page.fill(f"{form} textarea[name=config]", '{"lr": 0.5}')
    page.click(f"{form} button[type=submit]")
    page.wait_for_selector(".toast.error")
    assert refusal["error"] in page.inner_text(".toast.error")
    assert refusal["error"] in page.inner_text(f"{form} .form-error")
    assert page.locator(form).count() == 1
    page.unroute(re.compile(rf".*/api/agents/{AGENT_ID}/overrides$"))
    page.click(f"{form} button[type=submit]")  # the server's answer this time
    page.wait_for_selector(".toast.ok >> text=pin")
    assert page.locator(form).count() == 0
    sent = _overrides(dash, "pin")[n_before:]
    assert [o.params for o in sent] == [{"config": {"lr": 0.5}}]
    assert not t.unexpected("status of 400"), t.errors


_AGO = """([sel, ts]) => {
  const el = document.querySelector(sel);
  el.__same = true;  // the same element, re-worded in place (the list is not redrawn)
  el.dataset.ts = ts;
}"""


def test_ago_times_stay_current_in_lists_that_are_not_redrawn(tab, dash) -> None:
    t = tab("supervisor")
    page = t.open("#/")
    page.wait_for_function("() => performance.getEntriesByName('assay:overview-rendered').length > 0")
    # A launch decision: decision lists are redrawn only when new decisions come.
    sel = ".list .item:has(.pill.s-launch) .when .ago"
    page.wait_for_selector(sel)
    page.evaluate(_AGO, [sel, str(time.time() - 2 * 3600)])
    page.wait_for_function("s => { const el = document.querySelector(s); return el.__same && el.textContent === '2 h ago'; }",
                           arg=sel, timeout=15_000)
    page.evaluate("() => { location.hash = '#/agents/" + AGENT_ID + "'; }")
    page.wait_for_selector(sel)
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3 * 3600))  # audit's form
    page.evaluate(_AGO, [sel, iso])
    page.wait_for_function("s => { const el = document.querySelector(s); return el.__same && el.textContent === '3 h ago'; }",
                           arg=sel, timeout=15_000)
    got = page.evaluate("""async () => {
      const { refreshAgo, ago } = await import('/ui/js/format.js');
      const box = document.createElement('div');
      box.append(ago(1000), ago(1000 + 59), ago(''));
      refreshAgo(box, 1000 + 3600 * 5);
      return [...box.children].map((e) => e.textContent);
    }""")
    assert got == ["5 h ago", "5 h ago", "–"]
    assert not t.errors, t.errors


def test_a_chart_card_shows_a_nan_or_infinite_last_value(tab, dash) -> None:
    data_dir = dash["data_dir"]
    with assay.init(project="nanqa", name="diverged", dir=data_dir, system_metrics_interval=0,
                    capture=False) as run:
        for s in range(10):
            run.log({"loss": 1.0 / (s + 1), "acc": s / 10, "gain": s}, step=s)
        run.log({"loss": float("nan"), "acc": float("-inf"), "gain": float("inf")}, step=10)
    wait_for(lambda: ingested(data_dir, run.id, 10, (run.id,)), timeout=30)
    t = tab("viewer")
    page = t.open(f"#/runs/{run.id}")
    page.wait_for_function("() => performance.getEntriesByName('assay:run-chart-rendered').length > 0")
    meta = {k: page.inner_text(f'.chart-card[data-key="{k}"] .chart-title .meta')
            for k in ("loss", "acc", "gain")}
    assert meta["loss"].endswith("last NaN"), meta
    assert meta["acc"].endswith("last -∞"), meta
    assert meta["gain"].endswith("last ∞"), meta
    assert not t.errors, t.errors


def test_metric_grid_keeps_a_nonfinite_last_value_through_appends_and_rewinds(tab) -> None:
    t = tab("viewer")
    page = t.open("#/")
    got = page.evaluate("""async () => {
      const { MetricGrid } = await import('/ui/js/metrics.js');
      const el = document.createElement('div');
      el.style.width = '500px';
      document.body.append(el);
      const g = new MetricGrid(el, 'nosuchrun', ['m'], { series: { m: { step: [0, 1], value: [1, 2], time: [0, 0], total: 2 } } });
      await g.load();
      const meta = () => el.querySelector('.meta').textContent.split(' · ')[1];
      const out = [meta()];
      g.append({ m: { step: [2], value: ['NaN'], time: [0] } }); out.push(meta());
      g.append({ m: { step: [3], value: ['-Infinity'], time: [0] } }); out.push(meta());
      g.append({ m: { step: [4], value: [5], time: [0] } }); out.push(meta());
      g.rewind(3); out.push(meta());
      g.destroy();
      el.remove();
      return out;
    }""")
    assert got == ["last 2", "last NaN", "last -∞", "last 5", "last NaN"]
    assert not t.errors, t.errors


def test_deleted_artifact_versions_look_deleted_and_are_not_links(tab, dash) -> None:
    data_dir = dash["data_dir"]
    kw = {"project": "delqa", "dir": data_dir, "system_metrics_interval": 0, "capture": False}
    src = data_dir.parent / "delqa.txt"
    src.write_text("abc" * 50)
    with assay.init(name="producer", **kw) as prod:
        prod.log_artifact(str(src), name="delqa-data", type="dataset")
    with assay.init(name="consumer", **kw) as run:
        run.use_artifact("delqa-data:latest")
        run.log_artifact(str(src), name="delqa-kept", type="dataset")  # stays: a link
    wait_for(lambda: ingested(data_dir, run.id, -1, (prod.id, run.id)), timeout=30)
    t = tab("supervisor")
    page = t.open("#/")
    got = page.evaluate("""async () => (await fetch('/api/artifacts/delqa-data/v0?reason=qa&delete_aliases=true',
        { method: 'DELETE', headers: { Authorization: 'Bearer ' + sessionStorage.getItem('assay.token') } })).status""")
    assert got == 200
    page = t.open(f"#/runs/{run.id}?tab=lineage")
    page.wait_for_selector("svg.lineage g.node")
    gone = page.locator(".item.deleted")
    assert gone.count() == 1  # in "Used"
    assert "delqa-data:v0" in gone.inner_text() and "deleted" in gone.inner_text()
    assert "dataset" in gone.inner_text()  # its type, kept
    assert gone.locator("a").count() == 0
    assert page.locator('.item a[href*="#/artifacts/delqa-data/"]').count() == 0
    assert page.locator('.item a[href="#/artifacts/delqa-kept/v0"]').count() == 1  # live: a link
    node = page.locator("svg.lineage g.node.deleted")
    assert node.count() == 1
    assert "deleted · dataset" in (node.text_content() or "")
    assert node.get_attribute("tabindex") is None
    before = page.evaluate("() => location.hash")
    node.click()
    page.wait_for_timeout(200)
    assert page.evaluate("() => location.hash") == before  # no page to open: no 404
    t.shot("run-lineage-deleted")
    assert not t.errors, t.errors


def test_a_trials_stop_button_is_for_the_agents_owner_and_supervisors(tab, dash) -> None:
    live = dash["live"].id
    bob, _ = TokenStore(dash["data_dir"]).create("bob", "researcher")
    dash["tokens"]["bob"] = bob  # a researcher who did not declare the objective
    stop = f'tr[data-key="{live}"] button:has-text("stop")'
    for role, shown in (("researcher", True), ("bob", False), ("supervisor", True)):
        t = tab(role)
        page = t.open(f"#/agents/{AGENT_ID}")
        page.wait_for_function("n => document.querySelector('#who .who-name')?.textContent === n",
                               arg=role)
        page.wait_for_selector(f'tr[data-key="{live}"]')
        page.wait_for_timeout(3000)  # a refresh after whoami answered redraws the table
        assert (page.locator(stop).count() == 1) is shown, role
        page = t.open(f"#/runs/{live}")
        page.wait_for_function("() => performance.getEntriesByName('assay:run-chart-rendered').length > 0")
        if shown:
            page.wait_for_selector('.page-head button:has-text("Stop run")', timeout=10_000)
        else:
            page.wait_for_selector(f'a[href="#/agents/{AGENT_ID}"]', timeout=10_000)  # agent line drawn
            page.wait_for_timeout(1000)
            assert page.locator('.page-head button:has-text("Stop run")').count() == 0
        assert not t.errors, (role, t.errors)


def _held(page: Any, run_id: str) -> list[int] | None:
    raw = page.evaluate("() => document.querySelector('.chart-card .chart')?.dataset.running || '{}'")
    return json.loads(raw).get(run_id)


def test_agent_stream_restarted_for_a_new_running_trial_loses_no_point(tab, dash) -> None:
    live = dash["live"]
    data_dir = dash["data_dir"]
    t = tab("supervisor")
    page = t.page
    state = {"released": False, "flip": False}
    held: list[Any] = []

    def on_stream(route: Any) -> None:
        # The first stream stays silent (a slow link), so points logged meanwhile reach the
        # page only through the stream that replaces it.
        if state["released"]:
            route.continue_()
        else:
            held.append(route)
    page.route(re.compile(r".*/api/stream\?.*"), on_stream)

    def edit(body: dict[str, Any]) -> None:
        if state["flip"]:  # another trial starts running: the set of running trials changes
            for tr in body["trials"]:
                if tr["trial_id"] == dash["trials"][0]:
                    tr["status"] = "running"
    patch_agent(page, edit)
    t.open(f"#/agents/{AGENT_ID}")
    page.wait_for_function(f"() => JSON.parse(document.querySelector('.chart-card .chart')?.dataset.running || '{{}}')[{live.id!r}]",
                           timeout=15_000)
    for _ in range(150):  # the stream opens just after the chart is drawn (later under load)
        if held:
            break
        page.wait_for_timeout(100)
    assert held, "the page opened a stream"
    n0, last0 = _held(page, live.id)
    start = dash["live_step"]
    assert last0 == start - 1
    for step in range(start, start + 5):
        live.log({"train/loss": 0.1, "val/acc": 0.9, "score": 0.6 + step / 1000}, step=step)
    live.flush()
    wait_for(lambda: ingested(data_dir, live.id, start + 4), timeout=30)
    seen = lambda: page.evaluate("""async (id) => (await (await fetch('/api/runs/' + id, { headers:
        { Authorization: 'Bearer ' + sessionStorage.getItem('assay.token') } })).json()).last_step""", live.id)
    wait_for(lambda: seen() >= start + 4, timeout=15)  # the API's runs read sees them too
    state["released"] = True
    state["flip"] = True
    page.wait_for_function(f"() => JSON.parse(document.querySelector('.chart-card .chart').dataset.running)[{dash['trials'][0]!r}]",
                           timeout=10_000)  # the page saw the change (and restarts its stream)
    for step in range(start + 5, start + 8):
        live.log({"train/loss": 0.1, "val/acc": 0.9, "score": 0.6 + step / 1000}, step=step)
    live.flush()
    dash["live_step"] = start + 8
    page.wait_for_function(f"l => JSON.parse(document.querySelector('.chart-card .chart').dataset.running)[{live.id!r}][1] === l",
                           arg=start + 7, timeout=20_000)
    assert _held(page, live.id) == [n0 + 8, start + 7]  # the 5 points logged while silent too
    assert not t.errors, t.errors
