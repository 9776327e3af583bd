"""StoreMetricSource: each stored point reaches the agent once."""

from __future__ import annotations

import pytest
from assay.errors import UserInputError
from assay.scheduler import StoreMetricSource

pytestmark = pytest.mark.integration


def test_store_source_returns_only_points_beyond_those_returned_before(data_dir):
    import assay

    run = assay.init("curves", id="curve0001", dir=data_dir, system_metrics_interval=0)
    for step in range(3):
        run.log({"val/loss": 1.0 / (step + 1), "val/acc": step / 10}, step=step)
    run.finish()
    source = StoreMetricSource(data_dir)
    first = source.new_points(["curve0001", "notyet001"])
    assert first == {"curve0001": {"val/acc": [(0, 0.0), (1, 0.1), (2, 0.2)],
                                   "val/loss": [(0, 1.0), (1, 0.5), (2, 1 / 3)]}}
    assert source.new_points(["curve0001"]) == {}
    run = assay.init("curves", resume="curve0001", dir=data_dir, system_metrics_interval=0)
    run.log({"val/loss": 0.2}, step=3)
    run.finish()
    assert source.new_points(["curve0001"]) == {"curve0001": {"val/loss": [(3, 0.2)]}}
    only = StoreMetricSource(data_dir, keys="val/acc")
    assert list(only.new_points(["curve0001"])["curve0001"]) == ["val/acc"]
    source.forget("curve0001")
    assert len(source.new_points(["curve0001"])["curve0001"]["val/loss"]) == 4
    with pytest.raises(UserInputError):
        StoreMetricSource(data_dir, keys=[""])
