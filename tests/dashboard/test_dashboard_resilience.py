"""Bad input and bad days: unknown ids and malformed addresses, a missing or expired token,
a server that goes away and comes back. Each shows a clear message on the page, and the
page recovers without a reload (a marker set in the window survives)."""

from __future__ import annotations

from typing import Any

import pytest
from assay.api.auth import TokenStore
from dash_support import DashServer

pytestmark = pytest.mark.integration


def _marker(page: Any) -> None:
    page.evaluate("() => { window.__noReload = 42; }")


def _same_document(page: Any) -> bool:
    return page.evaluate("() => window.__noReload") == 42


def test_unknown_ids_and_bad_addresses_say_so_and_the_page_moves_on(tab, dash) -> None:
    t = tab("viewer")
    page = t.open("#/runs/nosuchrun1")
    page.wait_for_selector(".error-panel")
    _marker(page)
    assert "Not found" in page.inner_text(".error-panel")
    assert "no run 'nosuchrun1'" in page.inner_text(".error-panel")
    t.shot("error-unknown-run")
    cases = [("#/agents/nosuchagent", "no agent 'nosuchagent'"),
             ("#/runs/bad!id", "Invalid address"),
             ("#/artifacts/nothing/v3", "no artifact version nothing:v3"),
             ("#/compare?ids=nope1,nope2", "none of these runs exist"),
             ("#/no/such/page", "no page /no/such/page")]
    for hash_, text in cases:
        page.evaluate("h => { location.hash = h; }", hash_)
        page.wait_for_function("t => document.querySelector('.error-panel')?.innerText.includes(t)",
                               arg=text, timeout=10_000)
    page.evaluate("() => { location.hash = '#/'; }")
    page.wait_for_function("() => performance.getEntriesByName('assay:overview-rendered').length > 0")
    assert page.locator(".error-panel").count() == 0 and _same_document(page)
    assert not t.unexpected("status of 404", "status of 400"), t.errors


def test_leaving_a_page_while_an_answer_is_still_arriving_is_an_aborted_request(tab, dash) -> None:
    """A page left after a request's headers came but before its body did (a slow answer,
    a navigation under load) aborts the body read: that is the quiet ``aborted`` kind the
    pages ignore, not an uncaught "signal is aborted without reason" (seen in CI when a
    compare page replaced the runs page mid-read)."""
    t = tab("viewer")
    page = t.open("#/")
    page.wait_for_function("() => performance.getEntriesByName('assay:overview-rendered').length > 0")
    got = page.evaluate("""async (run) => {
      const { api, ApiError } = await import('/ui/js/api.js');
      const ctl = new AbortController();
      // A stream answers its headers at once and its body never ends: the read is mid-body.
      const p = api(`/api/stream?run=${run}&min_interval=0.5`, { signal: ctl.signal });
      await new Promise((r) => setTimeout(r, 1000));
      ctl.abort();
      try { await p; return 'resolved'; }
      catch (e) { return [e instanceof ApiError, e.kind, e.message]; }
    }""", dash["trials"][0])
    assert got == [True, "aborted", "aborted"]
    assert not t.errors, t.errors


def test_sign_in_expired_token_and_recovery_without_reload(tab, dash) -> None:
    t = tab(role=None)
    page = t.open("#/")
    page.wait_for_selector("#login:not([hidden])")
    _marker(page)
    page.fill("#login-token", "asy_not_a_token")
    page.click("#login-form button[type=submit]")
    page.wait_for_function("() => document.querySelector('#login-reason').innerText.includes('malformed')")
    short, _ = TokenStore(dash["data_dir"]).create("alice", "supervisor", expires_in=3)
    page.fill("#login-token", short)
    page.click("#login-form button[type=submit]")
    page.wait_for_function("() => performance.getEntriesByName('assay:overview-rendered').length > 0")
    assert page.is_hidden("#login") and "alice" in page.inner_text("#who")
    # The token expires: the next poll gets a 401 and the form says why.
    page.wait_for_selector("#login:not([hidden])", timeout=15_000)
    assert "expired" in page.inner_text("#login-reason")
    t.shot("login-expired")
    page.fill("#login-token", dash["tokens"]["supervisor"])
    page.click("#login-form button[type=submit]")
    page.wait_for_function("() => document.querySelector('#who')?.innerText.includes('supervisor')")
    page.wait_for_selector("table.data tbody tr")
    assert page.is_hidden("#login") and _same_document(page)
    assert not t.unexpected("status of 401"), t.errors


def test_server_goes_away_and_comes_back(tab, dash, monkeypatch) -> None:
    monkeypatch.setenv("ASSAY_INGEST_INTERVAL", "0.2")
    live = dash["live"]
    t = tab("viewer")
    page = t.open(f"#/runs/{live.id}")
    page.wait_for_function("() => performance.getEntriesByName('assay:run-chart-rendered').length > 0")
    _marker(page)
    old = dash["server"]
    old.stop()
    try:
        page.wait_for_selector("#banner:not([hidden])", timeout=15_000)
        assert "does not answer" in page.inner_text("#banner")
        assert page.get_attribute("#conn", "data-state") == "offline"
        t.shot("server-away")
    finally:
        dash["server"] = DashServer(old.data_dir, port=old.port).start()
    page.wait_for_selector("#banner", state="hidden", timeout=20_000)
    assert page.get_attribute("#conn", "data-state") == "online"
    # Live again: new points reach the open page through the resumed stream.
    card = page.locator('.chart-card[data-key="score"]')
    before = int(card.get_attribute("data-points"))
    start = dash["live_step"]
    for step in range(start, start + 10):
        live.log({"score": 0.5 + step / 200}, step=step)
    live.flush()
    dash["live_step"] = start + 10
    page.wait_for_function(
        "n => Number(document.querySelector('.chart-card[data-key=\"score\"]').dataset.points) >= n",
        arg=before + 10, timeout=20_000)
    assert _same_document(page)
    t.shot("server-back")
    assert not t.unexpected("ERR_CONNECTION_REFUSED", "ERR_EMPTY_RESPONSE", "ERR_INCOMPLETE_CHUNKED",
                            "status of 503", "Failed to fetch", "network"), t.errors


def test_a_stream_that_lost_its_place_makes_the_page_read_its_state_again(tab, dash) -> None:
    # A server that no longer holds a (large) cursor answers with a "reset" event: points sent
    # while the page was away will not come, so the page must re-read them, not keep a gap.
    t = tab("viewer")
    t.page.route("**/api/stream*", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"},
        body='event: reset\ndata: {"error": "the stream cursor was lost", "hint": "re-read"}\n\n'),
        times=1)
    page = t.open(f"#/runs/{dash['live'].id}")
    # Performance marks survive only within one document: two page starts and two charts
    # drawn mean the page rendered again in place, after the reset.
    page.wait_for_function(
        "() => performance.getEntriesByName('assay:run-page-start').length >= 2", timeout=15_000)
    page.wait_for_function(
        "() => performance.getEntriesByName('assay:run-chart-rendered').length >= 2",
        timeout=15_000)
    assert not t.unexpected(), t.errors
