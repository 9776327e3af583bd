"""RemoteControlStore against a real uvicorn server: the same answers as a data directory's
LanceControlStore, ownership by token, overrides shared with the public routes, retries."""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import asdict
from typing import Any

import pytest
from assay.api import admin
from assay.errors import AssayError, ConflictError, PermissionDeniedError, UserInputError
from assay.store import control_remote
from assay.store.control import (
    AgentRow,
    AgentStatus,
    ControlStore,
    Decision,
    LanceControlStore,
    MemoryControlStore,
    Override,
    OverrideStatus,
)
from assay.store.control_remote import RemoteControlStore, decode_value, encode_value
from assay.store.ingest import IngestLock
from assay.store.lance import LanceStore
from loopback_server import ThreadServer, raw_request

pytestmark = pytest.mark.integration

A1, A2, A3 = "agconf0001", "agconf0002", "agconf0003"
ODD = "pc/a%b_c'd\"e\\f ü/?&=#:1"  # a lease key with what URLs and SQL treat specially


def H(n: int | str) -> str:
    """An HLC timestamp (the server refuses malformed ones), ordered as ``n``."""
    return f"{1_700_000_000_000 + int(n):013d}.000000.t"


@pytest.fixture
def remote(server, tokens):
    with RemoteControlStore(server.url, tokens["researcher"]) as s:
        yield s


def _as(server, tokens, role: str, **kw: Any) -> RemoteControlStore:
    return RemoteControlStore(server.url, tokens[role], **kw)


def _same(x: Any) -> str:
    """A comparable text (NaN equal to NaN, apart from the string "NaN"; key order kept);
    updated_at, which each store stamps with its own clock, left out."""
    def one(v: Any) -> Any:
        d = asdict(v)
        d.pop("updated_at", None)
        return d

    if isinstance(x, list):
        x = [one(v) for v in x]
    elif x is not None and not isinstance(x, str | int | tuple):
        x = one(x)
    return json.dumps(x, allow_nan=True, default=str)


def _sequence(s: ControlStore) -> list[str]:
    """Every ControlStore method, with non-finite numbers and look-alike strings; what each
    read answered."""
    out: list[str] = []
    spec = {"metric": "acc", "mode": "max", "owner": "researcher", "pad": "NaN", "nul": "\x00x"}
    state = {"best": math.nan, "hi": math.inf, "lo": -math.inf, "s": "Infinity", "zero": -0.0,
             "pair": (1, 2), 3: "int key", "nested": {"l": [math.nan, 1.5, "-Infinity"]},
             "big": 2**70, "text": "ü\n\t\"'"}
    s.save_agent(AgentRow(A2, "obj2", "pc", spec, state={"n": 1}, hlc="0001", host="h", pid=7))
    s.save_agent(AgentRow(A1, "obj", "pc", spec, state=state, hlc="0002"))
    s.save_agent(AgentRow(A3, "obj3", "other", spec, hlc="0003"))
    out += [_same(s.get_agent(A1)), _same(s.get_agent("agnone0000")), _same(s.list_agents()),
            _same(s.list_agents("pc"))]
    s.save_agent(AgentRow(A1, "obj", "pc", spec, AgentStatus.PAUSED, {"n": 2, "x": math.nan},
                          hlc="0004"))
    out += [_same(s.get_agent(A1)), _same(s.list_agents("pc"))]

    ds = [Decision(A1, "pc", f"t{i}", "launch", f"launch {i}", {"acq": i / 10, "ei": math.nan,
                                                               "why": "NaN"},
                   hlc=H(f"1{9 - i}"), time=100.0 + i, decision_id=f"dconf{i}") for i in range(3)]
    ds.append(Decision(A2, "pc", "t1", "stop", "stopped", {"value": -math.inf}, H(150), 1.0,
                       "dconf9"))
    s.add_decisions(ds)
    out += [_same(s.decisions()), _same(s.decisions(agent_id=A1)), _same(s.decisions(project="pc")),
            _same(s.decisions(trial_id="t1")), _same(s.decisions(agent_id=A2, trial_id="t1"))]

    o1 = Override(A1, "pause", {}, "researcher", "checking", H(20), 1.0, override_id="oconf1")
    o2 = Override(A1, "budget", {"budget": {"trials": 5}}, "researcher", "more", H(21), 2.0,
                  override_id="oconf2")
    s.add_override(o2)
    s.add_override(o1)
    out += [_same(s.overrides(A1)), _same(s.overrides(A1, OverrideStatus.PENDING)),
            _same(s.overrides(A2))]
    s.resolve_override("oconf1", OverrideStatus.APPLIED, "paused")
    s.resolve_override("oconf2", OverrideStatus.REJECTED, "no budget left")
    out += [_same(s.overrides(A1)), _same(s.overrides(A1, OverrideStatus.PENDING)),
            _same(s.overrides(A1, OverrideStatus.REJECTED))]

    # With the project's budget declared (4 trials), claims carry it as their limit (the
    # server applies the declared one whatever the client sends).
    budget = ("pc/", 4)
    claims = [("pc/cfg1", A1, "t1", None), ("pc/cfg1", A1, "t1", None), ("pc/cfg1", A2, "t9", None),
              (ODD, A2, "t2", None), (ODD, A1, "t3", None), ("#project_budget/pc", A1, "4", None),
              ("#project_budget/pc", A2, "5", None),
              ("pc/b_1/a", A1, "t1", budget), ("pc/b_1/b", A2, "t2", budget),
              ("pc/b_1/c", A1, "t3", budget), ("pc/b_1/a", A1, "t1", budget),
              ("pc/bX1/c", A1, "t3", budget)]
    out += [_same(s.claim_lease(k, a, t, H(1), limit=lim)) for k, a, t, lim in claims]
    out += [_same(s.count_leases(p)) for p in ("pc/", "pc/a%", "pc/a%b_", "pc/b_1/", "pc/b", "", "zz",
                                                "#")]
    out += [_same(s.lease(k)) for k in ("pc/cfg1", ODD, "#project_budget/pc", "missing", "pc/")]
    return out


