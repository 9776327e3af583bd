"""assay.init(resume=..., resume_from_step=k): a resumed run restarts at step k and its
history, summary and last step hold only its own points from there on."""

from __future__ import annotations

import assay
import pytest
from assay.errors import UserInputError


def _init(**kw):
    kw.setdefault("system_metrics_interval", None)
    kw.setdefault("capture", False)
    return assay.init(**kw)


def _died(project="p", steps=6, **kw):
    """An attempt that logged ``loss = 10 + step`` at ``steps`` steps, then crashed."""
    run = _init(project=project, **kw)
    for i in range(steps):
        run.log({"loss": 10.0 + i, "acc": i / 10})
    run.finish("crashed")
    return run


@pytest.mark.parametrize("bad, match", [
    (-1, "integer in"), (1.5, "must be an integer"), ("3", "must be an integer"),
    (True, "must be an integer"), (1 << 63, "integer in"),
])
def test_resume_from_step_must_be_a_step(data_dir, bad, match):
    run = _died()
    with pytest.raises(UserInputError, match=match) as e:
        _init(project="p", resume=run.id, resume_from_step=bad)
    assert "restarts at" in e.value.hint


def test_resume_from_step_needs_resume(data_dir):
    with pytest.raises(UserInputError, match="needs resume=run_id") as e:
        _init(project="p", resume_from_step=0)
    assert "resume=run.id" in e.value.hint


def test_a_run_resumed_from_a_step_keeps_the_points_below_it_and_only_its_own_after(data_dir):
    run = _died()
    again = _init(project="p", resume=run.id, resume_from_step=2)
    assert again.summary.to_dict() == {"loss": 11.0, "acc": 0.1}  # what remains below 2
    again.log({"loss": 1.0})  # implicit steps continue at the restart step
    again.log({"loss": 0.5})
    assert again.summary.min("loss") == 0.5 and again.summary.max("loss") == 11.0
    again.finish()
    api = assay.Api()
    h = api.history(run.id)
    assert sorted(zip(h["key"], h["step"], h["value"])) == [
        ("acc", 0, 0.0), ("acc", 1, 0.1),
        ("loss", 0, 10.0), ("loss", 1, 11.0), ("loss", 2, 1.0), ("loss", 3, 0.5)]
    rec = api.run(run.id)
    assert rec.summary["loss"] == {"last": 0.5, "step": 3, "min": 0.5, "max": 11.0}
    assert rec.summary["acc"] == {"last": 0.1, "step": 1, "min": 0.0, "max": 0.1}
    assert rec.last_step == 3 and rec.attach == 1 and rec.status == "completed"
    runs = api.runs("p")
    assert runs["summary_max.loss"].to_list() == [11.0]
    rewinds = [e for e in api.audit_log() if e["action"] == "run.rewind"]
    assert [(e["target"], e["details"]["step"], e["details"]["points_superseded"])
            for e in rewinds] == [(f"run:{run.id}", 2, 8)]
    checked, problems = api.verify(run.id)  # the sealed record covers the rewound history
    assert checked == 1 and problems == []


def test_resume_from_step_0_supersedes_every_earlier_point(data_dir):
    run = _died()
    again = _init(project="p", resume=run.id, resume_from_step=0)
    assert again.summary.to_dict() == {}
    again.log({"loss": 3.0})
    again.finish()
    h = assay.Api().history(run.id)
    assert list(zip(h["key"], h["step"], h["value"])) == [("loss", 0, 3.0)]
    assert assay.Api().run(run.id).summary == {
        "loss": {"last": 3.0, "step": 0, "min": 3.0, "max": 3.0}}


def test_a_relaunched_command_rewinds_to_step_0_unless_it_names_its_own_step(data_dir,
                                                                            monkeypatch):
    run = _died(id="trial0002")
    monkeypatch.setenv("ASSAY_RESUME_ID", "trial0002")  # a backend relaunched the command
    again = _init(project="p")
    again.log({"loss": 1.0})
    again.finish()
    assert assay.Api().history(run.id)["step"].to_list() == [0]
    ckpt = _init(project="p", resume_from_step=1)  # it restarts from its checkpoint at 1
    ckpt.log({"loss": 0.5})
    ckpt.finish()
    h = assay.Api().history(run.id, "loss")
    assert list(zip(h["step"], h["value"])) == [(0, 1.0), (1, 0.5)]


