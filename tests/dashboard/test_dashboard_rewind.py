"""An open run page follows a rewind: when the run is resumed from a step, its chart drops the
dead attempt's tail (the stream's ``rewind`` event) and draws the new attempt's points."""

from __future__ import annotations

import assay
import pytest
from dash_support import ingested
from loopback_server import wait_for

pytestmark = pytest.mark.integration

_CARD = "document.querySelector('.chart-card[data-key=\"loss\"]')"


def test_an_open_run_page_drops_the_dead_tail_when_the_run_is_resumed_from_a_step(
        tab, dash) -> None:
    data_dir = dash["data_dir"]
    kw = {"project": "rewound", "dir": data_dir, "system_metrics_interval": 0, "capture": False}
    run = assay.init(name="rw-live", **kw)
    for step in range(10):
        run.log({"loss": 10.0 + step}, step=step)
    run.flush()
    wait_for(lambda: ingested(data_dir, run.id, 9), timeout=30)
    t = tab("viewer")
    page = t.open(f"#/runs/{run.id}")
    page.wait_for_function(f"() => {_CARD} && {_CARD}.dataset.points === '10'", timeout=15_000)

    run.finish("crashed")  # the attempt dies at step 9; the next one restarts at step 5
    again = assay.init(resume=run.id, resume_from_step=5, **kw)
    for step in range(5, 8):
        again.log({"loss": float(step)}, step=step)
    again.finish()
    page.wait_for_function(
        f"() => {_CARD}.dataset.points === '8' && {_CARD}.dataset.last === '7'", timeout=20_000)
    meta = page.locator('.chart-card[data-key="loss"] .chart-title .meta').inner_text()
    assert meta.endswith("last 7"), meta  # the new attempt's value at step 7, not 17
    t.shot("run-rewound")
    assert not t.errors, t.errors


def test_a_chart_truncates_one_series_in_its_overview_and_its_zoomed_detail(tab) -> None:
    t = tab("viewer")
    page = t.open("#/")
    got = page.evaluate("""async () => {
      const { LineChart, cutFrom } = await import('/ui/js/chart.js');
      const el = document.createElement('div');
      el.style.width = '400px';
      document.body.append(el);
      const xs = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
      const s = (label) => ({ label, color: '#000', x: xs, y: xs.map((x) => x * 2) });
      const c = new LineChart(el, { series: [s('a'), s('b')],
        onZoom: async (lo, hi) => [s('a'), s('b')].map((d) => ({ ...d, x: d.x.filter((x) => x >= lo && x <= hi) })) });
      await c.zoomTo(2, 8);
      c.truncate(1, 5);
      const out = { fullA: c.full[0].x, fullB: c.full[1].x, fullBy: c.full[1].y, detailB: c.series[1].x,
                    same: cutFrom(c.full[0], 100) === c.full[0] };
      c.unzoom();
      c.append(1, [5, 6], [50, 60]);
      out.after = c.series[1].x;
      out.afterY = c.series[1].y;
      c.destroy();
      return out;
    }""")
    assert got["fullA"] == list(range(10))  # the other run's curve is untouched
    assert got["fullB"] == [0, 1, 2, 3, 4] and got["fullBy"] == [0, 2, 4, 6, 8]
    assert got["detailB"] == [2, 3, 4]
    assert got["same"] is True
    assert got["after"] == [0, 1, 2, 3, 4, 5, 6]  # the new attempt's points append again
    assert got["afterY"] == [0, 2, 4, 6, 8, 50, 60]
    assert not t.errors, t.errors