def test_remote_store_answers_as_a_data_directory_does(server, remote, tmp_path):
    lance = LanceControlStore(LanceStore(tmp_path / "ref"), IngestLock(tmp_path / "ref"))
    want, got = _sequence(lance), _sequence(remote)
    assert got == want
    assert remote.get_agent(A1).updated_at > time.time() - 60  # the server stamped it
    assert '"pad": "NaN"' in got[0] and '"best": NaN' in got[0] and '"hi": Infinity' in got[0]
    # The leases' answers are MemoryControlStore's too: the contract, not just LanceDB's reading.
    assert got[-25:] == _sequence(MemoryControlStore())[-25:]
    assert got[-25:-13] == [_same(x) for x in (None, None, "t1", None, "t2", None, "4", None,
                                                None, "project budget", None,
                                                "project budget")]


def test_non_finite_values_and_look_alike_strings_round_trip_through_the_encoding():
    v = {"a": [math.nan, math.inf, -math.inf, "NaN", "Infinity", "-Infinity", "\x00", "\x00NaN",
               "x", 1, 1.5, None, True], "NaN": {"k": "\x00\x00"}}
    text = json.dumps(encode_value(v), allow_nan=False)  # strict JSON
    back = decode_value(json.loads(text))
    assert json.dumps(back, allow_nan=True) == json.dumps(v, allow_nan=True)


def test_a_retried_batch_of_decisions_and_overrides_is_stored_once(server, remote, client,
                                                                   monkeypatch):
    remote.save_agent(AgentRow(A1, "obj", "pc", {}, hlc="1"))
    ds = [Decision(A1, "pc", f"t{i}", "launch", "l", {}, H(i), 0.0) for i in range(5)]
    remote.add_decisions(ds[:3])
    remote.add_decisions(ds)  # the first three again: a retry after a lost answer
    monkeypatch.setattr(control_remote, "_PAGE", 2)  # read back through pages of two
    assert [d.decision_id for d in remote.decisions(agent_id=A1)] == [d.decision_id for d in ds]
    o = Override(A1, "pause", {}, "researcher", "why", H(9), 1.0)
    remote.add_override(o)
    remote.add_override(o)
    assert remote.overrides(A1) == [o]
    got = client("viewer").get("/api/decisions", params={"agent_id": A1}).json()
    assert got["total"] == 5


