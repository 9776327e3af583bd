"""assay.init(server=..., token=...): the SDK logging through a real server."""

from __future__ import annotations

import time
from typing import Any

import assay
import pytest
from assay.errors import NotFoundError
from gitrepo import dirty_checkout  # tests/ is on sys.path (rootdir conftest)

pytestmark = pytest.mark.integration


def test_sdk_logs_to_a_server_and_resumes_there(server, tokens, tmp_path, data_dir):
    local = tmp_path / "laptop"
    run = assay.init(project="remote-sdk", dir=local, server=server.url,
                     token=tokens["researcher"], config={"lr": 0.1},
                     system_metrics_interval=None, capture=False)
    for i in range(500):
        run.log({"loss": 1.0 / (i + 1)})
    run.finish()
    api = assay.Api(data_dir)  # the server's data directory

    # finish() returns once the run is queryable on the server, as a local finish does.
    rec = api.run(run.id)
    assert rec.status == "completed" and rec.last_step == 499
    assert api.history(run.id).height == 500

    def settled(n):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                h = api.history(run.id)
                if h.height == n and api.run(run.id).status == "completed":
                    return h
            except NotFoundError:
                pass
            time.sleep(0.1)
        raise AssertionError("the server never made the run queryable")

    h = settled(500)
    assert h.height == 500 and api.run(run.id).status == "completed"
    assert api.run(run.id).config == {"lr": 0.1}
    again = assay.init(project="remote-sdk", dir=local, server=server.url,
                       token=tokens["researcher"], resume=run.id,
                       system_metrics_interval=None, capture=False)
    again.log({"loss": 0.0001})
    again.finish()
    h = settled(501)
    assert h.height == 501 and h["step"].max() == 500
    assert not (local / "lance").exists()  # nothing was ingested on the client


def _ingest_once(data_dir):
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "assay.store.ingestd", str(data_dir), "--once"],
                   check=True, timeout=120)


def test_two_resumes_before_the_server_ingests_get_their_own_attaches(
        data_dir, tokens, tmp_path, helpers, monkeypatch):
    """The run's record lags the server's WAL until ingestion: a resume must take its attach
    from the records the server holds, or it reuses one and its records are dropped."""
    import assay.sdk.run as sdk_run

    monkeypatch.setattr(sdk_run, "REMOTE_FINISH_TIMEOUT", 2.0)  # no ingester to wait for
    srv = helpers.ThreadServer(data_dir, start_daemon=False).start()
    kw = {"server": srv.url, "token": tokens["researcher"], "dir": tmp_path / "laptop",
          "capture": False, "system_metrics_interval": None}
    try:
        r0 = assay.init("p", **kw)
        for i in range(5):
            r0.log({"loss": float(i)}, step=i)
        r0.finish()
        _ingest_once(data_dir)
        r1 = assay.init("p", resume=r0.id, **kw)
        for i in range(5, 10):
            r1.log({"loss": float(i)}, step=i)
        r1.finish()  # not ingested: the run's record still says attach 0
        r2 = assay.init("p", resume=r0.id, **kw)
        assert (r1.attach, r2.attach) == (1, 2)
        for i in range(10, 20):
            r2.log({"loss": float(i)}, step=i)
            r2.flush()
        r2.finish()
    finally:
        srv.stop()
    _ingest_once(data_dir)
    api = assay.Api(data_dir)
    assert api.history(r0.id, "loss")["step"].sort().to_list() == list(range(20))
    assert api.run(r0.id).status == "completed"


def test_a_resume_first_ships_what_a_killed_process_left_unsent(server, tokens, local_dir,
                                                                 data_dir, helpers):
    h = helpers.RemoteRunHarness(local_dir, server.url, tokens["researcher"])
    for i in range(10):
        h.log({"loss": float(i)}, i)
    assert h.sync()
    h.sender.abandon()  # the network drops...
    h.sender.join(5)
    for i in range(10, 20):
        h.log({"loss": float(i)}, i)
    assert h.writer.flush(10)  # ...steps 10-19 are safe in the outbox...
    h.writer.stop()
    h.wal.close()  # ...and the process is killed
    again = assay.init("remote", resume=h.run_id, server=server.url,
                       token=tokens["researcher"], dir=local_dir, capture=False,
                       system_metrics_interval=None)
    for i in range(20, 25):
        again.log({"loss": float(i)}, step=i)
    again.finish()
    assert not list((local_dir / "outbox").rglob("*.wal"))
    api = assay.Api(data_dir)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if api.run(h.run_id).status == "completed":
                break
        except NotFoundError:
            pass
        time.sleep(0.1)
    assert api.history(h.run_id, "loss")["step"].sort().to_list() == list(range(25))


