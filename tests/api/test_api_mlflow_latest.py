"""MLflow's latest metric values of stored runs (api.mlflow_views.LatestMetrics), on a
memory store: what is read when, and MLflow's rule for which point is the latest."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc
from assay.api.mlflow_views import LatestMetrics, latest_metrics, metric_history
from assay.store.memory import MemoryStore
from assay.store.schemas import METRICS_SCHEMA
from assay.store.wal import SEQ_BITS


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.full = self.after = 0

    def metric_chunks(self, run_id, keys=None):  # type: ignore[no-untyped-def]
        self.full += 1
        return super().metric_chunks(run_id, keys)

    def metric_chunks_after(self, run_id, after_seq, keys=None):  # type: ignore[no-untyped-def]
        self.after += 1
        t = super().metric_chunks(run_id, keys)  # not counted as a full read
        return t.filter(pc.greater(t["seq"], after_seq))


def _append(store: MemoryStore, seq: int, key: str, pts: list[tuple[int, float, float]]) -> None:
    steps = [p[0] for p in pts]
    store.append_metrics(pa.table({
        "run_id": ["r"], "key": [key], "seq": [seq], "step_min": [min(steps)],
        "step_max": [max(steps)], "step": [steps], "value": [[p[1] for p in pts]],
        "time": [[p[2] for p in pts]]}, schema=METRICS_SCHEMA))


def _values(latest):  # type: ignore[no-untyped-def]
    return {k: v for k, (v, _, _) in latest_metrics(latest, []).items()}


def test_latest_is_mlflows_and_reads_only_new_chunks() -> None:
    store, cache = CountingStore(), LatestMetrics()
    _append(store, 1, "m", [(10, 1.0, 1.0), (3, 2.0, 2.0)])
    _append(store, 2, "t", [(0, 5.0, 3.0), (0, 6.0, 1.0)])
    _append(store, 3, "n", [(2, math.nan, 1.0), (2, -1.0, 1.0), (2, 0.0, 1.0)])
    got = _values(cache.of(store, "r", 3))
    assert got["m"] == 1.0 and got["t"] == 5.0 and math.isnan(got["n"])  # NaN: 0, first wins
    assert (store.full, store.after) == (1, 0)
    cache.of(store, "r", 3)  # nothing new ingested: no read at all
    assert (store.full, store.after) == (1, 0)
    _append(store, 4, "m", [(11, 7.0, 0.5)])
    _append(store, 5, "t", [(0, 9.0, 2.0)])  # an older timestamp at the same step
    assert _values(cache.of(store, "r", 5))["m"] == 7.0
    assert _values(cache.of(store, "r", 5))["t"] == 5.0
    assert (store.full, store.after) == (1, 1)  # only the chunks stored since


def test_a_new_attach_rereads_the_run() -> None:
    """A resumed attach may have rewound (dropped stored points): read the run again."""
    store, cache = CountingStore(), LatestMetrics()
    _append(store, 1, "m", [(0, 1.0, 1.0), (5, 5.0, 2.0)])
    assert _values(cache.of(store, "r", 1))["m"] == 5.0
    store.rewind_metrics("r", 1 << SEQ_BITS, 3)  # attach 1 restarts at step 3
    _append(store, (1 << SEQ_BITS) + 1, "m", [(3, 3.0, 3.0)])
    assert _values(cache.of(store, "r", (1 << SEQ_BITS) + 1))["m"] == 3.0
    assert store.full == 2


def test_pending_points_fold_in_and_history_order() -> None:
    store, cache = CountingStore(), LatestMetrics()
    _append(store, 1, "m", [(4, 1.0, 1.0)])
    pending = [{"seq": 2, "chunks": [{"keys": ["m"], "step": [2, 4], "time": [9.0, 1.0],
                                      "vals": [[8.0, 0.5]]}]}]
    assert latest_metrics(cache.of(store, "r", 1), pending) == {"m": (1.0, 4, 1000)}
    _append(store, 2, "m", [(2, 8.0, 9.0), (4, 3.0, 1.0), (2, 8.0, 9.0)])
    hist = metric_history(store.metric_chunks("r", ["m"]))
    assert hist == [(4, 1.0, 1000), (4, 3.0, 1000), (2, 8.0, 9000)]  # the repeat listed once