def test_claims_racing_from_many_threads_give_each_lease_and_budget_slot_once(server, remote):
    remote.save_agent(AgentRow(A1, "obj", "pc", {}, hlc="1"))
    remote.save_agent(AgentRow(A2, "obj", "pc", {}, hlc="2"))
    remote.count_leases("")  # the feature check, before the threads start
    assert remote.claim_lease("#project_budget/pc", A1, "4", H(0)) is None  # 4 trials
    same: list[str | None] = [None] * 8
    budget: list[str | None] = [None] * 8

    def claim(i: int) -> None:
        agent = (A1, A2)[i % 2]
        same[i] = remote.claim_lease("pc/race", agent, f"t{i}", H(i))
        budget[i] = remote.claim_lease(f"pc/q/{i}", agent, f"t{i}", H(i), limit=("pc/", 4))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winner = remote.lease("pc/race")
    assert same.count(None) == 1 and same.index(None) == int(winner[1][1:])
    assert sorted(h for h in same if h) == [winner[1]] * 7
    assert budget.count(None) == 3 and budget.count("project budget") == 5
    assert remote.count_leases("pc/q/") == 3  # 4 in the project, pc/race one of them


def test_only_the_owner_or_a_supervisor_writes_an_agent(server, tokens, remote):
    remote.save_agent(AgentRow(A1, "obj", "pc", {"owner": "someone-else"}, hlc="1"))
    assert remote.get_agent(A1).spec["owner"] == "researcher"  # the token's name, not the given
    o = Override(A1, "pause", {}, "researcher", "why", H(2), 1.0)
    remote.add_override(o)
    with _as(server, tokens, "researcher2") as other:
        for write in (lambda: other.save_agent(AgentRow(A1, "obj", "pc", {}, hlc="3")),
                      lambda: other.add_decisions([Decision(A1, "pc", "t", "launch", "", {}, H(3),
                                                            0.0)]),
                      lambda: other.resolve_override(o.override_id, OverrideStatus.APPLIED, ""),
                      lambda: other.claim_lease("pc/x", A1, "t", H(3)),
                      lambda: other.add_override(Override(A1, "stop", {}, "researcher2", "y", H(4),
                                                          1.0))):
            with pytest.raises(PermissionDeniedError, match="may not write agent") as exc:
                write()
            assert "owner" in exc.value.hint
        assert other.get_agent(A1) is not None  # reading is every token's
        other.save_agent(AgentRow(A2, "obj", "pc", {"owner": "researcher"}, hlc="5"))
        assert other.get_agent(A2).spec["owner"] == "researcher2"
    with _as(server, tokens, "viewer") as viewer, pytest.raises(PermissionDeniedError):
        viewer.save_agent(AgentRow(A3, "obj", "pc", {}, hlc="6"))
    with _as(server, tokens, "supervisor") as sup:
        sup.save_agent(AgentRow(A1, "obj", "pc", {}, AgentStatus.STOPPED, hlc="7"))
        sup.add_decisions([Decision(A1, "pc", "t", "finish", "stopped by sup", {}, H(8), 0.0)])
        sup.resolve_override(o.override_id, OverrideStatus.REJECTED, "stopped")
        assert sup.claim_lease("pc/y", A1, "t", H(9)) is None
        sup.save_agent(AgentRow(A3, "obj", "pc", {"owner": "researcher2"}, hlc="10"))
        assert sup.get_agent(A3).spec["owner"] == "researcher2"  # a supervisor names the owner
    row = remote.get_agent(A1)
    assert row.status is AgentStatus.STOPPED and row.spec["owner"] == "researcher"
    with pytest.raises(ConflictError, match="belongs to project 'pc'"):
        remote.save_agent(AgentRow(A1, "obj", "elsewhere", {}, hlc="11"))


