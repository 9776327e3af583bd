"""The writer thread and the WAL under faults: log order, a disk that refuses writes, big batches.

Real WAL files in ``tmp_path``; a full disk is a real ``RLIMIT_FSIZE`` in a child process, or
``os.write`` failing (or writing short) for the segment's descriptor only.
"""

from __future__ import annotations

import errno
import math
import os
import subprocess
import sys
import time

import pytest
from assay.sdk import writer as writer_module
from assay.sdk.writer import WalWriteError, Writer
from assay.store.history import history_frame
from assay.store.ingest import Ingester
from assay.store.memory import MemoryStore
from assay.store.wal import WalWriter, encode, read_wal, segment_path


def _writer(tmp_path, **kw):
    wal = WalWriter(segment_path(tmp_path, "r1", 0))
    w = Writer(wal, 0, 0.05, {}, **kw)
    w.queue.append({"k": "run", "time": 1.0, "run_id": "r1", "project": "p", "name": "n",
                    "attach": 0})
    return w


def _points(path):
    """(key, step, value) of every point in the segment, in file order."""
    out = []
    for rec in read_wal(path):
        if rec.data["k"] == "metrics":
            for ch in rec.data["chunks"]:
                for key, col in zip(ch["keys"], ch["vals"]):
                    out += [(key, s, v) for s, v in zip(ch["step"], col)]
    return out


def _seqs(path):
    return [r.data["seq"] for r in read_wal(path)]


class _Disk:
    """Makes ``os.write`` on one descriptor write ``room`` more bytes at most, then fail."""

    def __init__(self, monkeypatch, fd):
        self.fd, self.room = fd, None
        real = os.write

        def write(f, data):
            if f != self.fd or self.room is None:
                return real(f, data)
            if self.room <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            n = real(f, bytes(data[: self.room]))
            self.room -= n
            return n

        monkeypatch.setattr(os, "write", write)


# -- 1. chunks in log order ------------------------------------------------------------------------
def test_interleaved_key_sets_keep_log_order_so_the_summary_last_is_the_last_logged(tmp_path):
    w = _writer(tmp_path)
    for s in range(100):
        m = {"loss": 1000.0 - s}
        if s == 50:
            m["val_acc"] = 0.5
        w.queue.append((s, 1.0 + s, m))
    w._drain()
    assert w.summary["loss"] == {"last": 901.0, "step": 99, "min": 901.0, "max": 1000.0}
    assert w.summary["val_acc"]["last"] == 0.5
    [rec] = [r.data for r in read_wal(w._wal.path) if r.data["k"] == "metrics"]
    assert [(ch["keys"], ch["step"][0], ch["step"][-1]) for ch in rec["chunks"]] == [
        (["loss"], 0, 49), (["loss", "val_acc"], 50, 50), (["loss"], 51, 99)]
    w._wal.close()
    store = MemoryStore()
    Ingester(store).ingest([w._wal.path])
    assert store.get_run("r1").summary["loss"] == w.summary["loss"]


def test_a_step_logged_twice_in_one_batch_keeps_the_later_value_in_the_store(tmp_path):
    w = _writer(tmp_path)
    w.queue.append((0, 1.0, {"a": 1.0}))
    w.queue.append((1, 2.0, {"a": 2.0, "b": 0.0}))
    w.queue.append((1, 2.0, {"a": 3.0}))  # step 1 again, with the first step's keys
    w._drain()
    w._wal.close()
    assert w.summary["a"]["last"] == 3.0
    store = MemoryStore()
    Ingester(store).ingest([w._wal.path])
    h = history_frame("r1", store.metric_chunks("r1", ["a"]))
    assert h["value"].to_list() == [1.0, 3.0]
    assert store.get_run("r1").summary["a"]["last"] == 3.0


# -- 2. a disk that refuses writes ---------------------------------------------------------------
def test_a_short_write_then_enospc_is_cut_back_so_later_appends_stay_readable(tmp_path,
                                                                             monkeypatch):
    p = tmp_path / "seg.wal"
    wal = WalWriter(p)
    wal.append([{"k": "x", "seq": 1}])
    good = os.path.getsize(p)
    disk = _Disk(monkeypatch, wal._fd)
    disk.room = 7  # half a frame header, then ENOSPC
    with pytest.raises(OSError) as e:
        wal.append([{"k": "x", "seq": 2, "pad": "y" * 100}])
    assert e.value.errno == errno.ENOSPC
    assert os.path.getsize(p) == good == wal.bytes_written
    disk.room = None  # space is back
    wal.append([{"k": "x", "seq": 3}])
    wal.close()
    assert _seqs(p) == [1, 3]
    assert next(iter(read_wal(p, good))).end == os.path.getsize(p)


