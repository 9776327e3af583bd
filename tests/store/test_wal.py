from __future__ import annotations

import math
import os

import pytest
from assay.store.wal import (
    WalWriter,
    iter_file_frames,
    iter_frames,
    read_wal,
    segment_path,
    try_lock_segment,
)


def test_wal_round_trips_records_with_nan_and_inf(tmp_path):
    w = WalWriter(tmp_path / "r" / "000000.wal")
    w.append([{"k": "metrics", "seq": 1, "v": [1.0, math.nan, math.inf]}, {"k": "x", "seq": 2}])
    w.close()
    recs = list(read_wal(tmp_path / "r" / "000000.wal"))
    assert [r.data["seq"] for r in recs] == [1, 2]
    v = recs[0].data["v"]
    assert v[0] == 1.0 and math.isnan(v[1]) and v[2] == math.inf
    assert recs[-1].end == os.path.getsize(tmp_path / "r" / "000000.wal")


@pytest.mark.parametrize("cut", [1, 5, 9, 13])
def test_wal_reader_skips_a_torn_last_record(tmp_path, cut):
    p = tmp_path / "seg.wal"
    w = WalWriter(p)
    w.append([{"seq": 1}, {"seq": 2, "pad": "x" * 20}])
    w.close()
    data = p.read_bytes()
    p.write_bytes(data[:-cut])
    assert [r.data["seq"] for r in read_wal(p)] == [1]


def test_wal_reader_stops_at_corrupt_crc(tmp_path):
    p = tmp_path / "seg.wal"
    w = WalWriter(p)
    w.append([{"seq": 1}, {"seq": 2}, {"seq": 3}])
    w.close()
    data = bytearray(p.read_bytes())
    first = next(read_wal(p)).end
    data[first + 12] ^= 0xFF  # a payload byte of record 2
    p.write_bytes(bytes(data))
    assert [r.data["seq"] for r in read_wal(p)] == [1]


def test_wal_reads_from_an_offset(tmp_path):
    p = tmp_path / "seg.wal"
    w = WalWriter(p)
    w.append([{"seq": 1}])
    off = w.bytes_written
    w.append([{"seq": 2}])
    assert [r.data["seq"] for r in read_wal(p, off)] == [2]
    w.close()


def test_segment_lock_tells_live_owner_from_orphan(tmp_path):
    p = segment_path(tmp_path, "run1", 0)
    w = WalWriter(p)
    assert try_lock_segment(p) is None  # owner alive
    with pytest.raises(BlockingIOError):
        WalWriter(p)
    w.close()
    fd = try_lock_segment(p)
    assert fd is not None
    os.close(fd)
    assert try_lock_segment(tmp_path / "missing.wal") is None


def test_a_new_segment_fsyncs_its_folders_and_a_reopened_one_does_not(tmp_path, monkeypatch):
    """Without the folder fsyncs a power loss can drop a new segment's name, and with it an
    acknowledged first record."""
    import os
    import stat

    from assay.store import wal

    synced: list[str] = []
    real = os.fsync

    def spy(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(wal.os, "fsync", spy)
    path = tmp_path / "wal" / "run1" / "000000.wal"
    w = wal.WalWriter(path)
    w.append([{"k": "run", "seq": 0}])
    w.close()
    assert synced == [str(path.parent), str(path.parent.parent)]
    synced.clear()
    wal.WalWriter(path).close()  # an existing, non-empty segment: its name is durable already
    assert synced == []


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_file_frames_in_small_pieces_match_a_whole_read(tmp_path, chunk):
    # Frames straddle every piece boundary, and one frame is far larger than a piece.
    p = tmp_path / "seg.wal"
    w = WalWriter(p)
    recs = [{"seq": i, "pad": "x" * (i * 37 % 300)} for i in range(40)]
    recs.insert(20, {"seq": 99, "pad": "y" * 5000})
    w.append(recs)
    w.close()
    whole = list(iter_frames(p.read_bytes()))
    assert list(iter_file_frames(p, chunk=chunk)) == whole
    mid = whole[10][0]
    assert list(iter_file_frames(p, mid, chunk=chunk)) == [
        (s, e, b) for s, e, b in whole if s >= mid]


@pytest.mark.parametrize("chunk", [3, 50, 1 << 20])
def test_file_frames_stop_at_a_torn_tail_and_at_a_corrupt_frame(tmp_path, chunk):
    p = tmp_path / "seg.wal"
    w = WalWriter(p)
    w.append([{"seq": i, "pad": "z" * 40} for i in range(6)])
    w.close()
    data = p.read_bytes()
    ends = [e for _, e, _ in iter_frames(data)]
    p.write_bytes(data[:-5])
    assert [e for _, e, _ in iter_file_frames(p, chunk=chunk)] == ends[:-1]
    bad = bytearray(data)
    bad[ends[2] + 12] ^= 0xFF  # a payload byte of the fourth frame
    p.write_bytes(bytes(bad))
    assert [e for _, e, _ in iter_file_frames(p, chunk=chunk)] == ends[:3]
    bad = bytearray(data)
    bad[ends[2]:ends[2] + 2] = b"XX"  # its magic
    p.write_bytes(bytes(bad))
    assert [e for _, e, _ in iter_file_frames(p, chunk=chunk)] == ends[:3]


def test_read_wal_in_bounded_pieces_resumes_where_it_stopped(tmp_path):
    p = tmp_path / "seg.wal"
    w = WalWriter(p)
    w.append([{"seq": i, "pad": "p" * 100} for i in range(50)])
    w.close()
    seen, offset = [], 0
    while True:
        part = list(read_wal(p, offset, max_bytes=1000))
        if not part:
            break
        assert sum(len(str(r.data)) for r in part) < 2000  # about max_bytes, never the file
        seen += [r.data["seq"] for r in part]
        offset = part[-1].end
    assert seen == list(range(50)) and offset == os.path.getsize(p)