def test_system_metrics_are_never_rewound(data_dir):
    run = _init(project="p", system_metrics_interval=0.05)
    run.log({"loss": 1.0})
    import time

    time.sleep(0.3)
    run.finish()
    sys_before = assay.Api().history(run.id).filter(
        assay.Api().history(run.id)["key"].str.starts_with("sys/")).height
    assert sys_before > 0
    again = _init(project="p", resume=run.id, resume_from_step=0)
    again.finish()
    h = assay.Api().history(run.id)
    assert h.filter(h["key"].str.starts_with("sys/")).height == sys_before
    assert h.filter(h["key"] == "loss").height == 0


def test_auto_rewinds_to_the_first_step_logged(data_dir):
    """resume_from_step="auto": the rewind waits for the first log(); a target restoring its
    checkpoint at step 3 keeps the points below 3, one starting over rewinds to 0."""
    run = _died()
    again = _init(project="p", resume=run.id, resume_from_step="auto")
    assert again.summary.to_dict() == {"loss": 15.0, "acc": 0.5}  # nothing rewound yet
    again.log({"loss": 1.0}, step=3)
    assert again.summary.max("loss") == 12.0  # what remains below 3, and the new point
    again.log({"loss": 0.5}, step=4)
    again.finish()
    api = assay.Api()
    h = api.history(run.id, "loss").sort("step")
    assert list(zip(h["step"], h["value"])) == [(0, 10.0), (1, 11.0), (2, 12.0), (3, 1.0),
                                                (4, 0.5)]
    assert api.run(run.id).summary["loss"] == {"last": 0.5, "step": 4, "min": 0.5, "max": 12.0}
    assert api.verify(run.id)[1] == []
    top = _init(project="p", resume=run.id, resume_from_step="auto")
    top.log({"loss": 7.0})  # implicit steps start again at 0
    top.finish()
    h = api.history(run.id, "loss")
    assert list(zip(h["step"], h["value"])) == [(0, 7.0)]


def test_auto_without_a_first_log_supersedes_nothing_and_without_resume_is_ignored(data_dir):
    run = _died()
    quiet = _init(project="p", resume=run.id, resume_from_step="auto")
    quiet.finish()
    assert assay.Api().history(run.id, "loss").height == 6
    fresh = _init(project="p", resume_from_step="auto")  # a command trial's first attempt
    fresh.log({"loss": 1.0})
    fresh.finish()
    assert assay.Api().history(fresh.id, "loss")["step"].to_list() == [0]


def test_auto_threads_logging_at_once_get_one_rewind_and_lose_no_point(data_dir, monkeypatch):
    """Two threads at the first log() (a trainer and an eval thread): one rewind record,
    queued ahead of every point of the attach, so none of them is superseded by it."""
    import threading
    import time

    import assay.sdk.run as run_mod
    from assay.store.wal import read_wal, segment_path

    real = run_mod.rewound_summary

    def slow(*a, **kw):  # the window in which the other thread logs too
        time.sleep(0.3)
        return real(*a, **kw)

    monkeypatch.setattr(run_mod, "rewound_summary", slow)
    run = _died()
    again = _init(project="p", resume=run.id, resume_from_step="auto")
    go = threading.Barrier(2)

    def logger(key):
        go.wait()
        again.log({key: 1.0}, step=3)
        again.log({key: 2.0}, step=4)

    threads = [threading.Thread(target=logger, args=(k,)) for k in ("loss", "val")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    again.flush()
    kinds = [r.data["k"] for r in read_wal(segment_path(data_dir / "wal", run.id, 1))]
    again.finish()
    assert kinds.count("rewind") == 1
    assert kinds.index("rewind") < kinds.index("metrics")
    h = assay.Api().history(run.id)
    got = set(zip(h["key"], h["step"], h["value"]))
    assert {("loss", 3, 1.0), ("loss", 4, 2.0), ("val", 3, 1.0), ("val", 4, 2.0)} <= got
    assert ("loss", 5, 15.0) not in got  # the dead attempt's tail from step 3 is gone


def test_auto_survives_the_writer_being_full_before_the_first_log(data_dir, monkeypatch):
    """A memory-limit swap of the append before the first log() must not drop the rewind."""
    run = _died()
    again = _init(project="p", resume=run.id, resume_from_step="auto")
    again._on_writer_full(True)  # what the writer thread does over a limit...
    again._on_writer_full(False)  # ...and once under half again
    again.log({"loss": 1.0}, step=0)
    again.finish()
    h = assay.Api().history(run.id, "loss")
    assert list(zip(h["step"], h["value"])) == [(0, 1.0)]
