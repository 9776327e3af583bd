"""The dashboard in headless Chromium against a real server: every page renders without a
console error (screenshots under tests/artifacts/screenshots/), a live run's curve grows
while its page is open, overrides go through with who and why, and the compare view draws
the chosen runs."""

from __future__ import annotations

from typing import Any

import pytest
from assay.api.audit import AuditTrail
from assay.store.control import LanceControlStore
from assay.store.ingest import IngestLock
from assay.store.lance import LanceStore
from dash_support import AGENT_ID
from loopback_server import wait_for

pytestmark = pytest.mark.integration


def _mark(page: Any, name: str, timeout: float = 15_000) -> None:
    page.wait_for_function(f"() => performance.getEntriesByName({name!r}).length > 0", timeout=timeout)


def _pages(dash: dict[str, Any]) -> list[tuple[str, str, Any]]:
    run = dash["trials"][0]
    live = dash["live"].id
    ids = ",".join(dash["trials"] + [live])
    sel = lambda css, n=1: lambda p: p.wait_for_function(
        f"() => document.querySelectorAll({css!r}).length >= {n}", timeout=15_000)
    return [
        ("overview", "#/", lambda p: _mark(p, "assay:overview-rendered")),
        ("runs", "#/runs", sel("table.data tbody tr", 6)),
        ("runs-filtered", "#/runs?status=completed&filter=config.lr%3E%3D0.01", sel("table.data tbody tr", 3)),
        ("run", f"#/runs/{run}", lambda p: (_mark(p, "assay:run-chart-rendered"),
                                           sel(".chart-card .uplot", 3)(p),
                                           sel(".pill.s-ok")(p))),
        ("run-system", f"#/runs/{live}?tab=system", sel(".tab-panel:not([hidden]) .uplot", 4)),
        ("run-config", f"#/runs/{run}?tab=config", sel(".tab-panel:not([hidden]) table.kv")),
        ("run-code", f"#/runs/{run}?tab=code", sel(".tab-panel:not([hidden]) .panel", 4)),
        ("run-lineage", f"#/runs/{run}?tab=lineage", sel("svg.lineage g.node", 4)),
        ("run-verify", f"#/runs/{run}?tab=verify", sel(".verify-ok")),
        ("agent", f"#/agents/{AGENT_ID}", lambda p: (sel("tbody tr[data-key]", 5)(p),
                                                    sel(".chart-card .uplot", 2)(p),
                                                    sel(".list .item", 5)(p))),
        ("compare", f"#/compare?ids={ids}", lambda p: (_mark(p, "assay:compare-rendered"),
                                                      sel("svg.parcoords polyline", 5)(p))),
        ("artifacts", "#/artifacts", sel("table.data tbody tr", 2)),
        ("artifact", "#/artifacts/digits/prod", sel("svg.lineage g.node", 3)),
    ]


def test_every_page_renders_without_console_errors(tab, dash) -> None:
    t = tab("supervisor")
    for name, hash_, ready in _pages(dash):
        t.open(hash_)
        ready(t.page)
        t.page.wait_for_timeout(150)  # let the last frame paint before the screenshot
        t.shot(name)
        assert not t.errors, f"{name}: {t.errors}"
        assert t.page.locator(".error-panel").count() == 0, name
        if hash_ in ("#/", ""):  # helper-63: latest decisions named agents by id only
            link = t.page.locator(f'.list .item a[href="#/agents/{AGENT_ID}"]').first
            assert link.inner_text() == "digits-mlp" and link.get_attribute("title") == AGENT_ID
    dark = tab("supervisor", theme="dark")
    for name, hash_, ready in _pages(dash)[:1] + _pages(dash)[3:4] + _pages(dash)[9:10]:
        dark.open(hash_)
        ready(dark.page)
        dark.page.wait_for_timeout(150)
        dark.shot(f"{name}-dark")
    assert not dark.errors, dark.errors


def test_a_live_runs_curve_grows_while_its_page_is_open(tab, dash, monkeypatch) -> None:
    monkeypatch.setenv("ASSAY_INGEST_INTERVAL", "0.2")
    live = dash["live"]
    t = tab("viewer")
    page = t.open(f"#/runs/{live.id}")
    _mark(page, "assay:run-chart-rendered")
    card = page.locator('.chart-card[data-key="score"]')
    before = int(card.get_attribute("data-points"))
    start = dash["live_step"]
    for step in range(start, start + 40):
        live.log({"train/loss": 1.0 / (1 + step * 0.05), "val/acc": 0.5 + step / 200,
                  "score": 0.5 + step / 200}, step=step)
    live.flush()
    dash["live_step"] = start + 40
    page.wait_for_function(
        "n => Number(document.querySelector('.chart-card[data-key=\"score\"]').dataset.points) >= n",
        arg=before + 40, timeout=20_000)
    assert int(card.get_attribute("data-last")) == start + 39
    assert page.locator(".pill.s-running").count() >= 1
    t.shot("run-live-grown")
    assert not t.errors, t.errors


