"""Remote logging: WAL frames over HTTP into server segments, the daemon, LanceDB."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from assay.sdk.api import Api
from assay.sdk.remote import MEDIA_TYPE, RemoteSender, outbox_segment, sync_outbox
from assay.store.wal import encode, read_wal

pytestmark = pytest.mark.integration


def _history_count(c: httpx.Client, run_id: str, key: str) -> int:
    r = c.get(f"/api/runs/{run_id}/history", params={"key": key, "max_points": 100_000})
    if r.status_code != 200:
        return -1
    s = r.json()["series"].get(key)
    return s["total"] if s else 0


def _finished(c: httpx.Client, run_id: str, status: str = "completed") -> dict[str, Any] | None:
    r = c.get(f"/api/runs/{run_id}")
    return r.json() if r.status_code == 200 and r.json()["status"] == status else None


def test_remote_run_ships_every_point_once_and_is_queryable(server, client, tokens, local_dir,
                                                            data_dir, helpers) -> None:
    run = helpers.RemoteRunHarness(local_dir, server.url, tokens["researcher"])
    for step in range(3000):
        run.log({"loss": 1.0 / (step + 1), "acc": step / 3000}, step)
    assert run.finish() is True
    assert not run.segment.exists(), "an acknowledged local segment is deleted"
    viewer = client("viewer")
    rec = helpers.wait_for(lambda: _finished(viewer, run.run_id))
    assert rec["project"] == "remote" and rec["config"] == {"lr": 0.01}
    assert rec["summary"]["loss"] == pytest.approx(1 / 3000)
    df = Api(data_dir).history(run.run_id, "loss")
    assert df.height == 3000 and df["step"].to_list() == list(range(3000))
    assert (data_dir / "remote" / f"{run.run_id}.json").exists()


def test_retried_batches_are_acknowledged_without_duplicates(server, client, tokens,
                                                             helpers) -> None:
    c = client("researcher")
    rid = "dupcheck01"
    recs = [{"k": "run", "seq": 1, "time": time.time(), "run_id": rid, "project": "p",
             "name": "dup", "config": {}, "host": "h", "pid": 1, "attach": 0},
            {"k": "metrics", "seq": 2, "chunks": [{"keys": ["x"], "step": [0, 1], "time": [1.0, 2.0],
                                                   "vals": [[0.5, float("nan")]]}]}]
    body = b"".join(encode(r) for r in recs)
    h = {"Content-Type": MEDIA_TYPE}
    first = c.post(f"/api/runs/{rid}/records", content=body, headers=h).json()
    again = c.post(f"/api/runs/{rid}/records", content=body, headers=h).json()
    assert (first["accepted"], first["durable_seq"]) == (2, 2)
    assert (again["accepted"], again["duplicates"], again["durable_seq"]) == (0, 2, 2)
    assert c.get(f"/api/runs/{rid}/records").json()["durable_seq"] == 2
    seg = server.data_dir / "wal" / rid / "000000.wal"
    assert [r.data["seq"] for r in read_wal(seg)] == [1, 2]
    helpers.wait_for(lambda: _history_count(c, rid, "x") == 2)
    vals = c.get(f"/api/runs/{rid}/history", params={"key": "x"}).json()["series"]["x"]["value"]
    assert vals[0] == 0.5 and vals[1] == "NaN"


@pytest.mark.parametrize("mutate, fragment", [
    (lambda b: b[:-3], "truncated"),
    (lambda b: b[:12] + bytes([b[12] ^ 1]) + b[13:], "CRC"),
    (lambda b: b"XX" + b[2:], "magic"),
])
def test_corrupt_frames_are_rejected_with_400(server, client, mutate, fragment) -> None:
    rec = {"k": "run", "seq": 1, "time": 1.0, "run_id": "corrupt01", "project": "p", "name": "n"}
    r = client("researcher").post("/api/runs/corrupt01/records", content=mutate(encode(rec)),
                                  headers={"Content-Type": MEDIA_TYPE})
    assert r.status_code == 400 and fragment in r.json()["error"] and r.json()["hint"]
    assert not (server.data_dir / "wal" / "corrupt01").exists()


@pytest.mark.parametrize("rec, fragment", [
    ({"k": "run", "seq": 1, "time": 1.0, "run_id": "other", "project": "p", "name": "n"}, "sent to run"),
    ({"k": "bogus", "seq": 1, "time": 1.0}, "unknown kind"),
    ({"k": "run", "seq": 1, "time": 1.0, "run_id": "badrec0001", "project": "../etc", "name": "n"},
     "invalid project"),
    ({"k": "metrics", "seq": 1, "chunks": [{"keys": ["x"], "step": [-1], "time": [1.0],
                                            "vals": [[1.0]]}]}, "steps"),
    ({"k": "metrics", "seq": 1, "chunks": [{"keys": ["x"], "step": [1], "time": [1.0],
                                            "vals": [["a"]]}]}, "numbers"),
    ({"k": "status", "seq": 1, "time": 1.0, "status": "running"}, "final status"),
    ({"k": "config", "seq": 0, "time": 1.0, "update": {}}, "positive"),
    # Times the store cannot hold as timestamps would break every runs listing, or the run's
    # history and its sealing, for everyone reading the data directory.
    *[({"k": "run", "seq": 1, "time": t, "run_id": "badrec0001", "project": "p", "name": "n"},
       "time must be epoch seconds") for t in (1e300, -1e300, 1e18, -1.0, 2 ** 62)],
    *[({"k": "metrics", "seq": 1, "chunks": [{"keys": ["x"], "step": [1], "time": [t],
                                              "vals": [[1.0]]}]}, "chunk time must be epoch")
      for t in (math.nan, math.inf, 9e18, -5.0)],
])
def test_invalid_records_are_rejected_before_anything_is_written(server, client, rec,
                                                                 fragment) -> None:
    r = client("researcher").post("/api/runs/badrec0001/records", content=encode(rec),
                                  headers={"Content-Type": MEDIA_TYPE})
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"]
    assert not (server.data_dir / "wal" / "badrec0001").exists()


def test_a_new_run_must_start_with_its_run_record_and_ids_are_not_shared(server, client) -> None:
    c = client("researcher")
    h = {"Content-Type": MEDIA_TYPE}
    r = c.post("/api/runs/norun00001/records", headers=h,
               content=encode({"k": "config", "seq": 1, "time": 1.0, "update": {"a": 1}}))
    assert r.status_code == 409 and "run record" in r.json()["error"]
    mine = {"k": "run", "seq": 1, "time": 1.0, "run_id": "shared0001", "project": "p",
            "name": "n", "host": "a", "pid": 1, "attach": 0}
    assert c.post("/api/runs/shared0001/records", headers=h, content=encode(mine)).status_code == 200
    theirs = {**mine, "host": "b", "pid": 2}
    r = c.post("/api/runs/shared0001/records", headers=h, content=encode(theirs))
    assert r.status_code == 409 and "already used" in r.json()["error"]


def test_researchers_write_only_their_own_runs(server, client, tokens, local_dir, helpers) -> None:
    run = helpers.RemoteRunHarness(local_dir, server.url, tokens["researcher"])
    run.log({"x": 1.0}, 0)
    assert run.finish() is True
    h = {"Content-Type": MEDIA_TYPE}
    resume = encode({"k": "run", "seq": (1 << 40) | 1, "time": 2.0, "run_id": run.run_id,
                     "project": "remote", "name": "again", "host": "h", "pid": 2, "attach": 1})
    r = client("researcher2").post(f"/api/runs/{run.run_id}/records", content=resume, headers=h)
    assert r.status_code == 403 and "belongs to researcher" in r.json()["error"]
    # Nor may they keep it open with heartbeats (an empty body) or resent records.
    for body in (b"", encode({"k": "metrics", "seq": 2, "chunks": []})):
        r = client("researcher2").post(f"/api/runs/{run.run_id}/records", content=body, headers=h)
        assert r.status_code == 403 and "belongs to researcher" in r.json()["error"]
    assert client("viewer").post(f"/api/runs/{run.run_id}/records", content=resume,
                                 headers=h).status_code == 403
    r = client("supervisor").post(f"/api/runs/{run.run_id}/records", content=resume, headers=h)
    assert r.status_code == 200 and r.json()["durable_seq"] == (1 << 40) | 1


def test_remote_logging_survives_a_server_restart(data_dir, tokens, local_dir, fast_ingest,
                                                  helpers) -> None:
    """Stop the server mid-run, log on, start it again: nothing lost, nothing duplicated."""
    port = helpers.free_port()
    srv = helpers.ThreadServer(data_dir, port).start()
    run = helpers.RemoteRunHarness(local_dir, srv.url, tokens["researcher"])
    try:
        for step in range(100):
            run.log({"loss": float(step)}, step)
        assert run.sync()
        srv.stop()
        for step in range(100, 400):  # the network is down: training does not notice
            run.log({"loss": float(step)}, step)
        run.writer.flush(5)
        helpers.wait_for(lambda: run.sender.retries > 0)
        srv = helpers.ThreadServer(data_dir, port).start()
        for step in range(400, 500):
            run.log({"loss": float(step)}, step)
        assert run.finish() is True
        c = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {tokens['viewer']}"})
        rec = helpers.wait_for(lambda: _finished(c, run.run_id))
        assert rec["last_step"] == 499
        chunks = Api(data_dir).store.metric_chunks(run.run_id, ["loss"])
        steps = sorted(s for row in chunks.column("step").to_pylist() for s in row)
        assert steps == list(range(500)), "every point exactly once"
    finally:
        srv.stop()


@pytest.mark.slow
def test_remote_logging_survives_a_killed_server(data_dir, tokens, local_dir, fast_ingest,
                                                 helpers) -> None:
    """SIGKILL the server mid-run, bring it back: nothing lost, nothing duplicated."""
    port = helpers.free_port()
    srv = helpers.ProcessServer(data_dir, port).start()
    run = helpers.RemoteRunHarness(local_dir, srv.url, tokens["researcher"])
    n = 0
    try:
        for _ in range(20):
            run.log({"loss": float(n)}, n)
            n += 1
            time.sleep(0.01)
        assert run.sync()
        srv.kill()
        for _ in range(200):  # training goes on while the server is down
            run.log({"loss": float(n)}, n)
            n += 1
        run.writer.flush(5)
        time.sleep(0.5)
        assert run.sender.retries > 0, "the sender noticed the outage"
        srv = helpers.ProcessServer(data_dir, port).start()
        for _ in range(300):
            run.log({"loss": float(n)}, n)
            n += 1
        assert run.finish(timeout=60) is True
        c = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {tokens['viewer']}"})
        rec = helpers.wait_for(lambda: _finished(c, run.run_id), timeout=60)
        assert rec["last_step"] == n - 1
        df = Api(data_dir).history(run.run_id, "loss")
        assert df["step"].to_list() == list(range(n))
        chunks = Api(data_dir).store.metric_chunks(run.run_id, ["loss"])
        assert sum(len(s) for s in chunks.column("step").to_pylist()) == n, "no duplicate points"
    finally:
        srv.kill()


def test_unreachable_server_keeps_the_local_wal_and_sync_outbox_ships_it(
        data_dir, tokens, local_dir, fast_ingest, helpers) -> None:
    port = helpers.free_port()
    url = f"http://127.0.0.1:{port}"
    run = helpers.RemoteRunHarness(local_dir, url, tokens["researcher"])
    t0 = time.perf_counter()
    for step in range(500):
        run.log({"x": float(step)}, step)
    assert time.perf_counter() - t0 < 0.5, "logging never waits for the network"
    assert run.finish(timeout=1.0) is False
    assert run.segment.exists(), "nothing is dropped while the server is away"
    run.sender.abandon()  # the test's "process" ends here
    srv = helpers.ThreadServer(data_dir, port).start()
    try:
        done = sync_outbox(local_dir, url, tokens["researcher"], timeout=30)
        assert done == {str(run.segment): True}
        assert not run.segment.exists()
        c = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens['viewer']}"})
        helpers.wait_for(lambda: _finished(c, run.run_id))
        assert _history_count(c, run.run_id, "x") == 500
    finally:
        srv.stop()


def test_sync_outbox_marks_an_orphan_that_never_finished_crashed(data_dir, tokens, local_dir,
                                                                  server, client, helpers) -> None:
    run = helpers.RemoteRunHarness(local_dir, "http://127.0.0.1:9", tokens["researcher"])
    run.sender.abandon()  # a process killed mid-run
    for step in range(10):
        run.log({"x": float(step)}, step)
    run.writer.stop()
    run.wal.close()
    with open(run.segment, "ab") as f:
        f.write(b"AW\x10\x00")  # a torn last write
    assert sync_outbox(local_dir, server.url, tokens["researcher"]) == {str(run.segment): True}
    rec = helpers.wait_for(lambda: _finished(client("viewer"), run.run_id, "crashed"))
    assert "assay sync" in rec["error"] and rec["last_step"] == 9


def test_sender_waits_for_acknowledgement_and_reports_refusals(server, tokens, local_dir,
                                                               helpers) -> None:
    seg = outbox_segment(local_dir, "refused001", 0)
    seg.parent.mkdir(parents=True)
    seg.write_bytes(encode({"k": "run", "seq": 1, "time": 1.0, "run_id": "refused001",
                            "project": "p", "name": "n"}))
    sender = RemoteSender(server.url, "refused001", seg, token=tokens["viewer"], poll=0.05)
    assert sender.close(10) is False
    assert sender.error is not None and "403" in sender.error.message
    assert seg.exists()
    good = RemoteSender(server.url, "refused001", seg, token=tokens["researcher"], poll=0.05)
    assert good.close(10) is True and good.acked_seq == 1 and not seg.exists()


def test_heartbeats_keep_a_quiet_run_open_and_silence_releases_it(data_dir, tokens, local_dir,
                                                                  fast_ingest, helpers) -> None:
    srv = helpers.ThreadServer(data_dir, stale_after=1.5, sweep_interval=0.2).start()
    try:
        quiet = helpers.RemoteRunHarness(local_dir, srv.url, tokens["researcher"], heartbeat=0.3)
        gone = helpers.RemoteRunHarness(local_dir, srv.url, tokens["researcher"])
        assert quiet.sync() and gone.sync()
        gone.sender.abandon()  # its client vanished
        c = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {tokens['viewer']}"})
        rec = helpers.wait_for(lambda: _finished(c, gone.run_id, "crashed"), timeout=30)
        assert rec["status"] == "crashed"
        assert c.get(f"/api/runs/{quiet.run_id}").json()["status"] == "running"
        assert quiet.finish() is True
        helpers.wait_for(lambda: _finished(c, quiet.run_id))
    finally:
        srv.stop()


def test_records_endpoint_has_a_body_limit(server, client) -> None:
    big = b"\0" * ((64 << 20) + 1)
    r = client("researcher").post("/api/runs/big0000001/records", content=big,
                                  headers={"Content-Type": MEDIA_TYPE})
    assert r.status_code == 413 and r.json()["error"]


def test_outbox_segments_live_outside_the_local_daemons_wal_folder(tmp_path: Path) -> None:
    assert outbox_segment(tmp_path, "abc", 3) == tmp_path / "outbox" / "abc" / "000003.wal"


def test_a_torn_frame_a_killed_server_left_is_cut_before_appending(data_dir, tokens, local_dir,
                                                                   helpers) -> None:
    """A server killed mid-write leaves half a frame; the restarted server must not append
    acknowledged records behind it, where no reader would ever see them."""
    import subprocess
    import sys

    from assay.store.wal import FRAME_HEADER

    port = helpers.free_port()
    srv = helpers.ThreadServer(data_dir, port, start_daemon=False).start()
    run = helpers.RemoteRunHarness(local_dir, srv.url, tokens["researcher"])
    try:
        for step in range(10):
            run.log({"loss": float(step)}, step)
        assert run.sync()
        srv.stop()
        seg = data_dir / "wal" / run.run_id / "000000.wal"
        with open(seg, "ab") as f:  # the start of a frame whose write the kill cut short
            f.write(FRAME_HEADER.pack(b"AW", 5000, 0) + b"x" * 700)
        srv = helpers.ThreadServer(data_dir, port, start_daemon=False).start()
        for step in range(10, 20):
            run.log({"loss": float(step)}, step)
        assert run.finish() is True
        assert [r.data["seq"] for r in read_wal(seg)][-1] == run.sender.acked_seq
    finally:
        srv.stop()
    subprocess.run([sys.executable, "-m", "assay.store.ingestd", str(data_dir), "--once"],
                   check=True, timeout=120)
    rec = Api(data_dir).run(run.run_id)
    assert rec.status == "completed" and rec.last_step == 19


def test_finish_never_ends_the_sender_before_the_final_status_is_sent(
        server, tokens, local_dir, helpers, monkeypatch) -> None:
    """close() that lands after the sender found nothing new, and before it checks whether
    it is closing, must not end the sender with the status record unsent."""
    run = helpers.RemoteRunHarness(local_dir, server.url, tokens["researcher"])
    for step in range(10):
        run.log({"loss": float(step)}, step)
    assert run.sync()
    real = RemoteSender._read_batch

    def slow(self):  # descheduled right after finding nothing new
        out = real(self)
        if not out[0]:
            time.sleep(0.3)
        return out

    monkeypatch.setattr(RemoteSender, "_read_batch", slow)
    time.sleep(0.1)
    assert run.finish() is True
    c = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tokens['viewer']}"})
    # The status record reached the server: the run completes (without it the server would
    # mark it crashed once it went quiet).
    rec = helpers.wait_for(lambda: _finished(c, run.run_id), timeout=20)
    assert rec["last_step"] == 9