def test_refusals_say_what_was_wrong(server, tokens, remote):
    remote.save_agent(AgentRow(A1, "obj", "pc", {}, hlc="1"))
    body = {"objective": "o", "project": "pc", "spec": {}, "status": "sleeping"}
    code, got = raw_request(server, "PUT", f"/api/agents/{A1}/row", tokens["researcher"], body)
    assert code == 400 and "running" in got["hint"]
    code, got = raw_request(server, "PUT", f"/api/agents/{A1}/row", None, body)
    assert code == 401
    code, got = raw_request(server, "GET", "/api/agents/agnone0000/row", tokens["viewer"])
    assert code == 404 and "GET /api/agents" in got["hint"]
    with pytest.raises(UserInputError, match="is for agent"):
        remote.add_decisions([Decision(A1, "other", "t", "launch", "", {}, H(2), 0.0)])
    code, got = raw_request(server, "POST", f"/api/agents/{A1}/overrides/onope/resolve",
                            tokens["researcher"], {"status": "applied", "result": ""})
    assert code == 404 and f"/api/agents/{A1}/overrides" in got["hint"]
    code, got = raw_request(server, "POST", "/api/leases/claim", tokens["researcher"],
                            {"key": "k", "agent_id": "agnone0000", "trial_id": "t", "hlc": H(1)})
    assert code == 404
    with pytest.raises(UserInputError, match="4-64 letters"):
        remote.save_agent(AgentRow("a/b", "obj", "pc", {}))


def test_a_supervisors_override_reaches_the_agent_and_its_outcome_shows(server, tokens, client,
                                                                        remote):
    remote.save_agent(AgentRow(A1, "obj", "pc", {"metric": "acc", "mode": "max"}, hlc="1"))
    assert [a["agent_id"] for a in client("viewer").get("/api/agents").json()["agents"]] == [A1]
    fleet = client("viewer").get("/api/fleet").json()
    assert [a["agent_id"] for a in fleet["agents"]] == [A1]
    r = client("supervisor").post(f"/api/agents/{A1}/overrides",
                                  json={"action": "pause", "reason": "GPU maintenance"})
    assert r.status_code == 202
    pending = remote.overrides(A1, OverrideStatus.PENDING)
    assert [(o.override_id, o.action, o.actor) for o in pending] == [
        (r.json()["override_id"], "pause", "supervisor")]
    with _as(server, tokens, "researcher") as fresh:
        fresh.resolve_override(pending[0].override_id, OverrideStatus.APPLIED, "paused")  # asks
    shown = client("viewer").get(f"/api/agents/{A1}/overrides").json()["overrides"]
    assert [(o["status"], o["result"]) for o in shown] == [("applied", "paused")]
    audit = client("supervisor").get("/api/audit", params={"target": f"agent:{A1}"}).json()
    assert {"agent.register", "override.pause"} <= {e["action"] for e in audit["entries"]}


def test_a_server_back_within_the_retry_window_is_waited_for(server, tokens, data_dir):
    s = _as(server, tokens, "researcher", retry_for=8.0)
    s.save_agent(AgentRow(A1, "obj", "pc", {}, hlc="1"))
    server.stop()
    back: list[ThreadServer] = []
    timer = threading.Timer(1.0, lambda: back.append(ThreadServer(data_dir,
                                                                  port=server.port).start()))
    timer.start()
    try:
        t0 = time.monotonic()
        assert s.claim_lease("pc/x", A1, "t1", H(2)) is None  # sent while the server is away
        assert time.monotonic() - t0 >= 0.9
        timer.join()
        back[0].stop()
        s.retry_for = 1.0
        t0 = time.monotonic()
        with pytest.raises(AssayError, match=f"the assay server at {server.url} did not answer"
                           ) as exc:
            s.lease("pc/x")
        assert time.monotonic() - t0 < 3 and "assay server` runs at" in exc.value.hint
    finally:
        timer.join()
        for b in back:
            b.stop()
        s.close()


def test_a_server_without_the_agent_store_is_refused_clearly(server, tokens, monkeypatch):
    monkeypatch.setattr(admin, "SERVER_FEATURES", ("rewind",))
    with _as(server, tokens, "researcher") as s, pytest.raises(AssayError,
                                                              match="lacks the 'agent_store'") as exc:
        s.get_agent(A1)
    assert "upgrade the server" in exc.value.hint


