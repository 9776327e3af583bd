from __future__ import annotations

import pytest
from assay.store.lance import LanceStore
from assay.store.memory import MemoryStore
from store_contract import CHECKS


@pytest.fixture(params=["memory", pytest.param("lance", marks=pytest.mark.integration)])
def store(request, tmp_path):
    if request.param == "memory":
        return MemoryStore()
    return LanceStore(tmp_path)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_store_contract(store, check):
    check(store)


@pytest.mark.integration
def test_lance_compaction_merges_fragments_and_indexes_run_id(tmp_path):
    from store_contract import chunk_table

    s = LanceStore(tmp_path)
    for i in range(20):
        s.append_metrics(chunk_table([(f"r{i % 3}", "loss", i, [i], [float(i)])]))
    assert s.table_stats()["metrics"]["fragments"] == 20
    s.compact()
    st = s.table_stats()["metrics"]
    assert st["fragments"] == 1 and st["rows"] == 20
    tbl = s._table("metrics", create=False)
    assert any(list(ix.columns) == ["run_id"] for ix in tbl.list_indices())
    assert s.metric_chunks("r1")["seq"].to_pylist() == [1, 4, 7, 10, 13, 16, 19] or sorted(
        s.metric_chunks("r1")["seq"].to_pylist()) == [1, 4, 7, 10, 13, 16, 19]


@pytest.mark.integration
def test_lance_reader_sees_other_handles_commits(tmp_path):
    from store_contract import make_run

    writer, reader = LanceStore(tmp_path), LanceStore(tmp_path)
    writer.upsert_runs([make_run("a")])
    assert reader.get_run("a") is not None
    writer.upsert_runs([make_run("b")])
    assert reader.runs_table().num_rows == 2
