from __future__ import annotations

import math

import pytest
from assay.store.ingest import Ingester, IngestLock, sync_orphans
from assay.store.memory import MemoryStore
from assay.store.records import RunStatus, merge_summary
from assay.store.wal import WalWriter, segment_path


def _history(store, run_id):
    t = store.metric_chunks(run_id)
    pts = []
    for key, steps, vals in zip(t["key"].to_pylist(), t["step"].to_pylist(), t["value"].to_pylist()):
        pts += [(key, s, v) for s, v in zip(steps, vals)]
    return sorted(pts)


def _write_run(path, run_id="r1", n=3, finish=True):
    w = WalWriter(path)
    recs = [{"k": "run", "seq": 1, "time": 1.0, "run_id": run_id, "project": "p", "name": "n",
             "config": {"lr": 0.1}, "attach": 0}]
    for i in range(n):
        recs.append({"k": "metrics", "seq": 2 + i, "chunks": [
            {"keys": ["loss", "acc"], "step": [i], "time": [1.0], "vals": [[1.0 / (i + 1)], [i / 10]]}]})
    recs.append({"k": "config", "seq": 2 + n, "update": {"depth": 3}, "time": 2.0})
    if finish:
        recs.append({"k": "status", "seq": 3 + n, "status": "completed", "time": 3.0})
    w.append(recs)
    return w


def test_ingester_applies_records_and_builds_summary(tmp_path):
    p = segment_path(tmp_path, "r1", 0)
    _write_run(p).close()
    store = MemoryStore()
    st = Ingester(store).ingest([p])
    run = store.get_run("r1")
    assert st.points == 6 and st.runs == 1
    assert run.status is RunStatus.COMPLETED
    assert run.config == {"lr": 0.1, "depth": 3}
    assert run.summary["loss"] == {"last": 1 / 3, "step": 2, "min": 1 / 3, "max": 1.0}
    assert run.last_step == 2
    assert len(_history(store, "r1")) == 6


def test_ingesting_twice_never_duplicates(tmp_path):
    p = segment_path(tmp_path, "r1", 0)
    _write_run(p).close()
    store = MemoryStore()
    Ingester(store).ingest([p])
    Ingester(store).ingest([p])  # a fresh ingester replays from offset 0
    assert len(_history(store, "r1")) == 6


class _CountsCommits(MemoryStore):
    def __init__(self):
        super().__init__()
        self.appends = 0

    def append_metrics(self, table):
        self.appends += 1
        super().append_metrics(table)


def test_a_large_backlog_is_ingested_in_bounded_batches_with_the_same_result(tmp_path):
    # Two segments, one with a torn tail: small batches must give exactly one pass's result.
    whole, batched = MemoryStore(), _CountsCommits()
    paths = [segment_path(tmp_path, rid, 0) for rid in ("r1", "r2")]
    for rid, p in zip(("r1", "r2"), paths):
        _write_run(p, rid, n=40, finish=rid == "r1").close()
    with open(paths[1], "ab") as f:
        f.write(b"AW\x05")  # a torn last frame
    one = Ingester(whole).ingest(paths)
    many = Ingester(batched).ingest(paths, batch_bytes=600)
    assert batched.appends > 5  # it really went in pieces
    assert (many.records, many.points, many.runs, many.torn_bytes) == (
        one.records, one.points, one.runs, one.torn_bytes) == (85, 160, 2, 3)
    for rid in ("r1", "r2"):
        assert _history(batched, rid) == _history(whole, rid)
        a, b = whole.get_run(rid), batched.get_run(rid)
        assert (a.status, a.summary, a.config, a.last_step) == (b.status, b.summary, b.config,
                                                                b.last_step)
    assert batched.get_run("r1").status is RunStatus.COMPLETED


class _FailsOnRunUpsert(MemoryStore):
    def __init__(self):
        super().__init__()
        self.fail = True

    def upsert_runs(self, runs):
        if self.fail:
            raise OSError("disk vanished between the two commits")
        super().upsert_runs(runs)


def test_crash_between_metrics_and_run_commit_is_replayed_without_duplicates(tmp_path):
    p = segment_path(tmp_path, "r1", 0)
    _write_run(p).close()
    store = _FailsOnRunUpsert()
    with pytest.raises(OSError):
        Ingester(store).ingest([p])
    assert len(_history(store, "r1")) == 6  # metrics committed, run row not
    store.fail = False
    Ingester(store).ingest([p])
    assert len(_history(store, "r1")) == 6
    assert store.get_run("r1").status is RunStatus.COMPLETED


