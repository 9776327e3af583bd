"""Fixes from a supervisor review of the live fleet: the agent page's "best so far" chart
counts completed trials only, as its card does."""

from __future__ import annotations

import re
from typing import Any

import pytest
from dash_support import AGENT_ID

pytestmark = pytest.mark.integration

_AGENT_URL = re.compile(rf".*/api/agents/{AGENT_ID}$")


def _patch_agent(page: Any, edit: Any) -> None:
    """Serve GET /api/agents/<id> edited by ``edit(body)`` (as an agent process would have
    saved it)."""
    def handle(route: Any) -> None:
        if route.request.method != "GET":
            route.continue_()
            return
        resp = route.fetch()
        body = resp.json()
        edit(body)
        route.fulfill(response=resp, json=body)
    page.route(_AGENT_URL, handle)


def test_best_so_far_chart_counts_completed_trials_only_as_its_card_does(tab, dash) -> None:
    failed, live = dash["trials"][3], dash["live"].id

    def edit(body: dict[str, Any]) -> None:
        for tr in body["trials"]:
            if tr["trial_id"] == failed:
                tr["final"] = 0.99  # the failed trial's last value, above every completed one
            if tr["trial_id"] == live:
                tr["final"] = 0.98  # a running trial's latest value
    t = tab("viewer")
    _patch_agent(t.page, edit)
    page = t.open(f"#/agents/{AGENT_ID}")
    page.wait_for_selector(".chart[data-best]")
    page.wait_for_function("() => document.querySelector('.chart[data-best]').dataset.best !== ''")
    best = float(page.get_attribute(".chart[data-best]", "data-best"))
    card = page.inner_text(".stat .value.best")
    assert best == pytest.approx(float(card), abs=1e-3), (best, card)
    assert best < 0.96
    assert page.inner_text(".stat .detail a") == dash["best"]
    assert not t.errors, t.errors