def test_a_failed_fsync_cuts_the_frames_back(tmp_path, monkeypatch):
    p = tmp_path / "seg.wal"
    wal = WalWriter(p)
    wal.append([{"k": "x", "seq": 1}])
    good = os.path.getsize(p)
    real = os.fsync

    def fsync(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError):
        wal.append([{"k": "x", "seq": 2}])
    monkeypatch.setattr(os, "fsync", real)
    assert os.path.getsize(p) == good
    wal.append([{"k": "x", "seq": 2}])
    wal.close()
    assert _seqs(p) == [1, 2]


def test_flush_on_a_full_disk_raises_at_once_and_the_points_are_written_once_space_returns(
        tmp_path, monkeypatch):
    w = _writer(tmp_path)
    disk = _Disk(monkeypatch, w._wal._fd)
    w.start()
    try:
        for s in range(10):
            w.queue.append((s, 1.0, {"loss": float(s)}))
        assert w.flush(5)
        good = os.path.getsize(w._wal.path)
        disk.room = 40  # the next frame does not fit
        for s in range(10, 20):
            w.queue.append((s, 1.0, {"loss": float(s)}))
        w.queue.append({"k": "config", "time": 1.0, "update": {"lr": 0.1}})
        t = time.monotonic()
        with pytest.raises(WalWriteError, match="No space left on device") as e:
            w.flush(10)
        assert time.monotonic() - t < 2  # an answer, not a timeout
        assert "held in memory and retried" in e.value.message
        assert isinstance(w.error, WalWriteError)
        assert os.path.getsize(w._wal.path) == good  # no torn frame left behind
        assert w.summary["loss"]["last"] == 9.0  # the summary counts only durable points
        for s in range(20, 30):
            w.queue.append((s, 1.0, {"loss": float(s)}))
        with pytest.raises(WalWriteError):
            w.flush(10)  # still full: still an error, and still nothing lost
        disk.room = None  # space is back
        assert w.flush(10)
        assert w.error is None
    finally:
        w.stop(10)
        w._wal.close()
    assert _points(w._wal.path) == [("loss", s, float(s)) for s in range(30)]
    seqs = _seqs(w._wal.path)
    assert seqs == sorted(set(seqs))
    recs = [r.data for r in read_wal(w._wal.path)]
    at = [r["k"] for r in recs].index("config")  # logged after step 19, before step 20
    assert max(s for r in recs[:at] if r["k"] == "metrics" for ch in r["chunks"]
               for s in ch["step"]) == 19
    assert min(s for r in recs[at:] if r["k"] == "metrics" for ch in r["chunks"]
               for s in ch["step"]) == 20
    assert w.summary["loss"]["last"] == 29.0 and w.points_written == 30 and w.lost is None


def test_records_the_disk_never_takes_are_reported_after_stop_gives_up(tmp_path, monkeypatch):
    w = _writer(tmp_path, give_up_after=0.5)
    disk = _Disk(monkeypatch, w._wal._fd)
    w.start()
    assert w.flush(5)
    disk.room = 0
    for s in range(5):
        w.queue.append((s, 1.0, {"a": 1.0, "b": 2.0}))
    w.queue.append({"k": "status", "time": 1.0, "status": "completed", "error": ""})
    t = time.monotonic()
    w.stop(10)
    assert not w.is_alive() and time.monotonic() - t < 5
    assert isinstance(w.lost, WalWriteError)
    assert (w.lost_records, w.lost_points) == (2, 10)
    assert "10 points in 2 records" in w.lost.message and "No space left" in w.lost.message
    w._wal.close()
    assert [r.data["k"] for r in read_wal(w._wal.path)] == ["run"]


CHILD = r"""
import os, resource, signal, sys
from assay.sdk.writer import WalWriteError, Writer
from assay.store.wal import WalWriter
w = Writer(WalWriter(__import__("pathlib").Path(sys.argv[1])), 0, 0.05, {})
w.start()
for s in range(10):
    w.queue.append((s, 1.0, {"loss": float(s), "acc": s / 10}))
assert w.flush(5)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(sys.argv[1]) + 100, hard))
for s in range(10, 200):
    w.queue.append((s, 1.0, {"loss": float(s), "acc": s / 10}))
try:
    w.flush(10)
    print("flushed")
except WalWriteError as e:
    print("error", os.path.getsize(sys.argv[1]), e.message)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
for s in range(200, 210):
    w.queue.append((s, 1.0, {"loss": float(s), "acc": s / 10}))
print("ok" if w.flush(10) else "timeout")
w.stop(10)
w._wal.close()
"""