def test_a_remote_runs_git_diff_is_sent_to_the_server(server, tokens, tmp_path, data_dir,
                                                       client, monkeypatch):
    """Only the diff's digest used to travel: the server's /diff answered 404 and verify
    could not tell a deleted diff from one that never arrived."""
    dirty_checkout(tmp_path / "code", "lr = 0.1\n", "lr = 0.3  # the change that ran\n")
    monkeypatch.chdir(tmp_path / "code")
    with assay.init(project="remote-diff", dir=tmp_path / "laptop", server=server.url,
                    token=tokens["researcher"], system_metrics_interval=None) as run:
        run.log({"loss": 1.0})
    api = assay.Api(data_dir)
    git = api.run(run.id).git
    assert git["diff_stored"] is True
    resp = client("viewer").get(f"/api/runs/{run.id}/diff")
    assert resp.status_code == 200 and "+lr = 0.3  # the change that ran" in resp.text
    assert api.verify(run.id) == (1, [])
    # Now that the server holds it, a deleted diff is reported by the server's verify.
    digest = git["diff_blob"]
    [blob] = list((data_dir / "blobs").rglob(digest.split(":")[1]))
    blob.unlink()
    checked, problems = api.verify(run.id)
    assert checked == 1 and "git diff blob" in problems[0].reason and "missing" in problems[0].reason


def test_a_diff_the_server_refuses_leaves_the_run_logging(server, tokens, tmp_path, data_dir,
                                                          monkeypatch, caplog):
    """A failed diff upload is a warning; the record says the diff was not stored, so the
    server's verify does not call it missing."""
    from assay.sdk import remote_artifacts

    def refuse(self, path, ref):
        raise assay.errors.ConflictError("no room")

    monkeypatch.setattr(remote_artifacts.HttpBlobStore, "upload", refuse)
    dirty_checkout(tmp_path / "code", "lr = 0.1\n", "lr = 0.3  # the change that ran\n")
    monkeypatch.chdir(tmp_path / "code")
    with caplog.at_level("WARNING", logger="assay"), assay.init(
            project="remote-diff", dir=tmp_path / "laptop", server=server.url,
            token=tokens["researcher"], system_metrics_interval=None) as run:
        run.log({"loss": 1.0})
    api = assay.Api(data_dir)
    rec = api.run(run.id)
    assert rec.status == "completed" and rec.git["diff_stored"] is False
    assert api.verify(run.id) == (1, [])
    assert any("could not send the git diff" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("token", "says"), [("viewer", "is a viewer's"),
                                             (None, "server answered 401")])
def test_init_refuses_a_token_the_server_would_refuse_before_training_starts(
        server, tokens, tmp_path, token, says):
    """A viewer's or an unknown token started the run; the refusal came later, on stderr,
    and finish() said the server refused it (artifacts review). README: init refuses at
    once what the server would refuse later."""
    from assay.errors import PermissionDeniedError

    local = tmp_path / "laptop"
    with pytest.raises(PermissionDeniedError, match=says) as e:
        assay.init(project="p", dir=local, server=server.url,
                   token=tokens[token] if token else "assay_not_a_real_token",
                   system_metrics_interval=None, capture=False)
    assert "--role researcher" in e.value.hint
    assert not list(local.rglob("*.wal"))  # no outbox segment: nothing was started


def test_init_against_a_server_that_does_not_answer_still_logs_offline(tmp_path, helpers):
    port = helpers.free_port()
    t0 = time.monotonic()
    run = assay.init(project="p", dir=tmp_path / "laptop", server=f"http://127.0.0.1:{port}",
                     token="assay_whatever", system_metrics_interval=None, capture=False)
    assert time.monotonic() - t0 < 5
    run.log({"loss": 1.0})
    run._sender.abandon()  # nothing will answer: leave the outbox for `assay sync`
    run.finish()


@pytest.mark.parametrize("status", [502, 503, 429])
def test_init_against_a_busy_or_proxied_server_still_logs_offline(tmp_path, status):
    """whoami answered 503 behind a proxy while the server restarts: init raised, where the
    run used to start and log offline (regression review)."""
    import http.server
    import threading

    class Busy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        run = assay.init(project="p", dir=tmp_path / "laptop",
                         server=f"http://127.0.0.1:{srv.server_port}", token="assay_x",
                         system_metrics_interval=None, capture=False)
        run.log({"loss": 1.0})
        run._sender.abandon()
        run.finish()
    finally:
        srv.shutdown()


