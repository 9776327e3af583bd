"""Artifacts of runs that log to a server: upload only what the server lacks, commit the
manifest, use and download with every digest verified (a real uvicorn server)."""

from __future__ import annotations

import hashlib
import os
import stat
import time

import assay
import httpx
import polars as pl
import pytest
from assay.errors import (
    AssayError,
    IntegrityError,
    NotFoundError,
    PermissionDeniedError,
    UserInputError,
)
from assay.sdk.remote_artifacts import HttpBlobStore

pytestmark = pytest.mark.integration


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _remote_run(server, token, local, **kw):
    return assay.init(project="remote-art", dir=local, server=server.url, token=token,
                      system_metrics_interval=None, capture=False, **kw)


@pytest.fixture
def uploads(monkeypatch):
    """The digests the client sends (PUT), in order."""
    sent: list[str] = []
    real = HttpBlobStore.upload

    def counting(self, path, ref):
        sent.append(ref.digest)
        return real(self, path, ref)

    monkeypatch.setattr(HttpBlobStore, "upload", counting)
    return sent


def _tree(root, files):
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def test_a_remote_run_logs_and_another_uses_and_downloads(server, tokens, tmp_path,
                                                           data_dir, uploads):
    big = os.urandom(3 << 20) + b"tail"  # several chunks each way
    ckpt = _tree(tmp_path / "ckpt", {"model.bin": big, "cfg/a.json": b'{"a": 1}',
                                     "cfg/copy.json": b'{"a": 1}'})
    laptop = tmp_path / "laptop"
    producer = _remote_run(server, tokens["researcher"], laptop)
    producer.log({"loss": 0.5})
    art = producer.log_artifact(ckpt, "ckpt", type="model", aliases=["best"],
                                metadata={"epoch": 3}, description="after 3 epochs")
    assert (art.name, art.version, art.type, art.aliases) == ("ckpt", 0, "model", ("best", "latest"))
    # The duplicated file is sent once; the server checks and keeps every digest.
    assert sorted(uploads) == sorted({_digest(big), _digest(b'{"a": 1}')})
    assert len(uploads) == 2

    # Logged again unchanged: the same version, nothing sent. One file changed: v1, that
    # file only.
    assert producer.log_artifact(ckpt, "ckpt", type="model").version == 0
    assert len(uploads) == 2
    (ckpt / "cfg" / "a.json").write_bytes(b'{"a": 2}')
    v1 = producer.log_artifact(ckpt, "ckpt", type="model")
    assert v1.version == 1 and uploads[2:] == [_digest(b'{"a": 2}')]
    producer.finish()

    # The server's own data directory holds the versions and the lineage.
    api = assay.Api(data_dir)
    stored = api.artifact("ckpt:best")
    assert (stored.version, stored.digest, stored.metadata) == (0, art.digest, {"epoch": 3})
    assert {e.path for e in stored.files()} == {"model.bin", "cfg/a.json", "cfg/copy.json"}

    consumer = _remote_run(server, tokens["researcher2"], tmp_path / "other-laptop")
    used = consumer.use_artifact("ckpt:best")
    assert (used.version, used.digest) == (0, art.digest)
    where = used.download()  # default: this machine's data directory, the server's folder
    slug = server.url.removeprefix("http://").replace(":", "_")
    assert where == tmp_path / "other-laptop" / "servers" / slug / "artifacts" / "ckpt" / "v0"
    assert (where / "model.bin").read_bytes() == big
    assert (where / "cfg" / "a.json").read_bytes() == b'{"a": 1}'
    assert not (where / "model.bin").stat().st_mode & stat.S_IWUSR  # read-only, as locally
    assert used.download() == where  # reused, not fetched again
    mine = tmp_path / "mine"
    assert used.download(mine) == mine and (mine / "model.bin").read_bytes() == big
    consumer.finish()

    def edges():
        _, e = api.lineage("ckpt:v0", direction="down")
        return {(r["src"], r["dst"], r["kind"]) for r in e.to_dicts()}

    deadline = time.monotonic() + 30
    while (("artifact:ckpt:v0", f"run:{consumer.id}", "consumed") not in edges()
           and time.monotonic() < deadline):
        time.sleep(0.2)
    assert ("artifact:ckpt:v0", f"run:{consumer.id}", "consumed") in edges()
    _, up = api.lineage("ckpt:v1", direction="up")
    assert (f"run:{producer.id}", "artifact:ckpt:v1", "produced") in {
        (r["src"], r["dst"], r["kind"]) for r in up.to_dicts()}