def test_a_real_file_size_limit_loses_nothing_and_duplicates_nothing(tmp_path):
    p = tmp_path / "r1" / "000000.wal"
    out = subprocess.run([sys.executable, "-c", CHILD, str(p)], check=False,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first.startswith("error ") and "File too large" in first
    assert second == "ok"
    pts = _points(p)
    assert [s for k, s, _ in pts if k == "loss"] == list(range(210))
    assert [s for k, s, _ in pts if k == "acc"] == list(range(210))
    assert _seqs(p) == sorted(set(_seqs(p)))
    assert next(iter(read_wal(p))).end > 0 and list(read_wal(p))[-1].end == os.path.getsize(p)


# -- 3. bounded work per frame ---------------------------------------------------------------------
def test_a_big_batch_becomes_bounded_records_in_order_with_increasing_seqs(tmp_path):
    w = _writer(tmp_path)
    keys = [f"layer{i}/grad_norm" for i in range(500)]
    for s in range(100):  # 50,000 points arrive in one flush interval
        w.queue.append((s, 1.0, {k: s + i / 1000 for i, k in enumerate(keys)}))
        if s == 60:
            w.queue.append({"k": "config", "time": 1.0, "update": {"lr": 0.1}})
    w._drain()
    w._wal.close()
    recs = [r.data for r in read_wal(w._wal.path)]
    metrics = [r for r in recs if r["k"] == "metrics"]
    sizes = [sum(len(ch["step"]) * len(ch["keys"]) for ch in r["chunks"]) for r in metrics]
    assert len(metrics) >= 3 and max(sizes) <= 20_000  # one json.dumps holds the GIL ~10 ms
    assert sum(sizes) == 50_000
    seqs = [r["seq"] for r in recs]
    assert seqs == list(range(1, len(recs) + 1))
    steps_before_config = [s for r in recs[: [r["k"] for r in recs].index("config")]
                           if r["k"] == "metrics" for ch in r["chunks"] for s in ch["step"]]
    assert steps_before_config == list(range(61))
    assert [s for k, s, _ in _points(w._wal.path) if k == keys[7]] == list(range(100))
    assert all(len(encode(r)) < 400_000 for r in recs)
    last = 99 + 3 / 1000
    assert w.summary[keys[3]] == {"last": last, "step": 99, "min": 3 / 1000, "max": last}
    store = MemoryStore()
    st = Ingester(store).ingest([w._wal.path])
    assert st.points == 50_000
    assert store.get_run("r1").summary[keys[3]] == w.summary[keys[3]]


def test_one_step_with_more_keys_than_a_record_holds_is_not_split(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_module, "MAX_RECORD_VALUES", 100)
    w = _writer(tmp_path)
    big = {f"k{i}": float(i) for i in range(105)}
    w.queue.append((0, 1.0, {"x": 1.0}))
    w.queue.append((1, 1.0, big))
    w.queue.append((2, 1.0, {"x": math.nan}))
    w._drain()
    w._wal.close()
    metrics = [r.data for r in read_wal(w._wal.path) if r.data["k"] == "metrics"]
    assert [[ch["step"] for ch in r["chunks"]] for r in metrics] == [[[0]], [[1]], [[2]]]
    assert w.summary["x"]["step"] == 2 and math.isnan(w.summary["x"]["last"])


def test_a_disk_that_fills_in_the_middle_of_a_long_drain_keeps_the_rest_in_order(tmp_path,
                                                                                 monkeypatch):
    monkeypatch.setattr(writer_module, "WRITE_EVERY_S", 0.0)  # write after every record
    monkeypatch.setattr(writer_module, "MAX_RECORD_VALUES", 302)  # 100 steps of one key
    w = _writer(tmp_path)
    w._drain()
    disk = _Disk(monkeypatch, w._wal._fd)
    for s in range(1000):
        w.queue.append((s, 1.0, {"x": float(s)}))
    req = writer_module._FlushRequest()
    w.queue.append(req)
    w.queue.append({"k": "summary", "time": 1.0, "update": {"best": 1}})
    disk.room = 4500  # about two records of 100 steps
    w._drain()
    assert req.done.is_set() and "No space left" in req.error  # answered, not left waiting
    written = [s for _, s, _ in _points(w._wal.path)]
    assert written == list(range(len(written))) and 0 < len(written) < 1000
    assert os.path.getsize(w._wal.path) == w._wal.bytes_written  # no torn frame
    assert not w.queue and w.pending_records > 0
    disk.room = None
    w._drain()
    w._wal.close()
    assert [s for _, s, _ in _points(w._wal.path)] == list(range(1000))
    recs = [r.data for r in read_wal(w._wal.path)]
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    assert recs[-1]["k"] == "summary" and w.error is None


def test_finish_on_a_disk_that_never_takes_the_writes_raises_what_was_lost(tmp_path,
                                                                             monkeypatch):
    import assay

    run = assay.init(project="p", dir=tmp_path, capture=False, system_metrics_interval=0)
    run.log({"x": 1.0})
    run.flush()
    disk = _Disk(monkeypatch, run._writer._wal._fd)
    disk.room = 0  # full from now on
    for i in range(5):
        run.log({"x": float(i)})
    with pytest.raises(WalWriteError, match="No space left"):
        run.flush()
    run._writer._give_up_after = 0.3
    with pytest.raises(WalWriteError, match=r"(?s)points in \d+ records of the run were not "
                                            r"written.*free space"):
        run.finish()
    assert run._finished  # finished all the same: log() refuses, the exit hook skips it


# -- 5. bounded memory ------------------------------------------------------------------------------
def test_log_waits_for_a_full_disk_above_the_memory_limit_and_loses_nothing(tmp_path,
                                                                             monkeypatch, caplog):
    """Above ``max_pending_bytes`` held for a disk that refuses writes, log() waits (instead
    of growing until the process is killed), says why, and goes on once the disk takes them."""
    import threading

    import assay

    run = assay.init(project="p", dir=tmp_path, capture=False, system_metrics_interval=0)
    w = run._writer
    w.max_pending_bytes = 4096
    run.log({"x": 0.0})
    run.flush()
    disk = _Disk(monkeypatch, w._wal._fd)
    disk.room = 0
    done = threading.Event()
    logged = []

    def train():
        for i in range(1, 400):
            run.log({"x": float(i), "pad": float(i) / 3})
            logged.append(i)
            time.sleep(0.005)
        done.set()

    with caplog.at_level("WARNING", logger="assay.sdk.writer"):
        t = threading.Thread(target=train)
        t.start()
        deadline = time.monotonic() + 20
        while not w.full and time.monotonic() < deadline:
            time.sleep(0.05)
        assert w.full and not done.is_set()
        stuck_at = len(logged)
        time.sleep(0.5)
        assert len(logged) == stuck_at  # waiting, not growing
        assert w.pending_bytes > 4096
        assert any("refuses writes" in r.getMessage() and "ASSAY_MAX_PENDING_MB" in r.getMessage()
                   for r in caplog.records)
        disk.room = None  # space is back
        assert done.wait(20)
        t.join(5)
    assert not w.full and w.full_waits >= 1
    run.finish()
    api = assay.Api(tmp_path)
    h = api.history(run.id, keys=["x"]).sort("step")
    assert h["value"].to_list() == [float(i) for i in range(400)]


def test_log_waits_when_more_steps_are_queued_than_the_limit(tmp_path, monkeypatch):
    """A producer faster than the writer: above ``max_buffered_steps`` waiting, log() waits
    until the writer is back under half; below the limit it never waits."""
    import assay
    import assay.sdk.run as run_mod

    # The writer looks at the limits twice per flush interval: a short one keeps what is
    # logged in between small against n, even on a loaded machine (0.2 s let 150k through).
    monkeypatch.setattr(run_mod, "FLUSH_INTERVAL", 0.02)
    run = assay.init(project="p", dir=tmp_path, capture=False, system_metrics_interval=0)
    w = run._writer
    assert run._queue_append == w.queue.append  # no check on the fast path
    w.max_buffered_steps = 1000
    n, longest = 300_000, 0
    for i in range(n):
        run.log({"loss": float(i)})
        if i % 1000 == 0:
            longest = max(longest, len(w.queue))
    # The writer looks twice per flush interval, so the queue may pass the limit by what is
    # logged in between; it never holds the whole run.
    assert w.full_waits >= 1 and longest < n // 2
    run.finish()
    assert run._queue_append == w.queue.append and not w.full
    h = assay.Api(tmp_path).history(run.id, keys=["loss"]).sort("step")
    assert h.height == n and h["value"].to_list() == [float(i) for i in range(n)]


def test_finish_does_not_wait_for_room(tmp_path, monkeypatch):
    """A full writer on a disk that never recovers: finish() still returns (raising what was
    lost), it never waits for room for its own status record."""
    import assay

    run = assay.init(project="p", dir=tmp_path, capture=False, system_metrics_interval=0)
    w = run._writer
    w.max_pending_bytes = 1
    disk = _Disk(monkeypatch, w._wal._fd)
    disk.room = 0
    run.log({"x": 1.0})
    deadline = time.monotonic() + 10
    while not w.full and time.monotonic() < deadline:
        time.sleep(0.05)
    assert w.full
    w._give_up_after = 0.3
    t = time.monotonic()
    with pytest.raises(WalWriteError, match="not written"):
        run.finish()
    assert time.monotonic() - t < 10
