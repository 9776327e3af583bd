"""A run resumed through a server with resume_from_step: the server validates the rewind in
its run record and its ingester applies it like a local one."""

from __future__ import annotations

import time

import assay
import pytest
from assay.api.records import validate_record
from assay.errors import NotFoundError, UserInputError


def _run_record(**extra):
    return {"k": "run", "seq": (1 << 40) + 1, "time": 1.0, "run_id": "r1", "project": "p",
            "name": "n", "attach": 1, **extra}


@pytest.mark.parametrize("bad", [-1, "0", 1.5, True, 1 << 64])
def test_the_server_refuses_a_rewind_that_is_not_a_step(bad):
    with pytest.raises(UserInputError, match="resume_from_step must be an integer"):
        validate_record(_run_record(resume_from_step=bad), "r1")
    assert validate_record(_run_record(resume_from_step=3), "r1")["resume_from_step"] == 3


@pytest.mark.integration
def test_a_remote_resume_from_a_step_supersedes_the_dead_attempts_tail(server, tokens,
                                                                      tmp_path, data_dir):
    kw = {"dir": tmp_path / "laptop", "server": server.url, "token": tokens["researcher"],
          "system_metrics_interval": None, "capture": False}
    api = assay.Api(data_dir)  # the server's data directory

    def settled(run_id, attach, steps):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                rec = api.run(run_id)
                h = api.history(run_id, "loss")
                if rec.attach == attach and rec.status != "running" \
                        and h["step"].to_list() == steps:
                    return rec, h
            except NotFoundError:
                pass
            time.sleep(0.1)
        raise AssertionError("the server never made the run queryable as expected")

    run = assay.init(project="remote-rw", **kw)
    for i in range(6):
        run.log({"loss": 10.0 + i})
    run.finish("crashed")
    settled(run.id, 0, [0, 1, 2, 3, 4, 5])
    again = assay.init(project="remote-rw", resume=run.id, resume_from_step=2, **kw)
    again.log({"loss": 1.0})  # at step 2
    again.finish()
    rec, h = settled(run.id, 1, [0, 1, 2])
    assert h["value"].to_list() == [10.0, 11.0, 1.0]
    assert rec.summary["loss"] == {"last": 1.0, "step": 2, "min": 1.0, "max": 11.0}
    assert rec.last_step == 2
    # "auto": the rewind record comes with the first log() (here a checkpoint at step 1).
    third = assay.init(project="remote-rw", resume=run.id, resume_from_step="auto", **kw)
    third.log({"loss": 0.5}, step=1)
    third.finish()
    rec, h = settled(run.id, 2, [0, 1])
    assert h["value"].to_list() == [10.0, 0.5]


def test_the_server_validates_a_rewind_record():
    rec = {"k": "rewind", "seq": (1 << 40) + 3, "time": 1.0, "resume_from_step": 4,
           "attach": 1}
    assert validate_record(rec, "r1")["resume_from_step"] == 4
    with pytest.raises(UserInputError, match="resume_from_step must be an integer"):
        validate_record({**rec, "resume_from_step": "auto"}, "r1")
    for bad in ("x", None, [1], 1e300, 99):  # one bad record would block the run's ingest
        with pytest.raises(UserInputError, match="does not match its seq"):
            validate_record({**rec, "attach": bad}, "r1")


@pytest.mark.integration
def test_a_server_too_old_for_rewinds_refuses_an_explicit_step_and_auto_resumes_without(
        server, tokens, tmp_path, data_dir, monkeypatch, caplog):
    """An SDK newer than its server asks /api/health what the server takes: a rewind record
    would be refused there and stop the run's sender, so none is sent."""
    from assay.api import admin

    kw = {"dir": tmp_path / "laptop", "server": server.url, "token": tokens["researcher"],
          "system_metrics_interval": None, "capture": False}
    api = assay.Api(data_dir)
    run = assay.init(project="old-server", **kw)
    for i in range(4):
        run.log({"loss": 10.0 + i})
    run.finish("crashed")
    from assay.sdk.remote import RemoteClient

    this = RemoteClient(server.url).server_info()  # /api/health is public
    assert {"rewind", "remote_artifacts"} <= this.features and this.version == assay.__version__
    monkeypatch.setattr(admin, "SERVER_FEATURES", ())  # a server before features were listed
    with pytest.raises(UserInputError, match="too old for resume_from_step") as err:
        assay.init(project="old-server", resume=run.id, resume_from_step=2, **kw)
    assert "upgrade the server" in err.value.hint
    with caplog.at_level("WARNING", logger="assay.sdk.run"):
        again = assay.init(project="old-server", resume=run.id, resume_from_step="auto", **kw)
    assert "cannot rewind a resumed run" in caplog.text
    again.log({"loss": 0.5}, step=1)  # from a checkpoint at step 1: no rewind record sent
    again.finish()
    assert again._sender.error is None

    def settled():
        try:
            rec = api.run(run.id)
        except NotFoundError:
            return None
        return rec if rec.attach == 1 and rec.status == "completed" else None

    deadline = time.monotonic() + 30
    while not settled():
        assert time.monotonic() < deadline, f"the resumed run never finished: {api.run(run.id)}"
        time.sleep(0.1)
    steps = api.history(run.id, "loss")["step"].to_list()
    assert steps[-2:] == [2, 3], "without a rewind the earlier attempt's later steps stay"


@pytest.mark.integration
def test_remote_init_mistakes_are_refused_at_init_naming_the_fix(server, tokens, tmp_path,
                                                                 monkeypatch):
    """No token, another researcher's run, a run the server lacks: each used to pass init
    and surface only from the background sender, or at exit, with hints about HTTP headers
    or the local data directory."""
    from assay.errors import PermissionDeniedError

    monkeypatch.delenv("ASSAY_TOKEN", raising=False)
    kw = {"dir": tmp_path / "laptop", "server": server.url,
          "system_metrics_interval": None, "capture": False}
    with pytest.raises(UserInputError, match="needs a token") as err:
        assay.init(project="mine", **kw)
    assert "ASSAY_TOKEN" in err.value.hint
    assert not (tmp_path / "laptop" / "outbox").exists()  # nothing was started
    alice = assay.init(project="mine", token=tokens["researcher"], **kw)
    alice.log({"loss": 1.0})
    alice.finish()
    with pytest.raises(PermissionDeniedError, match="belongs to researcher"):
        assay.init(project="mine", resume=alice.id, token=tokens["researcher2"], **kw)
    with pytest.raises(NotFoundError, match=f"the server {server.url} has no such run"):
        assay.init(project="mine", resume="nosuchrun1", token=tokens["researcher"], **kw)
    with pytest.raises(PermissionDeniedError, match="401") as err:
        assay.init(project="mine", resume=alice.id, token="assay_bogus_token", **kw)
    assert "token=" in err.value.hint
    again = assay.init(project="mine", resume=alice.id, token=tokens["supervisor"], **kw)
    again.finish()  # a supervisor may write any run
