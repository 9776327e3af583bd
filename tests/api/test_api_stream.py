"""The live stream: snapshot, deltas since a cursor, throttling, resume without gaps."""

from __future__ import annotations

import itertools
import time

import httpx
import pytest
from sse import SSEReader as BaseSSEReader  # tests/ is on sys.path (rootdir conftest)

pytestmark = pytest.mark.integration


class SSEReader(BaseSSEReader):
    """Collects the events of one stream connection in the background."""

    def points(self, run_id: str, key: str) -> list[int]:
        steps: list[int] = []
        for e in self.events:
            if e["event"] == "delta":
                p = e["data"]["runs"].get(run_id, {}).get("points", {}).get(key)
                if p:
                    steps += p["step"]
        return steps


def test_stream_sends_a_snapshot_then_coalesced_deltas_and_resumes_by_cursor(
        server, tokens, local_dir, helpers) -> None:
    run = helpers.RemoteRunHarness(local_dir, server.url, tokens["researcher"], project="live")
    run.log({"loss": 0.0}, 0)
    assert run.sync()
    helpers.wait_for(lambda: httpx.get(f"{server.url}/api/runs/{run.run_id}", headers={
        "Authorization": f"Bearer {tokens['viewer']}"}).status_code == 200)
    reader = SSEReader(server.url, tokens["viewer"], {"project": "live", "min_interval": 0.5})
    reader.start()
    helpers.wait_for(lambda: reader.events)
    assert reader.status == 200 and reader.events[0]["event"] == "snapshot"
    assert reader.events[0]["data"]["runs"][run.run_id]["status"] == "running"
    t0 = time.monotonic()
    for step in range(1, 301):  # 300 steps over ~3 s, flushed in ~30 small WAL records
        run.log({"loss": float(step)}, step)
        if step % 10 == 0:
            time.sleep(0.1)
    assert run.finish() is True
    helpers.wait_for(lambda: reader.points(run.run_id, "loss")[-1:] == [300], timeout=30)
    helpers.wait_for(lambda: any(e["data"]["runs"].get(run.run_id, {}).get("status") ==
                                 "completed" for e in reader.events if e["event"] == "delta"))
    reader.stop.set()
    steps = reader.points(run.run_id, "loss")
    assert steps == list(range(1, 301)), "every point once, in order"
    deltas = [e for e in reader.events if e["event"] == "delta"]
    elapsed = deltas[-1]["at"] - t0
    assert len(deltas) <= elapsed / 0.5 + 3, "at most one message per min_interval"
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(deltas)]
    assert min(gaps, default=1.0) >= 0.4
    # resume from the middle: the rest arrives, nothing before the cursor repeats
    mid = next(e for e in deltas if e["data"]["runs"].get(run.run_id, {}).get("points"))
    again = SSEReader(server.url, tokens["viewer"], {"run": run.run_id, "min_interval": 0.1},
                      last_event_id=mid["id"])
    again.start()
    helpers.wait_for(lambda: again.points(run.run_id, "loss")[-1:] == [300], timeout=30)
    again.stop.set()
    before = mid["data"]["runs"][run.run_id]["points"]["loss"]["step"]
    assert again.points(run.run_id, "loss") == list(range(before[-1] + 1, 301))


def test_a_slow_consumer_gets_few_large_messages_and_catch_up_is_capped(
        server, tokens, local_dir, helpers) -> None:
    run = helpers.RemoteRunHarness(local_dir, server.url, tokens["researcher"], project="slow")
    slow = SSEReader(server.url, tokens["viewer"], {"project": "slow", "min_interval": 3.0})
    slow.start()
    helpers.wait_for(lambda: slow.events)
    start_cursor = slow.events[0].get("id")
    t0 = time.monotonic()
    for step in range(1000):  # ~20 ingest passes, so ~20 chunks per key in the store
        run.log({"x": float(step)}, step)
        if step % 50 == 49:
            run.sync()
            time.sleep(0.3)
    assert run.finish() is True
    helpers.wait_for(lambda: slow.points(run.run_id, "x")[-1:] == [999], timeout=60)
    slow.stop.set()
    deltas = [e for e in slow.events if e["event"] == "delta"]
    assert slow.points(run.run_id, "x") == list(range(1000))
    assert len(deltas) <= (deltas[-1]["at"] - t0) / 3.0 + 2, "throttled: few, large messages"
    # a consumer that starts far behind catches up in capped messages
    late = SSEReader(server.url, tokens["viewer"], {"run": run.run_id, "min_interval": 0.05,
                                                    "max_points": 100}, last_event_id=start_cursor)
    late.start()
    helpers.wait_for(lambda: late.points(run.run_id, "x")[-1:] == [999], timeout=60)
    late.stop.set()
    assert late.points(run.run_id, "x") == list(range(1000))
    sizes = [len(e["data"]["runs"][run.run_id].get("points", {}).get("x", {"step": []})["step"])
             for e in late.events if e["event"] == "delta"]
    assert len(sizes) >= 5 and sum(n > 100 for n in sizes) <= 2  # only a lone big chunk exceeds
    assert any(e["data"].get("more") for e in late.events if e["event"] == "delta")


def test_stream_rejects_bad_parameters(server, client) -> None:
    c = client("viewer")
    assert c.get("/api/stream", params={"run": "../etc"}).status_code == 400
    assert c.get("/api/stream", params={"since": "%%%"}).status_code == 400
    assert c.get("/api/stream", params={"min_interval": "0"}).status_code == 400
    assert httpx.get(f"{server.url}/api/stream").status_code == 401


def test_a_revoked_token_stops_receiving_a_busy_stream(server, client, tokens, local_dir,
                                                       helpers, monkeypatch) -> None:
    """Deltas that keep arriving never let the stream's heartbeat time out; the token must
    still be checked, or a revoked token keeps reading every run."""
    from assay.api import stream

    monkeypatch.setattr(stream, "AUTH_CHECK_S", 0.5, raising=False)
    reader = SSEReader(server.url, tokens["viewer"], {})
    reader.start()
    run = helpers.RemoteRunHarness(local_dir, server.url, tokens["researcher"])
    try:
        for step in range(10):  # busy: a point every 0.1 s
            run.log({"loss": float(step)}, step)
            time.sleep(0.1)
        tid = next(t["id"] for t in client("admin").get("/api/tokens").json()["tokens"]
                   if t["name"] == "viewer")
        assert client("admin").delete(f"/api/tokens/{tid}").status_code == 200
        revoked = time.monotonic()
        for step in range(10, 50):
            run.log({"loss": float(step)}, step)
            time.sleep(0.1)
        run.finish()
        errors = [e for e in reader.events if e.get("event") == "error"]
        assert errors and "revoked" in errors[0]["data"]["error"]
        late = [e for e in reader.events if e.get("event") == "delta" and e["at"] > revoked + 3]
        assert late == []  # nothing after the check caught up with the revocation
    finally:
        reader.stop.set()