def test_override_buttons_reach_the_agent_with_who_and_why(tab, dash) -> None:
    ctl = LanceControlStore(LanceStore(dash["data_dir"]), IngestLock(dash["data_dir"]))
    live = dash["live"].id
    t = tab("supervisor")
    page = t.open(f"#/agents/{AGENT_ID}")
    page.wait_for_selector(f'tr[data-key="{live}"] button:has-text("stop")')
    page.click(f'tr[data-key="{live}"] button:has-text("stop")')
    page.wait_for_selector("form.ask textarea[name=reason]")
    page.click("form.ask button[type=submit]")  # no reason: refused on the page
    assert "reason is required" in page.inner_text("form.ask .form-error")
    page.fill("form.ask textarea[name=reason]", "diverging; freeing the GPU for the sweep")
    page.click("form.ask button[type=submit]")
    page.wait_for_selector(".toast.ok")
    o = wait_for(lambda: [x for x in ctl.overrides(AGENT_ID) if x.action == "stop_run"], 10)[-1]
    assert (o.params, o.actor, o.reason) == ({"trial_id": live}, "supervisor",
                                             "diverging; freeing the GPU for the sweep")
    _, entries = AuditTrail(dash["data_dir"]).entries(target=f"agent:{AGENT_ID}")
    assert any(e["actor"] == "supervisor" and e["action"] == "override.stop_run"
               and e["reason"] == "diverging; freeing the GPU for the sweep" for e in entries)
    # The page shows the override and the audit entry (who and why) without a reload.
    page.wait_for_function("() => document.body.innerText.includes('“diverging; freeing the GPU')",
                           timeout=10_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('table.data td.wrap')].some(td => td.innerText.includes('diverging'))",
        timeout=10_000)
    # A pause with its own reason, from the agent's controls.
    page.click('button[data-action="pause"]')
    page.fill("form.ask textarea[name=reason]", "cluster maintenance at noon")
    page.click("form.ask button[type=submit]")
    page.wait_for_selector(".toast.ok >> text=pause")
    assert [(x.action, x.actor, x.reason) for x in ctl.overrides(AGENT_ID)][-1] == (
        "pause", "supervisor", "cluster maintenance at noon")
    t.shot("agent-after-overrides")
    assert not t.errors, t.errors
    # A viewer sees the controls, disabled, and why.
    v = tab("viewer")
    vp = v.open(f"#/agents/{AGENT_ID}")
    vp.wait_for_selector('button[data-action="pause"]')
    assert vp.locator('button[data-action="pause"]').is_disabled()
    assert "Supervisors, and the researcher" in vp.inner_text("body")


def test_compare_view_draws_the_chosen_runs(tab, dash) -> None:
    ids = dash["trials"]
    t = tab("viewer")
    page = t.open(f"#/compare?ids={','.join(ids)},zzzznotarun&key=val/acc")
    _mark(page, "assay:compare-rendered")
    assert page.locator(".chart-card .legend a").count() == len(ids)
    n_series = page.locator(".chart-card .uplot .u-over").count()
    assert n_series == 1  # one chart, the runs overlaid
    assert page.locator("svg.parcoords polyline").count() == len(ids)
    assert page.locator("table.data tbody tr").count() == len(ids)
    assert "Not found: zzzznotarun" in page.inner_text("body")
    assert page.input_value("select[title=metric]") == "val/acc"
    first = page.locator("table.data tbody tr").first.get_attribute("data-key")
    page.click("table.data th:has-text('val/acc')")  # flips the sort
    assert page.locator("table.data tbody tr").first.get_attribute("data-key") != first
    page.select_option("select[title=metric]", "train/loss")
    page.wait_for_function("() => location.hash.includes('key=train')")
    t.shot("compare-loss")
    assert not t.unexpected("status of 404"), t.errors  # the unknown run, on purpose