def _sealed(api, run_id, attach=0, timeout=30.0):
    """verify()'s problems once the run's attach is ingested and sealed (the seal follows
    the run's row by a moment), or its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            run = api.run(run_id)
            done = run.status == "completed" and run.attach == attach
        except NotFoundError:
            done = False
        problems = api.verify(run_id)[1] if done else ["not ingested"]
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(0.2)


def test_a_single_file_artifact_downloads_as_that_file(server, tokens, tmp_path, data_dir):
    f = tmp_path / "weights.pt"
    f.write_bytes(b"\x00\x01weights")
    run = _remote_run(server, tokens["researcher"], tmp_path / "laptop")
    run.log_artifact(f, "weights", type="model")
    got = run.use_artifact("weights:v0").download(tmp_path / "dl")
    assert got == tmp_path / "dl" / "weights.pt" and got.read_bytes() == b"\x00\x01weights"
    f.write_bytes(b"retrained")
    v1 = run.log_artifact(f, "weights", type="model")
    v1.delete(reason="bad eval", delete_aliases=True)  # on the server, as the token's owner
    run.finish()
    api = assay.Api(data_dir)
    gone = api.artifacts(include_deleted=True).filter(pl.col("version") == 1).row(0, named=True)
    assert (gone["deleted_by"], gone["delete_reason"]) == ("researcher", "bad eval")
    assert api.artifact("weights:latest").version == 0
    assert _sealed(api, run.id) == []  # sealed on the server, with its artifacts


def test_bad_artifact_input_is_refused_before_anything_is_sent(server, tokens, tmp_path,
                                                                uploads):
    run = _remote_run(server, tokens["researcher"], tmp_path / "laptop")
    f = tmp_path / "x.txt"
    f.write_text("x")
    with pytest.raises(UserInputError, match="artifact"):
        run.log_artifact(f, "bad name!")
    with pytest.raises(UserInputError, match="alias"):
        run.log_artifact(f, "ok", aliases=["v3"])
    with pytest.raises(UserInputError, match="no file or directory"):
        run.log_artifact(tmp_path / "nope", "ok")
    with pytest.raises(NotFoundError, match="no artifact"):
        run.use_artifact("never-logged:v0")
    assert uploads == []
    # A good one still goes through after all that.
    assert run.log_artifact(f, "ok").version == 0
    run.finish()


def test_a_file_that_changes_while_it_uploads_makes_no_version(server, tokens, tmp_path,
                                                               monkeypatch, data_dir):
    from assay.sdk import remote_artifacts as ra

    f = tmp_path / "growing.log"
    f.write_bytes(b"first")
    real = ra.HttpBlobStore.upload

    def racing(self, path, ref):  # the writer appends between hashing and sending
        with open(path, "ab") as out:
            out.write(b" and more")
        return real(self, path, ref)

    monkeypatch.setattr(ra.HttpBlobStore, "upload", racing)
    run = _remote_run(server, tokens["researcher"], tmp_path / "laptop")
    with pytest.raises(UserInputError, match="changed while it was uploaded"):
        run.log_artifact(f, "log")
    run.finish()
    assert assay.Api(data_dir).artifacts().height == 0


def test_blob_and_commit_routes_check_digests_sizes_and_owners(server, client, tokens,
                                                               tmp_path):
    run = _remote_run(server, tokens["researcher"], tmp_path / "laptop")
    run.log({"x": 1.0})
    run.flush()
    run._sender.wait(10)
    me, other, viewer = client("researcher"), client("researcher2"), client("viewer")
    data = b"payload"
    d = _digest(data)

    claimed = _digest(b"something else")
    r = me.put(f"/api/blobs/{claimed}", content=data)
    assert r.status_code == 400 and f"hashes to {d}" in r.json()["error"]
    # Nothing is stored under the digest it claimed.
    assert me.post("/api/blobs/missing", json={"digests": [claimed]}).json() == {
        "missing": [claimed]}
    assert viewer.put(f"/api/blobs/{d}", content=data).status_code == 403
    assert me.put("/api/blobs/sha256:XYZ", content=data).status_code == 400
    r = me.put(f"/api/blobs/{d}", content=data)
    assert r.status_code == 200 and r.json() == {"digest": d, "size": len(data)}
    assert me.post("/api/blobs/missing", json={"digests": [d, d]}).json() == {"missing": []}
    assert viewer.get(f"/api/blobs/{d}").content == data
    assert viewer.get(f"/api/blobs/{_digest(b'never')}").status_code == 404

    body = {"name": "art", "type": "dataset", "project": "remote-art",
            "files": [{"path": "a.txt", "digest": d, "size": len(data)}]}
    missing = _digest(b"never sent")
    r = me.post(f"/api/runs/{run.id}/artifacts",
                json={**body, "files": [*body["files"],
                                        {"path": "b.txt", "digest": missing, "size": 10}]})
    assert r.status_code == 404 and "b.txt" in r.json()["error"]
    r = me.post(f"/api/runs/{run.id}/artifacts",
                json={**body, "files": [{"path": "a.txt", "digest": d, "size": 99}]})
    assert r.status_code == 400 and "7 bytes" in r.json()["error"]
    r = me.post(f"/api/runs/{run.id}/artifacts",
                json={**body, "files": [{"path": "../a.txt", "digest": d, "size": 7}]})
    assert r.status_code == 400 and "relative path" in r.json()["error"]
    assert other.post(f"/api/runs/{run.id}/artifacts", json=body).status_code == 403
    r = me.post("/api/runs/nosuchrun/artifacts", json=body)
    assert r.status_code == 404 and "no owner" in r.json()["error"]
    assert viewer.post(f"/api/runs/{run.id}/artifacts", json=body).status_code == 403
    r = me.post(f"/api/runs/{run.id}/artifacts", json=body)
    assert r.status_code == 200 and r.json()["id"] == "art:v0"
    assert r.json()["manifest_blob"].startswith("sha256:")
    assert other.post(f"/api/runs/{run.id}/used-artifacts",
                      json={"spec": "art"}).status_code == 403
    r = me.post(f"/api/runs/{run.id}/used-artifacts", json={"spec": "art:nope!"})
    assert r.status_code == 400
    run.finish()


def test_download_refuses_a_blob_that_changed_on_the_server(server, tokens, tmp_path,
                                                            data_dir):
    from assay.store.blobs import LocalBlobStore

    f = tmp_path / "data.csv"
    f.write_bytes(b"a,b\n1,2\n")
    run = _remote_run(server, tokens["researcher"], tmp_path / "laptop")
    run.log_artifact(f, "table")
    path = LocalBlobStore(data_dir / "blobs").path_of(_digest(b"a,b\n1,2\n"))
    os.chmod(path, 0o644)
    path.write_bytes(b"a,b\n1,3\n")  # same size, other bytes
    used = run.use_artifact("table:v0")
    dest = tmp_path / "dl"
    with pytest.raises(IntegrityError, match="corrupt"):
        used.download(dest)
    assert not dest.exists() or not any(dest.iterdir())
    run.finish()


def test_a_run_whose_records_the_server_refused_cannot_log_artifacts(server, tokens,
                                                                    tmp_path, monkeypatch):
    from assay.sdk.remote import RemoteClient

    f = tmp_path / "x.txt"
    f.write_text("x")
    # init refuses an unknown token at once; this is one revoked after init.
    monkeypatch.setattr(RemoteClient, "check_can_log", lambda self: None)
    run = _remote_run(server, "not-a-token", tmp_path / "laptop")
    with pytest.raises(PermissionDeniedError):
        run.log_artifact(f, "x")
    run._sender.abandon()
    run.finish()


def test_busy_answers_and_dropped_connections_are_retried(tmp_path):
    """Unit level: 503 with Retry-After, then a connection error, then the answer."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"error": "busy"})
        if len(calls) == 2:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"missing": []})

    http = httpx.Client(base_url="http://127.0.0.1:9", transport=httpx.MockTransport(handler))
    blobs = HttpBlobStore(http, "http://127.0.0.1:9", max_backoff=0.01)
    assert blobs.missing([_digest(b"x")]) == []
    assert len(calls) == 3

    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "bad token", "hint": "use a token"})

    http = httpx.Client(base_url="http://127.0.0.1:9", transport=httpx.MockTransport(refuse))
    with pytest.raises(PermissionDeniedError, match="bad token"):
        HttpBlobStore(http, "http://127.0.0.1:9", max_backoff=0.01).missing([_digest(b"x")])

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    http = httpx.Client(base_url="http://127.0.0.1:9", transport=httpx.MockTransport(down))
    with pytest.raises(AssayError, match="did not answer"):
        HttpBlobStore(http, "http://127.0.0.1:9", attempts=2, max_backoff=0.01).missing(
            [_digest(b"x")])