def test_sync_adopts_orphan_marks_unfinished_run_crashed_and_deletes_segment(tmp_path):
    p = segment_path(tmp_path / "wal", "r1", 0)
    _write_run(p, finish=False).close()
    store = MemoryStore()
    st = sync_orphans(tmp_path, store, IngestLock(tmp_path))
    assert st.segments_done == [p] and not p.exists()
    run = store.get_run("r1")
    assert run.status is RunStatus.CRASHED and "write-ahead log" in run.error


def test_sync_leaves_live_segments_alone(tmp_path):
    p = segment_path(tmp_path / "wal", "r1", 0)
    w = _write_run(p, finish=False)
    store = MemoryStore()
    assert sync_orphans(tmp_path, store, IngestLock(tmp_path)).segments_done == []
    assert store.get_run("r1") is None and p.exists()
    w.close()


def test_sync_skips_torn_tail_and_keeps_what_is_intact(tmp_path):
    p = segment_path(tmp_path / "wal", "r1", 0)
    _write_run(p, finish=False).close()
    with open(p, "ab") as f:
        f.write(b"AW\x10\x00\x00\x00garbage")
    store = MemoryStore()
    st = sync_orphans(tmp_path, store, IngestLock(tmp_path))
    assert st.torn_bytes == 13
    assert len(_history(store, "r1")) == 6


def test_merge_summary_tracks_last_min_max_ignoring_nan():
    s: dict = {}
    merge_summary(s, ["x"], [0, 1, 2], [[2.0, math.nan, 1.0]])
    merge_summary(s, ["x"], [3], [[math.nan]])
    assert math.isnan(s["x"]["last"]) and s["x"]["step"] == 3
    assert s["x"]["min"] == 1.0 and s["x"]["max"] == 2.0
    merge_summary(s, ["y"], [0], [[math.inf]])
    assert s["y"]["max"] == math.inf


def test_ingest_lock_times_out_while_another_holder_has_it(tmp_path):
    a, b = IngestLock(tmp_path), IngestLock(tmp_path)
    assert a.acquire(0)
    assert a.acquire(0)  # reentrant for the same object
    assert not b.acquire(0.05)
    a.release()
    assert not b.acquire(0)
    a.release()
    assert b.acquire(0)
    b.release()


def _poisoned(path, run_id):
    # What a writer without the SDK's checks could leave: an int past int64, and steps past
    # the int64 column, between good records.
    w = WalWriter(path)
    w.append([
        {"k": "run", "seq": 1, "time": 1.0, "run_id": run_id, "project": "p", "name": "n",
         "config": {}, "attach": 0},
        {"k": "metrics", "seq": 2, "chunks": [
            {"keys": ["n"], "step": [0], "time": [1.0], "vals": [[2**64]]}]},
        {"k": "metrics", "seq": 3, "chunks": [
            {"keys": ["n"], "step": [2**63], "time": [1.0], "vals": [[1.0]]}]},
        {"k": "metrics", "seq": 4, "chunks": [
            {"keys": ["n"], "step": [1], "time": [1.0], "vals": [[5.0]]}]},
        {"k": "status", "seq": 5, "status": "completed", "time": 2.0},
    ])
    return w


def test_values_and_steps_the_columns_cannot_hold_do_not_stall_other_runs(tmp_path):
    store = MemoryStore()
    good, bad = segment_path(tmp_path, "good", 0), segment_path(tmp_path, "bad", 0)
    _write_run(good, "good").close()
    _poisoned(bad, "bad").close()
    Ingester(store).ingest([bad, good])
    assert store.get_run("good").status is RunStatus.COMPLETED
    assert _history(store, "good") and store.get_run("bad").status is RunStatus.COMPLETED
    assert _history(store, "bad") == [("n", 0, 2.0**64), ("n", 1, 5.0)]  # step 2**63 skipped
    assert store.get_run("bad").last_step == 1


class _FailsFor(MemoryStore):
    """Refuses metric rows of one run (an unexpected failure tied to a segment)."""

    def __init__(self, run_id):
        super().__init__()
        self.bad = run_id

    def append_metrics(self, table):
        if self.bad in table.column("run_id").to_pylist():
            raise OSError("this run's rows cannot be written")
        super().append_metrics(table)


def test_a_segment_that_fails_is_kept_and_the_others_still_go_in(tmp_path):
    store = _FailsFor("r2")
    paths = [segment_path(tmp_path / "wal", rid, 0) for rid in ("r1", "r2", "r3")]
    for rid, p in zip(("r1", "r2", "r3"), paths):
        _write_run(p, rid).close()
    st = Ingester(store).ingest(paths)
    assert st.failed == [paths[1]]
    assert store.get_run("r1").status is store.get_run("r3").status is RunStatus.COMPLETED
    assert store.get_run("r2") is None
    st = sync_orphans(tmp_path, store, IngestLock(tmp_path))
    assert st.failed == [paths[1]] and paths[1].exists()  # kept, nothing lost
    assert not paths[0].exists() and not paths[2].exists()
    store.bad = None
    st = sync_orphans(tmp_path, store, IngestLock(tmp_path))
    assert not st.failed and store.get_run("r2").status is RunStatus.COMPLETED
    assert len(_history(store, "r2")) == 6


