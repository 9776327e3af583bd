"""Tags and notes changed after a run started (helper-64: only init(resume=...) could, though
the README says people edit them after a run ends): Api().update_run on a data directory and
through a real server (PATCH /api/runs/{id}), audited, roles applied."""

from __future__ import annotations

import assay
import pytest
from assay import Api
from assay.errors import NotFoundError, PermissionDeniedError, UserInputError

pytestmark = pytest.mark.integration


def _run(d, **kw):
    run = assay.init(project="p", dir=d, capture=False, system_metrics_interval=None, **kw)
    run.log({"loss": 1.0})
    run.finish()
    return run.id


def test_tags_and_notes_change_after_a_run_ends_and_the_seal_still_verifies(data_dir):
    rid = _run(data_dir, tags=["baseline"], notes="first try")
    api = Api(data_dir)
    rec = api.update_run(rid, add_tags=["best", "fp16"], notes="the one to beat",
                         reason="review")
    assert rec.tags == ("baseline", "best", "fp16") and rec.notes == "the one to beat"
    rec = api.update_run(rid, remove_tags=["fp16"])
    assert api.run(rid).tags == ("baseline", "best") and api.run(rid).notes == "the one to beat"
    assert api.update_run(rid, tags=["final"]).tags == ("final",)
    assert api.runs(filters={"run_id": rid})["tags"].to_list() == [["final"]]
    [first, *_] = [e for e in api.audit_log(target=f"run:{rid}") if e["action"] == "run.labels"]
    assert first["reason"] == "review"
    assert first["details"]["tags_before"] == ["baseline"]
    checked, problems = api.verify(rid)
    assert checked and problems == []  # labels are not sealed
    for bad in ({"tags": ["x" * 65]}, {"add_tags": [""]}, {"notes": 3}, {"tags": "a b"[5:]}):
        with pytest.raises(UserInputError):
            api.update_run(rid, **bad)
    assert api.run(rid).tags == ("final",), "a refused change changes nothing"
    with pytest.raises(NotFoundError):
        api.update_run("nosuchrun1", tags=["x"])


def test_a_server_lets_the_runs_owner_and_supervisors_change_labels(server, tokens, tmp_path,
                                                                     data_dir, helpers):
    kw = {"server": server.url, "token": tokens["researcher"], "dir": tmp_path / "laptop"}
    run = assay.init(project="p", capture=False, system_metrics_interval=None, **kw)
    run.log({"loss": 1.0})
    run.flush()
    helpers.wait_for(lambda: Api(data_dir).runs(project="p").height == 1)
    with Api(server=server.url, token=tokens["researcher"]) as mine:
        assert mine.update_run(run.id, add_tags=["live"], reason="watching").tags == ("live",)
    run.log({"loss": 0.5})  # the run goes on: the server's ingest keeps the new tags
    run.finish()
    assert Api(data_dir).run(run.id).tags == ("live",)
    with Api(server=server.url, token=tokens["researcher2"]) as other, \
            pytest.raises(PermissionDeniedError, match="belongs to researcher") as e:
        other.update_run(run.id, tags=[])
    assert "ask a supervisor" in e.value.hint
    with Api(server=server.url, token=tokens["supervisor"]) as sup:
        assert sup.update_run(run.id, notes="promoted", remove_tags=["live"]).notes == "promoted"
        said = [e for e in sup.audit_log(target=f"run:{run.id}") if e["action"] == "run.labels"]
        assert [e["actor"] for e in said] == ["researcher", "supervisor"]
    assert Api(data_dir).run(run.id).tags == ()
    with Api(server=server.url, token=tokens["viewer"]) as viewer, \
            pytest.raises(PermissionDeniedError):
        viewer.update_run(run.id, tags=["x"])