# -- from the review of the first version -----------------------------------------------------------
def _ready_run(server, token, tmp_path):
    run = _remote_run(server, token, tmp_path / "laptop")
    run.log({"x": 1.0})
    run.flush()
    assert run._sender.wait(10)
    return run


def test_a_finished_run_takes_no_more_artifacts_and_the_project_is_the_runs(
        server, client, tokens, tmp_path, data_dir):
    """A sealed record lists the artifacts a run produced and used: adding one after the run
    finished would make `assay verify` report it tampered with. A resumed run may."""
    me = client("researcher")
    data = b"abc"
    d = _digest(data)
    assert me.put(f"/api/blobs/{d}", content=data).status_code == 200
    body = {"name": "late", "files": [{"path": "a", "digest": d, "size": 3}]}
    run = _ready_run(server, tokens["researcher"], tmp_path)
    r = me.post(f"/api/runs/{run.id}/artifacts", json={**body, "project": "elsewhere"})
    assert r.status_code == 400 and "remote-art" in r.json()["error"]
    r = me.post(f"/api/runs/{run.id}/artifacts", json=body)
    assert r.status_code == 200 and r.json()["project"] == "remote-art"
    run.finish()
    for path, payload in ((f"/api/runs/{run.id}/artifacts", body),
                          (f"/api/runs/{run.id}/used-artifacts", {"spec": "late"})):
        r = me.post(path, json=payload)
        assert r.status_code == 409 and "finished" in r.json()["error"]
        assert "resume" in r.json()["hint"]
    again = _remote_run(server, tokens["researcher"], tmp_path / "laptop", resume=run.id)
    assert again.use_artifact("late").version == 0
    again.finish()
    api = assay.Api(data_dir)
    assert _sealed(api, run.id, attach=1) == []  # sealed again with its resume's edge