def test_runs_page_filters_sorts_and_selects_for_compare(tab, dash) -> None:
    t = tab("viewer")
    page = t.open("#/runs")
    page.wait_for_selector("table.data tbody tr")
    page.click("button.chip:has-text('failed')")
    page.wait_for_function("() => document.querySelectorAll('table.data tbody tr').length === 1")
    page.click("button.chip:has-text('failed')")
    page.fill("input[data-filter]", "lr0.0")
    page.wait_for_function("() => document.querySelectorAll('table.data tbody tr').length === 3")
    page.keyboard.press("Escape")
    page.locator("main").click(position={"x": 5, "y": 5})
    page.keyboard.press("j")
    page.keyboard.press("x")
    page.keyboard.press("j")
    page.keyboard.press("x")
    assert "Compare (2)" in page.inner_text("body")
    page.keyboard.press("c")
    page.wait_for_function("() => location.hash.startsWith('#/compare?ids=')")
    _mark(page, "assay:compare-rendered")
    assert page.locator(".chart-card .legend a").count() == 2
    assert not t.errors, t.errors


def test_run_charts_zoom_to_full_resolution_smooth_and_use_a_log_scale(tab, dash) -> None:
    t = tab("viewer")
    page = t.open(f"#/runs/{dash['trials'][0]}")
    _mark(page, "assay:run-chart-rendered")
    over = page.locator('.chart-card[data-key="train/loss"] .u-over')
    box = over.bounding_box()
    y = box["y"] + box["height"] / 2
    with page.expect_request(lambda r: "step_min=" in r.url and "history" in r.url) as req:
        page.mouse.move(box["x"] + box["width"] * 0.2, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
        page.mouse.up()
    assert "key=train%2Floss" in req.value.url
    page.wait_for_timeout(200)
    t.shot("run-zoomed")
    over.dblclick()
    page.locator("input[type=range]").fill("0.9")
    page.locator("input[type=range]").dispatch_event("change")
    page.wait_for_function("() => location.hash.includes('smooth=0.9')")
    page.locator("h1").click()  # keys go to the page, not the slider
    page.keyboard.press("l")
    page.wait_for_function("() => location.hash.includes('log=1')")
    page.wait_for_selector('.chart-card[data-key="train/loss"] .uplot')
    t.shot("run-smoothed-log")
    assert not t.errors, t.errors


def test_budget_concurrency_and_pin_dialogs_send_their_params(tab, dash) -> None:
    ctl = LanceControlStore(LanceStore(dash["data_dir"]), IngestLock(dash["data_dir"]))
    t = tab("supervisor")
    page = t.open(f"#/agents/{AGENT_ID}")
    page.click('button[data-action="concurrency"]')
    page.fill("form.ask input[name=concurrency]", "3")
    page.fill("form.ask textarea[name=reason]", "more GPUs free tonight")
    page.click("form.ask button[type=submit]")
    page.wait_for_selector(".toast.ok >> text=concurrency")
    page.click('button[data-action="budget"]')
    page.fill("form.ask input[name=trials]", "12")
    page.fill("form.ask textarea[name=reason]", "promising region")
    page.click("form.ask button[type=submit]")
    page.wait_for_selector(".toast.ok >> text=budget")
    page.click('button[data-action="pin"]')
    page.fill("form.ask textarea[name=config]", "{lr: 0.2")
    page.fill("form.ask textarea[name=reason]", "try the paper's setting")
    page.click("form.ask button[type=submit]")
    assert "not valid JSON" in page.inner_text("form.ask .form-error")
    page.fill("form.ask textarea[name=config]", '{"lr": 0.2}')
    page.click("form.ask button[type=submit]")
    page.wait_for_selector(".toast.ok >> text=pin")
    got = {o.action: (o.params, o.reason) for o in ctl.overrides(AGENT_ID)}
    assert got["concurrency"] == ({"concurrency": 3}, "more GPUs free tonight")
    assert got["budget"][0] == {"budget": {"trials": 12}}  # only the limit changed
    assert got["pin"] == ({"config": {"lr": 0.2}}, "try the paper's setting")
    assert not t.errors, t.errors


def test_the_runs_table_reads_config_columns_the_way_the_api_names_them(tab) -> None:
    # {"a.b": 1, "a": {"b": 2}}: the API names the literal key config.a.b and the nested one
    # config.["a","b"]; a picked column must show its own value, not blank or the other's.
    t = tab("viewer")
    page = t.open("#/runs")
    page.wait_for_function("() => performance.getEntriesByName('assay:runs-rendered').length > 0")
    got = page.evaluate("""async () => {
        const { dig } = await import('/ui/js/pages/runs.js');
        const cfg = {"a.b": 1, a: {b: 2}, lr: 0.1, net: {depth: 3}};
        return [dig(cfg, 'a.b'), dig(cfg, '["a","b"]'), dig(cfg, 'lr'), dig(cfg, 'net.depth'),
                dig(cfg, 'missing.key')];
    }""")
    assert got == [1, 2, 0.1, 3, None]
    assert not t.unexpected(), t.errors