def test_an_agent_claims_leases_of_its_own_project_only(server, remote):
    """Another project's config keys, or its budget, claimed by an agent of this one would
    block that project's agents: refused, saying which leases are its own."""
    from assay.errors import PermissionDeniedError

    remote.save_agent(AgentRow(A1, "obj", "pc", {}, hlc="1"))
    for key in ("other/cfg", "#project_budget/other", "pcx/cfg"):
        with pytest.raises(PermissionDeniedError, match="may not claim") as e:
            remote.claim_lease(key, A1, "t1", H(2))
        assert "'pc/<config>'" in e.value.hint
    assert remote.count_leases("") == 0
    for bad in ("0", "-3", "many", "99999999999"):
        with pytest.raises(UserInputError, match="project budget"):
            remote.claim_lease("#project_budget/pc", A1, bad, H(3))
    assert remote.claim_lease("#project_budget/pc", A1, "2", H(3)) is None
    # The declared budget bounds every claim, whatever limit the client sends, or none.
    assert remote.claim_lease("pc/cfg", A1, "t1", H(4), limit=("other/", 100)) is None
    assert remote.claim_lease("pc/cfg2", A1, "t2", H(5)) is None
    assert remote.claim_lease("pc/cfg3", A1, "t3", H(6), limit=("pc/", 100)) == "project budget"
    assert remote.claim_lease("pc/cfg3", A1, "t3", H(6)) == "project budget"
    assert remote.count_leases("pc/") == 2


def test_overrides_stored_raw_are_checked_as_sent_and_start_pending(server, tokens, remote):
    """The raw route stores what ``add_override`` sends: an action the agent does not know,
    bad params, or an outcome set by the sender (faking "applied by a supervisor") are
    refused as the public route refuses them."""
    remote.save_agent(AgentRow(A1, "obj", "pc", {}, hlc="1"))
    url = f"/api/agents/{A1}/overrides/raw"
    base = {"override_id": "oraw1", "agent_id": A1, "action": "pause", "params": {},
            "actor": "researcher", "reason": "why", "hlc": H(2), "time": 1.0}
    for bad, word in (({"action": "rm_rf"}, "action"),
                      ({"action": "budget", "params": {"trials": "x"}}, "budget"),
                      ({"status": "applied", "result": "done by supervisor"}, "pending")):
        code, got = raw_request(server, "POST", url, tokens["researcher"], {**base, **bad})
        assert code == 400 and word in (got["error"] + got.get("hint", "")), got
    code, _ = raw_request(server, "POST", url, tokens["researcher"], base)
    assert code == 200
    assert [o.status for o in remote.overrides(A1)] == [OverrideStatus.PENDING]


def test_a_row_of_an_agent_this_server_runs_is_not_written_from_outside(server, tokens,
                                                                        data_dir):
    (data_dir / "objectives").mkdir(exist_ok=True)
    (data_dir / "objectives" / f"{A2}.json").write_text("{}")
    body = {"objective": "o", "project": "pc", "spec": {}, "status": "finished"}
    code, got = raw_request(server, "PUT", f"/api/agents/{A2}/row", tokens["supervisor"], body)
    assert code == 409 and "run by this server" in got["error"]


def test_a_write_waiting_past_the_lock_wait_is_a_503_to_retry(monkeypatch):
    """A long ingest pass holds the writer lock: requests answer 503 with Retry-After (the
    client retries) instead of piling up in the thread pool every route shares."""
    import threading

    from assay.api import agent_store
    from fastapi import HTTPException

    monkeypatch.setattr(agent_store, "LOCK_WAIT_S", 0.1)
    lock = threading.RLock()
    held = threading.Event()
    done = threading.Event()
    t = threading.Thread(target=lambda: (lock.acquire(), held.set(), done.wait(10),
                                         lock.release()))
    t.start()
    held.wait(10)
    with pytest.raises(HTTPException) as e, agent_store._Bounded(lock):
        pass
    done.set()
    t.join()
    assert e.value.status_code == 503 and e.value.headers == {"Retry-After": "2"}
    with agent_store._Bounded(lock):  # free again: no 503
        pass