def test_stalled_uploads_cannot_starve_the_server(server, client, tokens, monkeypatch):
    """Uploads have their own few threads: with all of them held by a client that stopped
    sending, the next upload is told to come back (503) and /api/health still answers; the
    stalled one is cut off after the idle limit (408)."""
    import socket

    from assay.api import blobs as blob_routes

    monkeypatch.setattr(blob_routes, "UPLOAD_WORKERS", 1)
    monkeypatch.setattr(blob_routes, "UPLOAD_IDLE_S", 1.5)
    host, port = server.url.removeprefix("http://").split(":")
    stalled = socket.create_connection((host, int(port)))
    stalled.sendall((f"PUT /api/blobs/{_digest(b'x' * 100)} HTTP/1.1\r\nHost: {host}\r\n"
                     f"Authorization: Bearer {tokens['researcher']}\r\n"
                     "Content-Length: 100\r\n\r\n").encode() + b"x" * 10)
    me = client("researcher")

    def stalled_holds_the_slot() -> bool:  # never probe with an upload: it could take it
        limiters = getattr(server.app.state, "upload_limiters", {})
        return any(slots.borrowed_tokens for slots, _ in limiters.values())

    deadline = time.monotonic() + 20
    while not stalled_holds_the_slot() and time.monotonic() < deadline:
        time.sleep(0.02)
    r = me.put(f"/api/blobs/{_digest(b'y')}", content=b"y")
    stalled.settimeout(10)
    if r.status_code != 503:
        stalled.settimeout(0.5)
        raise AssertionError(f"{r.status_code}: the stalled upload got {stalled.recv(4096)!r}")
    assert r.headers["Retry-After"]
    assert me.get("/api/health").status_code == 200
    answer = stalled.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 408")
    stalled.close()
    assert me.put(f"/api/blobs/{_digest(b'y')}", content=b"y").status_code == 200
    # Nothing of the cut-off upload was stored.
    assert me.post("/api/blobs/missing", json={"digests": [_digest(b"x" * 100)]}).json()[
        "missing"] == [_digest(b"x" * 100)]