def test_the_same_ingester_retrying_after_a_failed_commit_adds_no_duplicates(tmp_path):
    p = segment_path(tmp_path, "r1", 0)
    _write_run(p).close()
    store = _FailsOnRunUpsert()
    ing = Ingester(store)
    with pytest.raises(OSError):
        ing.ingest([p])
    store.fail = False  # the transient error is over
    ing.ingest([p])  # the daemon's next pass, same ingester
    t = store.metric_chunks("r1")
    assert sum(len(s) for s in t["step"].to_pylist()) == 6  # raw rows, not deduplicated reads
    assert store.get_run("r1").status is RunStatus.COMPLETED


def test_a_segment_with_intact_records_after_a_damaged_one_is_set_aside_not_deleted(tmp_path):
    p = segment_path(tmp_path / "wal", "r1", 0)
    w = _write_run(p, finish=False)
    w.close()
    good = p.read_bytes()
    tail = WalWriter(tmp_path / "x.wal")
    tail.append([{"k": "status", "seq": 9, "status": "completed", "time": 3.0}])
    tail.close()
    p.write_bytes(good + b"AW\x10\x00\x00\x00junk" + (tmp_path / "x.wal").read_bytes())
    store = MemoryStore()
    st = sync_orphans(tmp_path, store, IngestLock(tmp_path))
    assert not p.exists()
    kept = tmp_path / "wal-quarantine" / "r1" / p.name
    assert st.failed == [kept] and kept.read_bytes().endswith((tmp_path / "x.wal").read_bytes())
    assert len(_history(store, "r1")) == 6  # what came before the damage is in


def test_runs_written_by_someone_else_are_reread_not_overwritten_with_a_stale_copy(tmp_path):
    # The daemon caches the runs it ingests; an agent's stale mark (or another ingester)
    # written meanwhile must survive the daemon's next pass.
    from dataclasses import replace

    p = segment_path(tmp_path, "r1", 0)
    w = _write_run(p, finish=False)
    store = MemoryStore()
    daemon = Ingester(store)
    daemon.ingest([p])
    run = store.get_run("r1")
    store.upsert_runs([replace(run, tags=("stale",))])  # e.g. agents.runner mark_stale
    w.append([{"k": "status", "seq": 10, "status": "completed", "time": 3.0}])
    w.close()
    daemon.ingest([p])
    after = store.get_run("r1")
    assert after.tags == ("stale",) and after.status is RunStatus.COMPLETED


def test_lance_runs_version_moves_with_every_write(tmp_path):
    from assay.store.lance import LanceStore
    from assay.store.records import RunRecord

    store = LanceStore(tmp_path)
    assert store.runs_version() is None
    store.upsert_runs([RunRecord("a", "p", "a", RunStatus.RUNNING, 1.0, 1.0)])
    v1 = store.runs_version()
    other = LanceStore(tmp_path)  # another process's handle
    other.upsert_runs([RunRecord("b", "p", "b", RunStatus.RUNNING, 1.0, 1.0)])
    assert store.runs_version() not in (None, v1)


def test_a_table_whose_creation_was_cut_short_is_recreated_not_left_to_fail(tmp_path, caplog):
    """helper-64: a disk that filled while a fresh directory's first ingest created the
    metrics table left a folder with no committed version; every later ingest (new runs,
    `assay sync`) failed on 'Table metrics was not found' until someone repaired it by hand."""
    from assay.errors import AssayError
    from assay.store.lance import LanceStore

    half = tmp_path / "lance" / "metrics.lance"
    (half / "_versions").mkdir(parents=True)
    (half / "data").mkdir()
    (half / "data" / "partial.lance").write_bytes(b"\0" * 100)  # what the disk took
    store = LanceStore(tmp_path)
    assert store.table("metrics") is None, "a reader sees no table, as before"
    _write_run(segment_path(tmp_path / "wal", "r1", 0)).close()
    with caplog.at_level("WARNING", logger="assay"):
        sync_orphans(tmp_path, store, IngestLock(tmp_path), Ingester(store))
    assert "left half-created" in caplog.text
    assert len(_history(store, "r1")) == 6 and store.get_run("r1").status == "completed"
    # A table with committed versions that does not open is damaged: never removed here.
    bad = tmp_path / "other"
    (bad / "lance" / "runs.lance" / "_versions").mkdir(parents=True)
    (bad / "lance" / "runs.lance" / "_versions" / "1.manifest").write_bytes(b"garbage")
    with pytest.raises((AssayError, RuntimeError)):  # LanceDB's own for a torn manifest
        LanceStore(bad).write_table("runs")
    assert (bad / "lance" / "runs.lance" / "_versions" / "1.manifest").exists()


