"""Rewinds in the ingester: a resumed attach that restarts at step ``s`` supersedes the
earlier attaches' points from ``s`` on, in WAL order, idempotently and crash-safely."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from assay.store.history import history_frame
from assay.store.ingest import Ingester
from assay.store.lance import LanceStore
from assay.store.memory import MemoryStore
from assay.store.wal import WalWriter, segment_path

A1 = 1 << 40  # seq base of attach 1


def _metrics(seq, keys, steps, cols):
    return {"k": "metrics", "seq": seq, "chunks": [
        {"keys": keys, "step": steps, "time": [float(s) for s in steps], "vals": cols}]}


def _write(tmp_path, rewind=2, record=False):
    """Attach 0 logs loss/acc at steps 0-5 and sys/cpu at 0-5, then dies; attach 1 restarts
    at ``rewind`` and logs loss at 2 and 3. Returns both segment paths. ``record``: the
    rewind is a ``rewind`` record written at attach 1's first log() (resume_from_step="auto"),
    after a config record, not a field of its run record."""
    p0, p1 = segment_path(tmp_path, "r1", 0), segment_path(tmp_path, "r1", 1)
    w = WalWriter(p0)
    w.append([{"k": "run", "seq": 1, "time": 1.0, "run_id": "r1", "project": "p",
               "name": "n", "config": {"lr": 0.1}, "attach": 0},
              _metrics(2, ["loss", "acc"], [0, 1, 2], [[9.0, 8.0, 7.0], [0.1, 0.2, 0.3]]),
              _metrics(3, ["sys/cpu"], [0, 1, 2, 3, 4, 5], [[50.0] * 6]),
              _metrics(4, ["loss", "acc"], [3, 4, 5], [[6.0, 0.5, 4.0], [0.4, 0.5, 0.6]])])
    w.close()
    w = WalWriter(p1)
    run = {"k": "run", "seq": A1 + 1, "time": 2.0, "run_id": "r1", "project": "p",
           "name": "n", "attach": 1}
    if record:
        w.append([run, {"k": "config", "seq": A1 + 2, "time": 2.0, "update": {"b": 1}},
                  {"k": "rewind", "seq": A1 + 3, "time": 2.0, "resume_from_step": rewind,
                   "attach": 1},
                  _metrics(A1 + 4, ["loss"], [2, 3], [[3.0, 2.0]]),
                  {"k": "status", "seq": A1 + 5, "status": "completed", "time": 3.0}])
        w.close()
        return [p0, p1]
    if rewind is not None:
        run["resume_from_step"] = rewind
    w.append([run, _metrics(A1 + 2, ["loss"], [2, 3], [[3.0, 2.0]]),
              {"k": "status", "seq": A1 + 3, "status": "completed", "time": 3.0}])
    w.close()
    return [p0, p1]


def _curve(store, key=None):
    h = history_frame("r1", store.metric_chunks("r1"))
    if key is not None:
        h = h.filter(h["key"] == key)
    return list(zip(h["key"].to_list(), h["step"].to_list(), h["value"].to_list()))


AFTER = [("acc", 0, 0.1), ("acc", 1, 0.2), ("loss", 0, 9.0), ("loss", 1, 8.0),
         ("loss", 2, 3.0), ("loss", 3, 2.0)] + [("sys/cpu", s, 50.0) for s in range(6)]


def _check_after(store):
    assert _curve(store) == AFTER
    run = store.get_run("r1")
    assert run.summary["loss"] == {"last": 2.0, "step": 3, "min": 2.0, "max": 9.0}
    assert run.summary["acc"] == {"last": 0.2, "step": 1, "min": 0.1, "max": 0.2}
    assert run.summary["sys/cpu"]["step"] == 5  # system metrics are never rewound
    assert run.last_step == 3 and run.attach == 1 and run.status == "completed"


def _store(kind, tmp_path):
    return MemoryStore() if kind == "memory" else LanceStore(tmp_path / "db")


STORES = ["memory", pytest.param("lance", marks=pytest.mark.integration)]


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("how", ["one pass", "segment by segment", "tiny batches"])
@pytest.mark.parametrize("record", [False, True], ids=["run record", "rewind record"])
def test_a_rewind_supersedes_earlier_points_from_its_step_and_rebuilds_the_summary(
        tmp_path, kind, how, record):
    paths = _write(tmp_path, record=record)
    store = _store(kind, tmp_path)
    seen = []
    ing = Ingester(store, on_rewind=lambda rw, n: seen.append((rw.step, rw.attach, n)))
    if how == "one pass":
        ing.ingest(paths)
    elif how == "segment by segment":
        ing.ingest(paths[:1])
        assert _curve(store, "loss")[-1] == ("loss", 5, 4.0)  # the dead attempt's tail
        ing.ingest(paths[1:])
    else:
        ing.ingest(paths, batch_bytes=150)
    _check_after(store)
    assert seen == [(2, 1, 8)]  # loss and acc at steps 2-5 of attach 0


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("record", [False, True], ids=["run record", "rewind record"])
def test_replaying_the_same_segments_applies_the_rewind_once(tmp_path, kind, record):
    paths = _write(tmp_path, record=record)
    store = _store(kind, tmp_path)
    Ingester(store).ingest(paths)
    calls = []
    Ingester(store, on_rewind=lambda rw, n: calls.append(n)).ingest(paths)  # from offset 0
    _check_after(store)
    # The rewind was recorded: a fresh ingester skips it like every applied record.
    assert calls == []
    run = store.get_run("r1")
    store.upsert_runs([dataclasses.replace(run, ingested_seq=-1)])  # as if nothing was in
    Ingester(store, on_rewind=lambda rw, n: calls.append(n)).ingest(paths)
    _check_after(store)
    assert calls == [0]  # applied again: nothing left to drop, nothing duplicated


class _Fails(MemoryStore):
    what = ""

    def append_metrics(self, table):
        if self.what == "append":
            self.what = ""
            raise OSError("disk vanished after the rewind's commit")
        super().append_metrics(table)

    def upsert_runs(self, runs):
        if self.what == "upsert" and any(r.attach == 1 for r in runs):
            self.what = ""
            raise OSError("disk vanished before the run's row")
        super().upsert_runs(runs)


@pytest.mark.parametrize("what", ["append", "upsert"])
def test_a_crash_after_the_rewind_never_shows_a_mixed_curve_and_the_replay_completes(
        tmp_path, what):
    paths = _write(tmp_path)
    store = _Fails()
    ing = Ingester(store)
    ing.ingest(paths[:1])
    store.what = what
    with pytest.raises(OSError):
        ing.ingest(paths[1:])
    loss = _curve(store, "loss")
    # Either the old prefix alone (the new points never came) or the new curve: no old tail.
    assert loss in ([("loss", 0, 9.0), ("loss", 1, 8.0)], [p for p in AFTER if p[0] == "loss"])
    Ingester(store).ingest(paths)  # the next process replays both segments
    _check_after(store)


@pytest.mark.integration
def test_lance_rewind_interrupted_between_its_commits_reads_as_before_and_completes(
        tmp_path, monkeypatch):
    paths = _write(tmp_path)
    store = LanceStore(tmp_path / "db")
    Ingester(store).ingest(paths[:1])
    before = _curve(store)
    tbl = store.table("metrics")
    real = type(tbl).delete

    def dies(self, where):
        raise OSError("killed between the copies and the delete")

    monkeypatch.setattr(type(tbl), "delete", dies)
    with pytest.raises(OSError):
        Ingester(store).ingest(paths[1:])
    assert _curve(store) == before  # the trimmed copies hold the same points
    monkeypatch.setattr(type(tbl), "delete", real)
    Ingester(store).ingest(paths)
    _check_after(store)
    rows = store.metric_chunks("r1")
    assert sorted(zip(rows["key"].to_pylist(), rows["seq"].to_pylist())) == [
        ("acc", 4), ("loss", 4), ("loss", A1 + 2), ("sys/cpu", 3)]  # no copy twice


@pytest.mark.parametrize("bad", [-1, "0", 1.5, True])
def test_a_rewind_that_is_not_a_step_is_ignored_with_a_warning(tmp_path, caplog, bad):
    store = MemoryStore()
    with caplog.at_level(logging.WARNING, logger="assay.store.ingest"):
        Ingester(store).ingest(_write(tmp_path, rewind=bad))
    assert "resume_from_step" in caplog.text
    # As a resume without a rewind: the dead attempt's tail stays.
    assert [s for _, s, _ in _curve(store, "loss")] == [0, 1, 2, 3, 4, 5]
