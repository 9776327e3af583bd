"""A remote run's summary after finish() keeps NaN and infinities as floats (the server's
JSON writes them as strings; a regression review found them in run.summary)."""

from __future__ import annotations

import math

import assay
import pytest

pytestmark = pytest.mark.integration


def test_a_remote_runs_summary_after_a_rebuild_holds_floats(server, tokens, tmp_path):
    run = assay.init(project="p", dir=tmp_path / "laptop", server=server.url,
                     token=tokens["researcher"], system_metrics_interval=None, capture=False)
    for i in range(3):
        run.log({"loss": float(i), "acc": float("nan")}, step=i)
    run.log({"loss": float("inf")}, step=1)  # back to an earlier step: the summary is rebuilt
    run.finish()
    s = run.summary
    assert isinstance(s["acc"], float) and math.isnan(s["acc"])
    assert s["loss"] == math.inf and s.max("loss") == math.inf and s.min("loss") == 0.0
