"""StoreMetricSource: each stored point reaches the agent once, read from a data directory or
from the ``assay server`` (a real uvicorn on 127.0.0.1) serving it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
from assay.errors import UserInputError
from assay.scheduler import StoreMetricSource

pytestmark = pytest.mark.integration

Source = Callable[..., StoreMetricSource]


@pytest.fixture(params=["dir", "server", "old_server"])
def make_source(request: pytest.FixtureRequest, data_dir: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[Source]:
    """``make_source(**kw)``: a source reading ``data_dir`` itself, or the server serving it
    (where an agent reads trials that log to ``$ASSAY_SERVER``), with a viewer's token; an
    old server cannot send only the chunks stored since a read (the source filters them)."""
    if request.param == "dir":
        yield lambda **kw: StoreMetricSource(data_dir, **kw)
        return
    from assay.api.auth import TokenStore
    from loopback_server import ThreadServer

    monkeypatch.setenv("ASSAY_INGEST_INTERVAL", "0.2")
    token = TokenStore(data_dir).create("viewer", "viewer")[0]
    srv = ThreadServer(data_dir).start()

    def make(**kw: Any) -> StoreMetricSource:
        source = StoreMetricSource(server=srv.url, token=token, **kw)
        if request.param == "old_server":
            source.reader._server_features = frozenset({"history_arrow", "runs_stats"})
        return source

    try:
        yield make
    finally:
        srv.stop()


def test_store_source_returns_only_points_beyond_those_returned_before(data_dir, make_source):
    import assay

    run = assay.init("curves", id="curve0001", dir=data_dir, system_metrics_interval=0)
    for step in range(3):
        run.log({"val/loss": 1.0 / (step + 1), "val/acc": step / 10}, step=step)
    run.finish()
    source = make_source()
    first = source.new_points(["curve0001", "notyet001"])
    assert first == {"curve0001": {"val/acc": [(0, 0.0), (1, 0.1), (2, 0.2)],
                                   "val/loss": [(0, 1.0), (1, 0.5), (2, 1 / 3)]}}
    assert source.new_points(["curve0001"]) == {}
    run = assay.init("curves", resume="curve0001", dir=data_dir, system_metrics_interval=0)
    run.log({"val/loss": 0.2}, step=3)
    run.finish()
    assert source.new_points(["curve0001"]) == {"curve0001": {"val/loss": [(3, 0.2)]}}
    only = make_source(keys="val/acc")
    assert list(only.new_points(["curve0001"])["curve0001"]) == ["val/acc"]
    source.forget("curve0001")
    assert len(source.new_points(["curve0001"])["curve0001"]["val/loss"]) == 4
    with pytest.raises(UserInputError):
        make_source(keys=[""])


def _attempt(data_dir, values, *, first=False, start=0):
    """One attempt of trial ``curve0002``: the first, or a relaunch that restarts at ``start``."""
    import assay

    kw = {"dir": data_dir, "system_metrics_interval": 0, "capture": False}
    run = (assay.init("curves", id="curve0002", **kw) if first
           else assay.init("curves", resume="curve0002", resume_from_step=start, **kw))
    for i, v in enumerate(values):
        run.log({"loss": v}, step=start + i)
    run.finish("completed" if not first else "crashed")


@pytest.mark.parametrize("make_source", ["dir", "server"], indirect=True)
def test_a_rewound_run_replaces_what_the_source_returned_for_it(data_dir, make_source):
    _attempt(data_dir, [9.0, 8.0, 7.0, 6.0], first=True)
    source = make_source()
    assert source.new_points(["curve0002"]) == {
        "curve0002": {"loss": [(0, 9.0), (1, 8.0), (2, 7.0), (3, 6.0)]}}
    assert source.replaced() == set()
    _attempt(data_dir, [1.0, 0.5], start=0)  # relaunched from the top: steps 0-1 again
    assert source.new_points(["curve0002"]) == {"curve0002": {"loss": [(0, 1.0), (1, 0.5)]}}
    assert source.replaced() == {"curve0002"}  # the agent drops the dead attempt's points
    assert source.new_points(["curve0002"]) == {} and source.replaced() == set()
    _attempt(data_dir, [0.4], start=2)  # a checkpoint restart at step 2 keeps 0-1
    assert source.new_points(["curve0002"]) == {"curve0002": {"loss": [(2, 0.4)]}}
    assert source.replaced() == set()  # new steps only: nothing to replace
    _attempt(data_dir, [], start=1)  # a rewind alone, before the attempt logs anything
    assert source.new_points(["curve0002"]) == {"curve0002": {"loss": [(0, 1.0)]}}
    assert source.replaced() == {"curve0002"}
    _attempt(data_dir, [], start=0)
    assert source.new_points(["curve0002"]) == {} and source.replaced() == {"curve0002"}


@pytest.mark.parametrize("make_source", ["dir", "server"], indirect=True)
def test_a_growing_run_is_read_from_its_new_chunks_and_an_idle_one_not_at_all(
        data_dir, make_source, monkeypatch):
    """An agent polls every running trial each step: reading whole curves each time cost
    ~15 ms per 60k-point trial; only what was stored since the last read is read now (from
    a server: ``/chunks?seq_after=``)."""
    import assay
    from loopback_server import wait_for

    kw = {"dir": data_dir, "system_metrics_interval": 0, "capture": False}
    api = assay.Api(data_dir)
    source = make_source()
    reads: list[str] = []
    if source.reader is None:
        for name in ("metric_chunks", "metric_chunks_after"):
            real = getattr(source.api.store, name)
            monkeypatch.setattr(source.api.store, name, lambda *a, _n=name, _r=real, **k: (
                reads.append(_n), _r(*a, **k))[1])
    else:
        real = source.reader.metric_chunks

        def chunks(*a: Any, seq_after: int | None = None, **k: Any) -> Any:
            reads.append("metric_chunks" if seq_after is None else "metric_chunks_after")
            return real(*a, seq_after=seq_after, **k)

        monkeypatch.setattr(source.reader, "metric_chunks", chunks)

    def ingested(run_id, attach, last_step):
        wait_for(lambda: _stored(api, run_id, attach, last_step))

    run = assay.init("curves", id="curve0003", **kw)
    for step in range(3):
        run.log({"loss": 10.0 - step}, step=step)
        run.flush()
        ingested("curve0003", 0, step)
        assert source.new_points(["curve0003"]) == {"curve0003": {"loss": [(step, 10.0 - step)]}}
    assert reads == ["metric_chunks", "metric_chunks_after", "metric_chunks_after"]
    reads.clear()
    assert source.new_points(["curve0003"]) == {} and reads == []  # nothing new: no read
    run.finish("crashed")
    # A relaunch with resume_from_step="auto": the new attach is stored before its first
    # point, whose rewind (to step 1) supersedes the dead attempt's step 2.
    again = assay.init("curves", resume="curve0003", resume_from_step="auto", **kw)
    again.flush()
    ingested("curve0003", 1, 2)
    assert source.new_points(["curve0003"]) == {} and source.replaced() == set()
    again.log({"loss": 0.5}, step=1)
    again.finish()
    ingested("curve0003", 1, 1)
    assert source.new_points(["curve0003"]) == {"curve0003": {"loss": [(0, 10.0), (1, 0.5)]}}
    assert source.replaced() == {"curve0003"}


def _stored(api, run_id, attach, last_step):
    from assay.errors import NotFoundError

    try:
        rec = api.run(run_id)
    except NotFoundError:
        return False
    return rec.attach == attach and rec.last_step == last_step


# -- from a server: what a server adds ---------------------------------------------------------
def _log(data_dir: Path, run_id: str, values: list[float], *, attach: bool = False) -> None:
    import assay

    kw: dict[str, Any] = {"dir": data_dir, "system_metrics_interval": 0, "capture": False}
    run = (assay.init("curves", resume=run_id, **kw) if attach
           else assay.init("curves", id=run_id, **kw))
    for v in values:
        run.log({"loss": v})  # steps go on from the run's last one
    run.finish()


def test_the_server_sends_only_chunks_stored_after_a_seq(data_dir, served_dir):
    """``GET /api/runs/{id}/chunks?seq_after=``: what an agent polling a live run reads."""
    import httpx
    import pyarrow as pa

    _log(data_dir, "grow00001", [3.0, 2.0])
    _log(data_dir, "grow00001", [1.0], attach=True)
    url = f"{served_dir['server'].url}/api/runs/grow00001/chunks"
    headers = {"Authorization": f"Bearer {served_dir['viewer']}"}

    def chunks(**params: Any) -> pa.Table:
        resp = httpx.get(url, params=params, headers=headers, timeout=30)
        assert resp.status_code == 200, resp.text
        return pa.ipc.open_stream(resp.content).read_all()

    every = chunks(key="loss")
    seqs = sorted(every["seq"].to_pylist())
    assert len(seqs) == 2
    later = chunks(key="loss", seq_after=seqs[0])
    assert later["seq"].to_pylist() == [seqs[1]] and later["step"].to_pylist() == [[2]]
    assert chunks(key="loss", seq_after=seqs[1]).num_rows == 0
    assert chunks(key="loss", seq_after=-1).num_rows == 2
    bad = httpx.get(url, params={"seq_after": -2}, headers=headers, timeout=30)
    assert bad.status_code == 400 and "seq_after" in bad.text
    health = httpx.get(f"{served_dir['server'].url}/api/health", timeout=30).json()
    assert "chunks_after" in health["features"]


def test_one_request_tells_which_of_many_runs_grew(data_dir, served_dir, monkeypatch):
    """``GET /api/runs/positions``: an agent polling 40 running trials asks where all of
    them stand at once (one GET per trial cost ~300 ms per idle poll), then reads the chunks
    of those that grew; unknown ids are left out, bad ones refused."""
    import httpx

    ids = [f"many{i:05d}" for i in range(40)]
    for rid in ids:
        _log(data_dir, rid, [1.0, 0.5])
    srv = served_dir["server"]
    source = StoreMetricSource(server=srv.url, token=served_dir["viewer"])
    sent: list[str] = []
    real = source.reader._send
    monkeypatch.setattr(source.reader, "_send",
                        lambda path, params: (sent.append(path), real(path, params))[1])
    first = source.new_points([*ids, "notyet0001"])
    assert sorted(first) == ids and first[ids[0]] == {"loss": [(0, 1.0), (1, 0.5)]}
    sent.clear()
    assert source.new_points(ids) == {}
    assert sent == ["/api/runs/positions"]  # idle: one request for all 40
    _log(data_dir, ids[7], [0.25], attach=True)
    sent.clear()
    assert source.new_points(ids) == {ids[7]: {"loss": [(2, 0.25)]}}
    assert sent == ["/api/runs/positions", f"/api/runs/{ids[7]}/chunks"]
    url = f"{srv.url}/api/runs/positions"
    headers = {"Authorization": f"Bearer {served_dir['viewer']}"}
    got = httpx.get(url, params={"id": [ids[7], "nosuchrun1", ids[7]]}, headers=headers,
                    timeout=30).json()
    assert got == {"runs": {ids[7]: {"attach": 1, "ingested_seq": ANY, "last_step": 2}}}
    for params, why in (({"id": ["bad id!"]}, "not a run id"),
                        ({"id": [f"r{i}" for i in range(1001)]}, "at most 1000")):
        resp = httpx.get(url, params=params, headers=headers, timeout=30)
        assert resp.status_code == 400 and why in resp.json()["error"], resp.text
    assert httpx.get(url, params={"id": ids[0]}, timeout=30).status_code == 401
    assert httpx.get(url, headers=headers, timeout=30).json() == {"runs": {}}


def test_a_server_that_is_away_costs_a_poll_not_the_agent(data_dir, served_dir, caplog):
    """The agent keeps stepping while its trials' server restarts: the points it could not
    read come at a later poll, once each, with a warning meanwhile."""
    from loopback_server import ThreadServer

    _log(data_dir, "away00001", [5.0, 4.0])
    srv = served_dir["server"]
    source = StoreMetricSource(server=srv.url, token=served_dir["viewer"])
    assert source.new_points(["away00001"]) == {"away00001": {"loss": [(0, 5.0), (1, 4.0)]}}
    srv.stop()
    _log(data_dir, "away00001", [3.0], attach=True)
    with caplog.at_level("WARNING", logger="assay.scheduler.metrics"):
        assert source.new_points(["away00001"]) == {}
        assert source.new_points(["away00001"]) == {}
    warned = [r for r in caplog.records if "cannot read trial curves" in r.getMessage()]
    assert len(warned) == 1 and srv.url in warned[0].getMessage()  # once, not every poll
    again = ThreadServer(data_dir, port=srv.port).start()
    try:
        assert source.new_points(["away00001"]) == {"away00001": {"loss": [(2, 3.0)]}}
        assert source.replaced() == set()
    finally:
        again.stop()


def test_a_token_the_server_refuses_fails_loudly(data_dir, served_dir):
    """A revoked or mistyped token is not a network blip: the agent fails, saying so."""
    from assay.errors import PermissionDeniedError

    _log(data_dir, "deny00001", [1.0])
    source = StoreMetricSource(server=served_dir["server"].url, token="asy_not_a_token")
    with pytest.raises(PermissionDeniedError):
        source.new_points(["deny00001"])
    with pytest.raises(UserInputError, match="http"):
        StoreMetricSource(server="localhost:8000")


def test_windows_of_one_read_see_no_chunk_stored_meanwhile(data_dir, served_dir, monkeypatch):
    """Past the server's point limit (413) a read goes in step windows; a chunk the trial
    stores between two of them came cut to the later ones, and, its seq being the highest
    read, its part in the earlier ones was never read. The windows now read as of the first
    answer (its ``seq_max``): the new chunk comes whole at the next poll."""
    import assay
    from assay.api import runs as runs_route
    from loopback_server import wait_for

    monkeypatch.setattr(runs_route, "CHUNK_POINTS_LIMIT", 50)
    api = assay.Api(data_dir)
    run = assay.init("curves", id="win0000001", dir=data_dir, system_metrics_interval=0,
                     capture=False)

    def log(key: str, lo: int, hi: int) -> None:
        for s in range(lo, hi):
            run.log({key: float(s)}, step=s)
        run.flush()
        wait_for(lambda: _points(api, "win0000001", key) == hi)

    log("a", 0, 10)
    log("b", 0, 10)
    source = StoreMetricSource(server=served_dir["server"].url, token=served_dir["viewer"])
    seen: dict[str, list[int]] = {}

    def poll() -> None:
        for k, pts in source.new_points(["win0000001"]).get("win0000001", {}).items():
            seen.setdefault(k, []).extend(s for s, _ in pts)

    poll()
    log("a", 10, 70)
    log("b", 10, 20)
    send = source.reader._send
    windows: list[Any] = []

    def sending(path: str, params: Any) -> Any:
        if params and "step_min" in params:
            windows.append(dict(params))
            if len(windows) == 2:
                log("b", 20, 60)  # the trial logs on while the agent reads windows
        return send(path, params)

    monkeypatch.setattr(source.reader, "_send", sending)
    for _ in range(3):
        poll()
    assert windows and all("seq_max" in w for w in windows)
    assert sorted(seen["a"]) == list(range(70)) and sorted(seen["b"]) == list(range(60))
    run.finish()


def _points(api: Any, run_id: str, key: str) -> int:
    from assay.errors import NotFoundError

    try:
        return int(api.history(run_id, [key]).height)
    except NotFoundError:
        return 0


def test_a_server_too_old_for_metric_chunks_fails_the_agent_saying_so(data_dir, served_dir):
    """Warning 'retrying' each minute while the stoppers never see a point would be worse."""
    _log(data_dir, "old000001", [1.0])
    source = StoreMetricSource(server=served_dir["server"].url, token=served_dir["viewer"])
    source.reader._arrow = False  # what a server without history_arrow says
    with pytest.raises(UserInputError, match="too old") as e:
        source.new_points(["old000001"])
    assert "upgrade the server" in e.value.hint


def test_public_url_drops_credentials():
    from assay.sdk.remote import public_url

    assert public_url("https://u:pw@host.x:9/base/?t=1#f") == "https://host.x:9/base"
    assert public_url("http://[::1]:8000/") == "http://[::1]:8000"
    source = StoreMetricSource(server="http://alice:secret@127.0.0.1:9/")
    assert source.server == "http://127.0.0.1:9" and "secret" in source.reader.server