def test_what_one_researcher_writes_cannot_take_over_or_lock_out_anothers_agent(
        server, tokens, client, remote):
    """helper-61's findings: a fake agent's 'launch' of another agent's trial redirected
    POST /api/runs/{id}/stop to the fake agent; a malformed (or far-future) HLC stored raw
    failed every later override of that agent (stop included) and dragged the server's
    clock; an agent's owner could rewrite an override's outcome again, unaudited."""
    now_ms = time.time_ns() // 1_000_000

    def hlc(ms: int) -> str:
        return f"{ms:013d}.000000.t"

    remote.save_agent(AgentRow(A1, "obj", "pc", {"metric": "acc", "mode": "max"},
                               state={"trials": {"run000001": {"config": {},
                                                               "status": "running"}}}))
    remote.add_decisions([Decision(A1, "pc", "run000001", "launch", "l", {}, hlc(now_ms), 0.0)])
    with _as(server, tokens, "researcher2") as bob:
        bob.save_agent(AgentRow(A2, "fake", "pc", {},
                                state={"trials": {"run000001": {"config": {},
                                                                "status": "running"}}}))
        with pytest.raises(ConflictError, match="launched by agent " + A1):
            bob.add_decisions([Decision(A2, "pc", "run000001", "launch", "", {},
                                        hlc(now_ms + 1000), 0.0)])
        for bad in ("~not-an-hlc", hlc(now_ms + 2 * 3600 * 1000), "123.x.y"):
            with pytest.raises(UserInputError, match="HLC"):
                bob.add_override(Override(A2, "pause", {}, "researcher2", "r", bad, 0.0))
            with pytest.raises(UserInputError, match="HLC"):
                bob.add_decisions([Decision(A2, "pc", "t9", "stop", "", {}, bad, 0.0)])
            with pytest.raises(UserInputError, match="HLC"):
                bob.claim_lease("pc/x", A2, "t9", bad)
    r = client("supervisor").post("/api/runs/run000001/stop", json={"reason": "wrong data"})
    assert r.status_code == 202, r.text
    assert [o.action for o in remote.overrides(A1)] == ["stop_run"]  # the real agent's
    assert remote.overrides(A2) == []
    # A supervisor's override of bob's agent is stamped, and the server's clock not dragged.
    r = client("supervisor").post(f"/api/agents/{A2}/overrides",
                                  json={"action": "pause", "reason": "check"})
    assert r.status_code == 202, r.text
    (o,) = remote.overrides(A2)
    assert abs(int(o.hlc.split(".")[0]) - time.time_ns() // 1_000_000) < 60_000
    # An outcome is recorded once (a retry of the same one is fine), and audited.
    with _as(server, tokens, "researcher2") as bob:
        bob.resolve_override(o.override_id, OverrideStatus.APPLIED, "paused")
        bob.resolve_override(o.override_id, OverrideStatus.APPLIED, "paused")
        with pytest.raises(ConflictError, match="resolved already"):
            bob.resolve_override(o.override_id, OverrideStatus.REJECTED, "changed my mind")
    (o,) = remote.overrides(A2)
    assert (str(o.status), o.result) == ("applied", "paused")
    audit = client("supervisor").get("/api/audit", params={"target": f"agent:{A2}"}).json()
    assert [e["actor"] for e in audit["entries"] if e["action"] == "override.applied"] == [
        "researcher2"]


def test_an_override_is_stamped_after_the_last_even_past_a_malformed_or_future_one():
    """Stores written before the server checked HLCs may hold a malformed one, or one far
    ahead: a new override still gets a stamp (after the last well-formed one), and the
    shared clock that stamps every agent's overrides stays on time."""
    from assay.agents.hlc import HybridLogicalClock
    from assay.agents.overrides import stamp

    ctl = MemoryControlStore()
    clock = HybridLogicalClock("api")
    ctl.add_override(Override(A1, "pause", {}, "bob", "r", "~not-an-hlc", 0.0))
    first = stamp(ctl, A1, clock)
    assert abs(int(first.split(".")[0]) - time.time_ns() // 1_000_000) < 60_000
    ahead = f"{time.time_ns() // 1_000_000 + 10**9:013d}.000004.bob"
    ctl.add_override(Override(A1, "pause", {}, "bob", "r", ahead, 0.0))
    after = stamp(ctl, A1, clock)
    assert after > ahead and after.startswith(ahead.split(".")[0] + ".000005.")
    elsewhere = stamp(ctl, A2, clock)  # another agent: the clock was not dragged along
    assert abs(int(elsewhere.split(".")[0]) - time.time_ns() // 1_000_000) < 60_000
