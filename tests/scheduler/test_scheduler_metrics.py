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


def _attempt(data_dir, values, *, first=False, start=0):
    """One attempt of trial ``curve0002``: the first, or a relaunch that restarts at ``start``."""
    import assay

    kw = {"dir": data_dir, "system_metrics_interval": 0, "capture": False}
    run = (assay.init("curves", id="curve0002", **kw) if first
           else assay.init("curves", resume="curve0002", resume_from_step=start, **kw))
    for i, v in enumerate(values):
        run.log({"loss": v}, step=start + i)
    run.finish("completed" if not first else "crashed")


def test_a_rewound_run_replaces_what_the_source_returned_for_it(data_dir):
    _attempt(data_dir, [9.0, 8.0, 7.0, 6.0], first=True)
    source = StoreMetricSource(data_dir)
    assert source.new_points(["curve0002"]) == {
        "curve0002": {"loss": [(0, 9.0), (1, 8.0), (2, 7.0), (3, 6.0)]}}
    assert source.replaced() == set()
    _attempt(data_dir, [1.0, 0.5], start=0)  # relaunched from the top: steps 0-1 again
    assert source.new_points(["curve0002"]) == {"curve0002": {"loss": [(0, 1.0), (1, 0.5)]}}
    assert source.replaced() == {"curve0002"}  # the agent drops the dead attempt's points
    assert source.new_points(["curve0002"]) == {} and source.replaced() == set()
    _attempt(data_dir, [0.4], start=2)  # a checkpoint restart at step 2 keeps 0-1
    assert source.new_points(["curve0002"]) == {"curve0002": {"loss": [(2, 0.4)]}}
    assert source.replaced() == set()  # new steps only: nothing to replace
    _attempt(data_dir, [], start=1)  # a rewind alone, before the attempt logs anything
    assert source.new_points(["curve0002"]) == {"curve0002": {"loss": [(0, 1.0)]}}
    assert source.replaced() == {"curve0002"}
    _attempt(data_dir, [], start=0)
    assert source.new_points(["curve0002"]) == {} and source.replaced() == {"curve0002"}


def test_a_growing_run_is_read_from_its_new_chunks_and_an_idle_one_not_at_all(data_dir,
                                                                              monkeypatch):
    """An agent polls every running trial each step: reading whole curves each time cost
    ~15 ms per 60k-point trial; only what was stored since the last read is read now."""
    import assay
    from loopback_server import wait_for

    kw = {"dir": data_dir, "system_metrics_interval": 0, "capture": False}
    api = assay.Api(data_dir)
    source = StoreMetricSource(data_dir)
    reads: list[str] = []
    for name in ("metric_chunks", "metric_chunks_after"):
        real = getattr(source.api.store, name)
        monkeypatch.setattr(source.api.store, name,
                            lambda *a, _n=name, _r=real, **k: (reads.append(_n), _r(*a, **k))[1])

    def ingested(run_id, attach, last_step):
        wait_for(lambda: _stored(api, run_id, attach, last_step))

    run = assay.init("curves", id="curve0003", **kw)
    for step in range(3):
        run.log({"loss": 10.0 - step}, step=step)
        run.flush()
        ingested("curve0003", 0, step)
        assert source.new_points(["curve0003"]) == {"curve0003": {"loss": [(step, 10.0 - step)]}}
    assert reads == ["metric_chunks", "metric_chunks_after", "metric_chunks_after"]
    reads.clear()
    assert source.new_points(["curve0003"]) == {} and reads == []  # nothing new: no read
    run.finish("crashed")
    # A relaunch with resume_from_step="auto": the new attach is stored before its first
    # point, whose rewind (to step 1) supersedes the dead attempt's step 2.
    again = assay.init("curves", resume="curve0003", resume_from_step="auto", **kw)
    again.flush()
    ingested("curve0003", 1, 2)
    assert source.new_points(["curve0003"]) == {} and source.replaced() == set()
    again.log({"loss": 0.5}, step=1)
    again.finish()
    ingested("curve0003", 1, 1)
    assert source.new_points(["curve0003"]) == {"curve0003": {"loss": [(0, 10.0), (1, 0.5)]}}
    assert source.replaced() == {"curve0003"}


def _stored(api, run_id, attach, last_step):
    from assay.errors import NotFoundError

    try:
        rec = api.run(run_id)
    except NotFoundError:
        return False
    return rec.attach == attach and rec.last_step == last_step
