"""The overview counts every alert, not the capped list it shows (a supervisor review found
"20 alerts" with 33 failed runs)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


def test_the_overview_counts_alerts_from_alert_counts_not_the_capped_list(tab) -> None:
    t = tab("supervisor")

    def more_than_listed(route) -> None:
        body = route.fetch().json()
        body["alert_counts"] = {"error": 23, "warn": 2}  # as /api/fleet says past its cap
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    t.page.route("**/api/fleet?*", more_than_listed)
    t.page.route("**/api/fleet", more_than_listed)
    t.open("#/")
    t.page.wait_for_function(
        "() => document.body.innerText.includes('25 alerts')", timeout=15_000)
    text = t.page.inner_text("body")
    assert "23 errors" in text
    assert t.page.locator("h2:has-text('Alerts') .count").inner_text() == "25"
    assert not t.errors, t.errors
