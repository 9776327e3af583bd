"""Artifact requests of a run that logs to a server outlast a server restart or a busy server
(review 46), and a server too old to record that a folder was logged still takes the commit.
Unit level: httpx's MockTransport and a simulated clock, so nothing sleeps."""

from __future__ import annotations

import hashlib
import logging

import httpx
import pytest
from assay.errors import AssayError, NotFoundError, UserInputError
from assay.sdk.remote_artifacts import HttpBlobStore, RemoteArtifacts


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- 4. remote calls outlast a restart or a busy server -------------------------------------------
class _Clock:
    """A simulated clock for HttpBlobStore's retries: waiting advances it, nothing sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def install(self, blobs: HttpBlobStore) -> HttpBlobStore:
        blobs._clock = lambda: self.now
        blobs._wait = self.wait
        return blobs

    def wait(self, s: float) -> None:
        self.waits.append(s)
        self.now += s


def _blobs(handler, clock: _Clock, **kw) -> HttpBlobStore:
    http = httpx.Client(base_url="http://127.0.0.1:9", transport=httpx.MockTransport(handler))
    return clock.install(HttpBlobStore(http, "http://127.0.0.1:9", **kw))


def test_a_server_restarting_for_a_minute_is_waited_for(monkeypatch):
    monkeypatch.delenv("ASSAY_UPLOAD_RETRY_S", raising=False)
    clock = _Clock()
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(clock.now)
        if clock.now < 60:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"missing": []})

    assert _blobs(handler, clock).missing([_digest(b"x")]) == []
    assert 60 <= clock.now < 66 and len(calls) > 6
    assert max(clock.waits) <= 5.0  # the return is noticed within seconds


def test_a_busy_server_is_waited_for_with_its_retry_after(monkeypatch):
    monkeypatch.delenv("ASSAY_UPLOAD_RETRY_S", raising=False)
    clock = _Clock()

    def handler(request: httpx.Request) -> httpx.Response:
        if clock.now < 100:
            return httpx.Response(503, headers={"Retry-After": "2"},
                                  json={"error": "8 uploads are in progress; try again shortly"})
        return httpx.Response(200, json={"missing": []})

    assert _blobs(handler, clock).missing([_digest(b"x")]) == []
    assert clock.now >= 100 and min(clock.waits) >= 2.0


def test_retries_stop_at_the_budget_and_say_how_to_wait_longer(monkeypatch):
    monkeypatch.setenv("ASSAY_UPLOAD_RETRY_S", "30")
    clock = _Clock()

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(AssayError, match=r"did not answer .*after 30 s") as e:
        _blobs(down, clock).missing([_digest(b"x")])
    assert clock.now == pytest.approx(30) and "ASSAY_UPLOAD_RETRY_S" in e.value.hint

    clock = _Clock()

    def busy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": "2"}, json={"error": "busy"})

    with pytest.raises(AssayError, match=r"busy \(still so, after 30 s\)") as e:
        _blobs(busy, clock).missing([_digest(b"x")])
    assert "ASSAY_UPLOAD_RETRY_S" in e.value.hint


@pytest.mark.parametrize("status,cls", [(400, UserInputError), (403, AssayError),
                                        (404, NotFoundError)])
def test_refusals_are_not_retried(status, cls):
    clock = _Clock()
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(status, json={"error": "no"})

    with pytest.raises(cls, match="no"):
        _blobs(handler, clock).missing([_digest(b"x")])
    assert calls == [1] and clock.now == 0


def test_dropped_answers_are_still_tried_a_few_times_not_for_the_whole_budget():
    clock = _Clock()
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ReadTimeout("no answer", request=request)

    with pytest.raises(AssayError, match="did not answer"):
        _blobs(handler, clock).missing([_digest(b"x")])
    assert len(calls) == 6


def test_the_retry_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("ASSAY_UPLOAD_RETRY_S", "42")
    assert HttpBlobStore(None, "http://h").retry_budget == 42
    monkeypatch.setenv("ASSAY_UPLOAD_RETRY_S", "soon")
    with pytest.raises(UserInputError, match="ASSAY_UPLOAD_RETRY_S"):
        HttpBlobStore(None, "http://h")
    monkeypatch.delenv("ASSAY_UPLOAD_RETRY_S")
    assert HttpBlobStore(None, "http://h").retry_budget == 600



def test_a_server_too_old_for_the_folder_flag_gets_the_commit_without_it(tmp_path, caplog):
    commits: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        import json

        if request.url.path == "/api/blobs/missing":
            return httpx.Response(200, json={"missing": []})
        body = json.loads(request.content)
        commits.append(body)
        if "folder" in body:  # what an older server's strict body model answers
            return httpx.Response(400, json={
                "error": "invalid request: folder: Extra inputs are not permitted"})
        return httpx.Response(200, json={
            "name": "ckpt", "version": 0, "type": "model", "project": "p",
            "digest": _digest(b"m"), "manifest_blob": _digest(b"m"), "files": 1, "size": 1})

    ra = RemoteArtifacts("http://127.0.0.1:9", "t")
    ra._http = ra.blobs._http = httpx.Client(base_url="http://127.0.0.1:9",
                                             transport=httpx.MockTransport(handler))
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "a.pt").write_bytes(b"a")
    with caplog.at_level(logging.WARNING):
        av = ra.log(tmp_path / "ckpt", "ckpt", "model", project="p", run_id="r", aliases=[],
                    metadata={}, description="")
    assert av.version == 0 and [("folder" in c) for c in commits] == [True, False]
    assert "too old to record that" in caplog.text
