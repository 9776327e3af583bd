"""The overview's host table says which running runs use each GPU (from the runs'
``sys/gpu.N.process_memory_used_mb``), with links to them."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


def test_each_gpu_of_a_host_links_the_runs_training_on_it(tab) -> None:
    t = tab("supervisor")

    def with_gpus(route) -> None:
        body = route.fetch().json()
        gpu = {"utilization_percent": 97.0, "memory_used_mb": 30000.0, "memory_total_mb": 81920.0}
        body["resources"]["hosts"] = [{
            "host": "gpu-node-1", "runs": 5, "process_cpu_percent": 400.0, "rss_mb": 9000.0,
            "cpu_percent": 60.0, "memory_used_percent": 35.0,
            "gpus": [{"index": "0", **gpu, "runs": ["run0aaaa"]},
                     {"index": "1", **gpu, "runs": ["run1aaaa", "run1bbbb", "run1cccc", "run1dddd"]},
                     {"index": "2", **gpu, "runs": []}]}]
        body["resources"]["host_count"] = 1
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    t.page.route("**/api/fleet?*", with_gpus)
    t.page.route("**/api/fleet", with_gpus)
    t.open("#/")
    t.page.wait_for_selector("a.gpu-run", timeout=15_000)
    links = t.page.locator("a.gpu-run")
    assert links.count() == 4  # one on GPU 0, the first three of GPU 1's four
    assert links.first.get_attribute("href") == "#/runs/run0aaaa"
    cell = t.page.inner_text("td:has(a.gpu-run)")
    assert "#0 97%" in cell and "+1" in cell and "#2 97%" in cell
    title = t.page.locator("div.nowrap[title^='GPU 2']").get_attribute("title")
    assert "no running run" in title
    assert not t.errors, t.errors
