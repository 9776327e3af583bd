"""The contract every Store implementation passes (run by test_store_contract.py)."""

from __future__ import annotations

import math

import pyarrow as pa
from assay.store.records import RunRecord, RunStatus
from assay.store.schemas import METRICS_SCHEMA


def make_run(run_id: str = "r1", project: str = "p", **kw) -> RunRecord:
    base = {"run_id": run_id, "project": project, "name": f"name-{run_id}",
            "status": RunStatus.RUNNING, "created_at": 1.0, "updated_at": 1.0}
    base.update(kw)
    return RunRecord(**base)


def chunk_table(rows: list[tuple[str, str, int, list[int], list[float]]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"run_id": r, "key": k, "seq": s, "step_min": min(st), "step_max": max(st),
          "step": st, "value": v, "time": [0.0] * len(st)} for r, k, s, st, v in rows],
        schema=METRICS_SCHEMA,
    )


def check_unknown_run_is_none(store) -> None:
    assert store.get_run("nope") is None
    assert store.runs_table().num_rows == 0


def check_upsert_inserts_then_replaces(store) -> None:
    store.upsert_runs([make_run("a", config={"lr": 0.1}), make_run("b", project="q")])
    store.upsert_runs([make_run("a", status=RunStatus.COMPLETED, config={"lr": 0.2},
                                summary={"x": {"last": 1.0, "min": 0.5, "max": 2.0, "step": 3}})])
    a = store.get_run("a")
    assert a.status is RunStatus.COMPLETED
    assert a.config == {"lr": 0.2}
    assert a.summary["x"]["min"] == 0.5
    assert store.runs_table().num_rows == 2
    assert store.runs_table("q")["run_id"].to_pylist() == ["b"]


def check_nan_and_inf_survive(store) -> None:
    store.append_metrics(chunk_table([("a", "loss", 1, [0, 1, 2], [1.0, math.inf, math.nan])]))
    vals = store.metric_chunks("a")["value"].to_pylist()[0]
    assert vals[0] == 1.0 and vals[1] == math.inf and math.isnan(vals[2])


def check_metric_chunks_filter_by_run_and_key(store) -> None:
    store.append_metrics(chunk_table([
        ("a", "loss", 1, [0, 1], [1.0, 0.5]),
        ("a", "acc", 1, [0, 1], [0.1, 0.2]),
        ("b", "loss", 1, [0], [9.0]),
    ]))
    assert sorted(store.metric_chunks("a")["key"].to_pylist()) == ["acc", "loss"]
    t = store.metric_chunks("a", ["loss"])
    assert t["value"].to_pylist() == [[1.0, 0.5]]
    assert store.metric_chunks("a", []).num_rows == 0
    assert store.metric_chunks("zzz").num_rows == 0


def check_metric_chunks_after_a_seq(store) -> None:
    store.append_metrics(chunk_table([
        ("a", "loss", 1, [0, 1], [1.0, 0.5]),
        ("a", "loss", 4, [2], [0.4]),
        ("a", "acc", 5, [2], [0.3]),
        ("b", "loss", 9, [0], [9.0]),
    ]))
    t = store.metric_chunks_after("a", 1)
    assert sorted(zip(t["seq"].to_pylist(), t["key"].to_pylist())) == [(4, "loss"), (5, "acc")]
    assert store.metric_chunks_after("a", 4, ["loss"]).num_rows == 0
    assert store.metric_chunks_after("a", 4, ["acc"])["value"].to_pylist() == [[0.3]]
    assert store.metric_chunks_after("a", 0, []).num_rows == 0
    assert store.metric_chunks_after("zzz", -1).num_rows == 0


def check_metric_seqs_after(store) -> None:
    store.append_metrics(chunk_table([("a", "k", s, [s], [1.0]) for s in (1, 2, 5)]))
    assert store.metric_seqs("a", 1) == {2, 5}
    assert store.metric_seqs("a", 5) == set()


def check_quotes_in_ids_are_not_injection(store) -> None:
    store.upsert_runs([make_run("a")])
    assert store.get_run("a' OR '1'='1") is None


def _points(store, run_id):
    t = store.metric_chunks(run_id)
    return sorted((k, st, v) for k, steps, vals in zip(t["key"].to_pylist(), t["step"].to_pylist(),
                                                      t["value"].to_pylist())
                  for st, v in zip(steps, vals))


def check_rewind_drops_later_points_of_earlier_chunks_but_not_system_ones(store) -> None:
    store.append_metrics(chunk_table([
        ("a", "loss", 1, [0, 1, 2, 3], [1.0, 2.0, 3.0, 4.0]),  # straddles step 2
        ("a", "loss", 2, [5, 4], [6.0, 5.0]),  # wholly at or past it
        ("a", "sys/cpu", 2, [2, 3], [50.0, 60.0]),  # system metrics keep their own steps
        ("a", "loss", 9, [7], [8.0]),  # a later record than the rewind's
        ("b", "loss", 1, [3], [9.0]),  # another run
    ]))
    assert store.rewind_metrics("a", 5, 2) == 4
    want = [("loss", 0, 1.0), ("loss", 1, 2.0), ("loss", 7, 8.0), ("sys/cpu", 2, 50.0),
            ("sys/cpu", 3, 60.0)]
    assert _points(store, "a") == want
    assert sorted(store.metric_chunks("a")["seq"].to_pylist()) == [1, 2, 9]  # seq kept
    assert store.rewind_metrics("a", 5, 2) == 0  # applying it again changes nothing
    assert _points(store, "a") == want and _points(store, "b") == [("loss", 3, 9.0)]
    assert store.rewind_metrics("zzz", 5, 0) == 0


CHECKS = [v for k, v in sorted(globals().items()) if k.startswith("check_")]