def test_a_remote_runs_diff_upload_gives_up_quickly_and_keeps_the_env(tmp_path, helpers,
                                                                      monkeypatch):
    """With the server away, the diff upload waited out the 600 s retry budget; finish()
    stopped waiting after 10 s and the run lost its env/git record (regression review)."""
    from assay.sdk.remote import outbox_segment
    from assay.store.wal import read_wal

    monkeypatch.chdir(dirty_checkout(tmp_path / "code", "lr = 0.1\n", "lr = 0.2\n"))
    port = helpers.free_port()  # nothing listens
    t0 = time.monotonic()
    run = assay.init(project="p", dir=tmp_path / "laptop", server=f"http://127.0.0.1:{port}",
                     token="assay_x", system_metrics_interval=None)
    run.log({"loss": 1.0})
    run._capturing.join(30)
    assert not run._capturing.is_alive() and time.monotonic() - t0 < 20
    run._sender.abandon()
    run.finish()
    kinds = [r.data.get("k") for r in read_wal(outbox_segment(tmp_path / "laptop", run.id, 0))]
    assert "env" in kinds
    [env] = [r.data for r in read_wal(outbox_segment(tmp_path / "laptop", run.id, 0))
             if r.data.get("k") == "env"]
    assert env["git"]["diff_stored"] is False and env["git"]["diff_blob"]


def test_a_run_logging_to_an_unreachable_server_exits_promptly_and_keeps_its_records(
        tmp_path, helpers, monkeypatch, caplog):
    """Nothing listens at the address: init warns, logging goes on offline, and finish()
    gives up after the short unreachable grace, not the 60 s a busy server gets. The records
    wait in the outbox for `assay sync --server`."""
    from assay.sdk import remote

    monkeypatch.setattr(remote, "UNREACHABLE_GRACE_S", 1.0)
    url = f"http://127.0.0.1:{helpers.free_port()}"
    with caplog.at_level("WARNING", logger="assay"):
        run = assay.init("offline", dir=tmp_path / "laptop", server=url, token="t",
                         capture=False, system_metrics_interval=None)
        for i in range(20):
            run.log({"loss": float(i)})
        t0 = time.monotonic()
        run.finish()
        took = time.monotonic() - t0
    assert took < 15, f"finish() waited {took:.1f} s for a server nobody runs"
    said = caplog.text
    assert f"{url} did not answer" in said, "init says the run logs offline"
    assert "could not be reached" in said and f"assay sync --server {url}" in said
    kept = list((tmp_path / "laptop" / "outbox").glob(f"{run.id}/*.wal"))
    assert len(kept) == 1 and kept[0].stat().st_size > 0, "the records wait in the outbox"


def _answering(status: int, delay: float) -> Any:
    """A plain HTTP server on 127.0.0.1 that answers every request ``status`` after
    ``delay`` seconds (an ``assay server`` that is up, but busy or slow)."""
    import http.server
    import threading

    class Answer(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(delay)
            body = b'{"durable_seq": -1}' if status == 200 else b""
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client gave up waiting
                pass

        do_GET = do_POST = _answer

        def log_message(self, *a: Any) -> None:  # quiet
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.mark.parametrize(("status", "delay"), [(503, 0.0), (200, 0.6)], ids=["busy", "slow"])
def test_a_server_that_answers_gets_the_whole_finish_timeout(tmp_path, monkeypatch, status,
                                                             delay):
    """A server that answers, even 503 or slower than the request timeout (0.3 s here), is
    up: the grace for an unreachable one must not cut a finish short while it recovers
    (helper-66: a read timeout counted as unreachable)."""
    from assay.sdk import remote
    from assay.sdk.remote import RemoteSender
    from assay.store.wal import encode

    srv = _answering(status, delay)
    monkeypatch.setattr(remote, "UNREACHABLE_GRACE_S", 0.3)
    seg = tmp_path / "seg.wal"
    seg.write_bytes(encode({"k": "metrics", "seq": 0, "time": 0.0, "step": 0, "m": {}}))
    sender = RemoteSender(f"http://127.0.0.1:{srv.server_address[1]}", "uprun", seg,
                          token="t", timeout=0.3, max_backoff=0.2)
    try:
        t0 = time.monotonic()
        assert sender.close(2.0) is False
        took = time.monotonic() - t0
    finally:
        sender.abandon()
        srv.shutdown()
    assert took >= 1.9, f"a server that answers was given up on after {took:.1f} s"
    assert sender.retries > 0 and seg.exists() and sender.unreachable_since is None


def test_a_typod_metric_key_is_said_on_a_server_as_in_a_directory(server, tokens, tmp_path,
                                                                  data_dir, caplog):
    """helper-66: history(keys=[typo]) warned on a data directory only."""
    run = assay.init(project="p", dir=tmp_path / "laptop", server=server.url,
                     token=tokens["researcher"], capture=False, system_metrics_interval=None)
    run.log({"train/loss": 0.5})
    run.finish()
    with assay.Api(server=server.url, token=tokens["viewer"]) as api, \
            caplog.at_level("WARNING", logger="assay"):
        assert api.history(run.id, ["train/los"]).height == 0
    assert "has no points of 'train/los' (did you mean 'train/loss'?)" in caplog.text