def test_a_run_resumed_in_a_backlog_is_applied_attach_by_attach_whatever_the_batch(tmp_path):
    # Attach 0 (finished) and attach 1 (resumed, running) wait together: a batch that ends
    # inside attach 0 must not apply attach 1 before attach 0's tail (its 'completed').
    a, b = segment_path(tmp_path, "r1", 0), segment_path(tmp_path, "r1", 1)
    _write_run(a, "r1", n=40).close()
    w = WalWriter(b)
    w.append([{"k": "run", "seq": (1 << 40) | 1, "time": 5.0, "run_id": "r1", "project": "p",
               "name": "n", "config": {}, "attach": 1},
              {"k": "metrics", "seq": (1 << 40) | 2, "chunks": [
                  {"keys": ["loss", "acc"], "step": [40], "time": [6.0], "vals": [[-1.0], [0.9]]}]}])
    w.close()
    results = []
    for batch in (64 << 20, 600):
        store = MemoryStore()
        Ingester(store).ingest([a, b], batch_bytes=batch)
        r = store.get_run("r1")
        results.append((r.status, r.summary["loss"]["last"], r.last_step, r.ingested_seq))
    assert results[0] == results[1] == (RunStatus.RUNNING, -1.0, 40, (1 << 40) | 2)


def test_batch_bytes_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="positive"):
        Ingester(MemoryStore()).ingest([segment_path(tmp_path, "r1", 0)], batch_bytes=0)


def test_the_ingest_lock_keeps_other_threads_out_and_lets_its_holder_back_in(tmp_path):
    """One IngestLock object is shared by a server's request threads and its ingester: a
    second thread must wait for the holder, not enter as if it re-entered (two threads then
    wrote at once, and a lease was handed out twice)."""
    import threading

    lock = IngestLock(tmp_path)
    assert lock.acquire() and lock.acquire(0)  # re-entry by the holder
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(lock.acquire(0.2)))
    t.start()
    t.join()
    assert got == [False]  # the other thread waited out its timeout
    lock.release()
    t = threading.Thread(target=lambda: got.append(lock.acquire(0)))
    t.start()
    t.join()
    assert got == [False, False]  # still held once
    lock.release()
    inside = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with lock:
            inside.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert inside.wait(10) and not lock.acquire(0)
    release.set()
    t.join()
    assert lock.acquire(1)
    other = IngestLock(tmp_path)  # another holder of the same file: the flock decides
    assert not other.acquire(0)
    lock.release()
    assert other.acquire(0)
    other.release()


def test_the_ingest_lock_is_released_by_its_holder_only_and_free_in_a_forked_child(tmp_path):
    import os
    import threading

    lock = IngestLock(tmp_path)
    assert lock.acquire()
    errors: list[BaseException] = []

    def release() -> None:
        try:
            lock.release()
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=release)
    t.start()
    t.join()
    assert len(errors) == 1 and "does not hold it" in str(errors[0])
    assert not IngestLock(tmp_path).acquire(0)  # still held: nothing was undone
    pid = os.fork()
    if pid == 0:  # the child: the holding thread is not here, the parent's flock is
        code = 0 if lock.acquire(0) is False and lock._depth == 0 else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()


def test_the_ingest_daemon_backs_off_and_logs_a_repeated_failure_once(tmp_path, monkeypatch,
                                                                      caplog):
    """helper-64: a daemon whose every round failed retried each second with a full
    traceback each time (213 KB of log in two minutes on a full disk)."""
    from assay.store import ingestd

    d = ingestd.IngestDaemon(tmp_path)
    rounds = iter([OSError(28, "No space left on device")] * 6 + [OSError(5, "I/O error")])

    def step(force=False):
        exc = next(rounds, None)
        if exc is None:
            import shutil

            shutil.rmtree(tmp_path)  # ends run_forever
            return 0
        raise exc

    waits = []
    monkeypatch.setattr(d, "step", step)
    monkeypatch.setattr(ingestd.time, "sleep", lambda s: waits.append(s))
    with caplog.at_level("WARNING", logger="assay"):
        d.run_forever()
    failed = [w for w in waits if w != ingestd.POLL]
    assert failed == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]  # a new error: still failing
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 2, "once per error, not once per round"
    assert "failed again (6 in a row)" in caplog.text