def test_what_the_server_would_refuse_is_refused_before_any_upload(server, tokens, tmp_path,
                                                                    uploads):
    run = _remote_run(server, tokens["researcher"], tmp_path / "laptop")
    f = tmp_path / "m.bin"
    f.write_bytes(b"model")
    with pytest.raises(UserInputError, match="NaN"):
        run.log_artifact(f, "m", metadata={"loss": float("nan")})
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"latin-1 name")
    with pytest.raises(UserInputError, match="UTF-8"):
        run.log_artifact(odd, "odd")
    with pytest.raises(UserInputError, match="100 aliases"):
        run.log_artifact(f, "m", aliases=[f"a{i}" for i in range(101)])
    assert uploads == []
    run.finish()


def test_a_delete_whose_answer_was_lost_is_not_sent_again():
    """A DELETE that reached the server is not repeated (the repeat would answer 'already
    deleted'); one that never reached it is. Uploads, which are idempotent, are."""
    from assay.sdk.remote_artifacts import RemoteArtifacts

    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        raise httpx.ReadTimeout("no answer", request=request)

    ra = RemoteArtifacts("http://127.0.0.1:9", "t")
    ra._http = httpx.Client(base_url="http://127.0.0.1:9", transport=httpx.MockTransport(handler))
    ra.blobs._http = ra._http
    ra.blobs.max_backoff = 0.01
    with pytest.raises(AssayError, match="did not answer") as e:
        ra.delete("m:v0", reason="r")
    assert calls == ["DELETE"] and "may have acted" in e.value.hint
    calls.clear()
    with pytest.raises(AssayError):
        ra.blobs.missing([_digest(b"x")])
    assert len(calls) == ra.blobs.attempts


def test_an_upload_whose_answer_was_lost_is_not_sent_again_when_the_server_has_it(tmp_path):
    from assay.store.blobs import BlobRef

    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if request.method == "PUT":
            raise httpx.ReadTimeout("slow fsync", request=request)
        return httpx.Response(200, json={"missing": []})  # it was stored after all

    http = httpx.Client(base_url="http://127.0.0.1:9", transport=httpx.MockTransport(handler))
    blobs = HttpBlobStore(http, "http://127.0.0.1:9", max_backoff=0.01)
    f = tmp_path / "big"
    f.write_bytes(b"0123")
    blobs.upload(f, BlobRef(_digest(b"0123"), 4))
    assert calls == ["PUT", "POST"]


def test_a_server_too_old_for_remote_artifacts_is_named_before_any_upload(
        server, tokens, tmp_path, monkeypatch, uploads):
    from assay.api import admin

    monkeypatch.setattr(admin, "SERVER_FEATURES", ("rewind",))  # what a server before them says
    f = tmp_path / "x.txt"
    f.write_text("x")
    run = _remote_run(server, tokens["researcher"], tmp_path / "laptop")
    run.log({"loss": 1.0})
    with pytest.raises(UserInputError, match="too old for the artifacts") as err:
        run.log_artifact(f, "x")
    assert "upgrade the server" in err.value.hint
    assert uploads == []
    run.finish()  # the run's records were not touched
    assert run._sender.error is None


def test_a_remote_runs_artifact_handle_moves_its_aliases_on_the_server(server, tokens,
                                                                       tmp_path, data_dir):
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    with _remote_run(server, tokens["researcher"], tmp_path / "laptop") as run:
        art = run.log_artifact(f, "w")
        assert set(art.set_alias("prod", reason="eval").aliases) == {"latest", "prod"}
    assert assay.Api(data_dir).artifact("w:prod").version == art.version
    assert art.download(tmp_path / "dl").read_bytes() == b"weights"  # the handle still works
    assert set(art.remove_alias("prod").aliases) == {"latest"}
