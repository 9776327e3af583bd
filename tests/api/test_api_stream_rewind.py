"""The live stream tells its clients when a resume rewinds a run (``rewind`` event), so an
open page drops the dead attempt's tail instead of keeping it until reloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import assay
import pytest
from assay.api.stream import _Rewinds
from assay.store.audit import AuditTrail
from sse import SSEReader  # tests/ is on sys.path (rootdir conftest)

SEQ1 = 1 << 40  # the run record of attach 1


def _rewind_entry(trail: AuditTrail, run_id: str, seq: int, step: int) -> None:
    # What store.provenance.Finalizer.rewound writes.
    trail.record(f"run:{run_id}", "run.rewind", f"run:{run_id}",
                 f"attach {seq >> 40} restarts the run at step {step}",
                 {"attach": seq >> 40, "step": step, "seq": seq, "points_superseded": 1})


def test_rewinds_are_read_from_the_audit_trail_incrementally(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path)
    rw = _Rewinds(trail.path)
    assert rw.between("r1", -1, 1 << 62) == []  # no trail yet
    trail.record("admin", "token.create", "token:x", "mentions run.rewind in its reason")
    _rewind_entry(trail, "r1", SEQ1, 5)
    _rewind_entry(trail, "r2", SEQ1, 0)
    assert rw.between("r1", -1, 1 << 62) == [(SEQ1, 5)]
    assert rw.between("r1", SEQ1, 1 << 62) == []  # the cursor is past it: delivered already
    assert rw.between("r1", SEQ1 - 1, SEQ1) == [(SEQ1, 5)]
    _rewind_entry(trail, "r1", SEQ1, 5)  # a replay after a crash repeats the entry
    _rewind_entry(trail, "r1", 2 * SEQ1, 0)
    with open(trail.path, "ab") as f:
        f.write(b'{"seq":9,"kind":"audit","payload_json":"run.rewind')  # being appended
    assert rw.between("r1", -1, 1 << 62) == [(SEQ1, 5), (2 * SEQ1, 0)]
    assert rw.between("r2", 10, SEQ1) == [(SEQ1, 0)]


class _Reader(SSEReader):
    """One stream connection, applying what it receives as a client would: points by step
    (the last one received wins), and a ``rewind`` drops the run's points at or past its step."""

    def __init__(self, url: str, token: str, params: dict[str, Any]) -> None:
        super().__init__(url, token, params)
        self.curves: dict[tuple[str, str], dict[int, float]] = {}

    def handle(self, ev: dict[str, Any]) -> None:
        self._apply(ev)

    def _apply(self, ev: dict[str, Any]) -> None:
        runs = ev.get("data", {}).get("runs", {})
        if ev["event"] == "rewind":
            for rid, rw in runs.items():
                for (r, key), pts in self.curves.items():
                    if r == rid and not key.startswith("sys/"):
                        for s in [s for s in pts if s >= rw["from_step"]]:
                            del pts[s]
        elif ev["event"] == "delta":
            for rid, d in runs.items():
                for key, p in d.get("points", {}).items():
                    self.curves.setdefault((rid, key), {}).update(zip(p["step"], p["value"]))

    def curve(self, run_id: str, key: str) -> dict[int, float]:
        with self.lock:
            return dict(self.curves.get((run_id, key), {}))


def _watched_dead_attempt(project, server, tokens, tmp_path, helpers):
    """A stream client watching ``project``, and a remote run there that logged loss 10..19
    at steps 0..9 and crashed, once the client holds all of it. Returns (reader, run, the
    init keywords for resuming it)."""
    kw = {"dir": tmp_path / "laptop", "server": server.url, "token": tokens["researcher"],
          "system_metrics_interval": None, "capture": False}
    reader = _Reader(server.url, tokens["viewer"], {"project": project, "min_interval": 0.1})
    reader.start()
    helpers.wait_for(lambda: reader.events)
    run = assay.init(project=project, **kw)
    for i in range(10):
        run.log({"loss": 10.0 + i}, step=i)
    run.finish("crashed")
    first = {i: 10.0 + i for i in range(10)}
    helpers.wait_for(lambda: reader.curve(run.id, "loss") == first, timeout=30)  # the dead tail
    return reader, run, kw


@pytest.mark.integration
def test_an_open_stream_drops_the_points_a_resume_from_step_supersedes(
        server, tokens, tmp_path, helpers) -> None:
    reader, run, kw = _watched_dead_attempt("rw-live", server, tokens, tmp_path, helpers)

    again = assay.init(project="rw-live", resume=run.id, resume_from_step=5, **kw)
    for i in range(5, 8):
        again.log({"loss": float(i)}, step=i)
    again.finish()
    want = {**{i: 10.0 + i for i in range(5)}, 5: 5.0, 6: 6.0, 7: 7.0}
    helpers.wait_for(lambda: reader.curve(run.id, "loss") == want, timeout=30)
    with reader.lock:
        rewinds = [e for e in reader.events if e["event"] == "rewind"]
        kinds = [e["event"] for e in reader.events]
    assert [r["data"]["runs"][run.id]["from_step"] for r in rewinds] == [5]
    assert rewinds[0]["data"]["runs"][run.id]["seq"] >> 40 == 1  # attach 1's run record
    # It comes right before the delta that carries the new attempt's points.
    assert kinds[kinds.index("rewind") + 1] == "delta"


def test_an_auto_rewind_ingested_after_its_run_record_still_reaches_the_stream(
        server, tokens, tmp_path, helpers) -> None:
    """resume_from_step="auto" declares the rewind at the first log(): the run record of the
    attach may reach the stream in an earlier pass (its config and status first)."""
    import time

    reader, run, kw = _watched_dead_attempt("rw-auto", server, tokens, tmp_path, helpers)
    again = assay.init(project="rw-auto", resume=run.id, resume_from_step="auto", **kw)
    again.config["phase"] = "restored"
    again.flush()
    time.sleep(1.5)  # the run record and config are ingested and streamed, no point yet
    for i in range(4, 7):  # restored from a checkpoint at step 4
        again.log({"loss": float(i)}, step=i)
    again.finish()
    want = {**{i: 10.0 + i for i in range(4)}, 4: 4.0, 5: 5.0, 6: 6.0}
    helpers.wait_for(lambda: reader.curve(run.id, "loss") == want, timeout=30)
