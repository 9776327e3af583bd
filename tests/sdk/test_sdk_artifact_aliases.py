"""Moving and removing artifact aliases, and downloading a version, from Python and the CLI
(real LanceDB files in a fresh data directory)."""

from __future__ import annotations

import stat

import assay
import pytest
from assay.cli import app
from assay.errors import NotFoundError, UserInputError
from typer.testing import CliRunner

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture
def model(data_dir, tmp_path):
    """model:v0 ("epoch-1"), model:v1 ("epoch-2", latest), logged by a local run."""
    f = tmp_path / "model.pt"
    with assay.init(project="p", dir=data_dir, system_metrics_interval=None,
                    capture=False) as run:
        f.write_bytes(b"epoch-1")
        run.log_artifact(f, name="model", type="model")
        f.write_bytes(b"epoch-2")
        run.log_artifact(f, name="model", type="model")
    return assay.Api(data_dir)


def _aliases(api):
    return {r["version"]: r["aliases"] or [] for r in api.artifacts(name="model").iter_rows(
        named=True)}


def _alias_moves(api):
    return [(e["actor"], e["reason"], e["details"]) for e in api.audit_log()
            if e["action"] == "artifact.alias" and e["details"]["alias"] == "prod"]


def test_set_alias_promotes_an_older_version_and_moves_it_later(model):
    art = model.set_alias("model:v0", "prod", reason="best eval")
    assert (art.version, art.aliases) == (0, ("prod",))
    assert model.artifact("model:prod").version == 0
    assert _aliases(model) == {0: ["prod"], 1: ["latest"]}
    art = model.set_alias("model:v1", "prod", reason="v1 wins now")
    assert art.aliases == ("latest", "prod") and _aliases(model) == {0: [], 1: ["latest", "prod"]}
    # ... also through another alias, and no new version is ever made
    model.set_alias("model:latest", "best")
    assert model.artifact("model:best").version == 1
    assert model.artifacts(name="model").height == 2
    assert [(r, d["from"], d["to"]) for _, r, d in _alias_moves(model)] == [
        ("best eval", None, 0), ("v1 wins now", 0, 1)]
    assert all(a.startswith("user") for a, _, _ in _alias_moves(model))


def test_remove_alias_keeps_the_version_and_is_audited(model):
    model.set_alias("model:v0", "prod")
    art = model.remove_alias("model", "prod", reason="rolled back")
    assert (art.version, art.aliases) == (0, ())
    with pytest.raises(NotFoundError, match="no artifact version model:prod"):
        model.artifact("model:prod")
    assert model.artifact("model:v0").digest == art.digest  # the version stays
    assert _alias_moves(model)[-1][1:] == ("rolled back", {"alias": "prod", "from": 0,
                                                            "to": None})
    # with the alias gone, the delete refusal no longer stands in the way
    model.delete_artifact("model:v0", reason="superseded")


def test_latest_cannot_be_set_or_removed_by_hand(model):
    for call in (lambda: model.set_alias("model:v0", "latest"),
                 lambda: model.remove_alias("model", "latest")):
        with pytest.raises(UserInputError, match="managed by assay") as e:
            call()
        assert "newest" in e.value.hint and "prod" in e.value.hint
    assert _aliases(model) == {0: [], 1: ["latest"]}


@pytest.mark.parametrize("call, err, text", [
    (lambda api: api.set_alias("model:v7", "prod"), NotFoundError, "versions v0..v1"),
    (lambda api: api.set_alias("nope:v0", "prod"), NotFoundError, "no artifact named"),
    (lambda api: api.set_alias("model", "prod"), UserInputError, "model:v3"),
    (lambda api: api.set_alias("model:v0", "v1"), UserInputError, "invalid alias"),
    (lambda api: api.set_alias("model:v0", "prod", reason="x" * 2001), UserInputError, "2000"),
    (lambda api: api.remove_alias("model", "prod"), NotFoundError, "latest (v1)"),
    (lambda api: api.remove_alias("model:v0", "prod"), UserInputError, "remove_alias('model'"),
    (lambda api: api.remove_alias("other:v0", "prod"), UserInputError, "remove_alias('other'"),
    (lambda api: api.remove_alias("model", "v0"), UserInputError, "is a version number"),
    (lambda api: api.remove_alias("nope", "prod"), NotFoundError, "assay artifacts"),
])
def test_bad_alias_calls_say_what_exists_and_change_nothing(model, call, err, text):
    with pytest.raises(err) as e:
        call(model)
    assert text in e.value.message + " " + e.value.hint
    assert _aliases(model) == {0: [], 1: ["latest"]}


def test_cli_alias_unalias_and_get(model, tmp_path):
    d = ["--dir", str(model.dir)]
    out = runner.invoke(app, ["artifact", "alias", "model:v0", "prod", "-r", "best eval", *d])
    assert out.exit_code == 0, out.output
    assert "model:prod -> v0" in out.output
    out = runner.invoke(app, ["artifact", "alias", "model:v1", "prod", *d])
    assert out.exit_code == 0 and "model:prod -> v1 (was v0)" in out.output
    assert _alias_moves(model)[0][0].startswith("cli:")
    out = runner.invoke(app, ["artifact", "get", "model:prod", "--out", str(tmp_path / "dl"),
                              *d])
    assert out.exit_code == 0, out.output
    path = out.stdout.strip().splitlines()[-1]
    assert path == str(tmp_path / "dl" / "model.pt") and "(1 file(s), 7 B, verified)" in out.output
    assert (tmp_path / "dl" / "model.pt").read_bytes() == b"epoch-2"
    assert not (tmp_path / "dl" / "model.pt").stat().st_mode & stat.S_IWUSR  # read-only
    out = runner.invoke(app, ["artifact", "get", "model:v0", *d])  # assay's cache folder
    assert out.exit_code == 0, out.output
    assert out.stdout.strip().endswith("artifacts/model/v0/model.pt")
    out = runner.invoke(app, ["artifact", "unalias", "model", "prod", "-r", "rollback", *d])
    assert out.exit_code == 0 and "removed model:prod (it named v1)" in out.output
    assert _aliases(model) == {0: [], 1: ["latest"]}
    out = runner.invoke(app, ["artifact", "alias", "--help"])
    assert out.exit_code == 0 and "audit" in out.output and "latest" in out.output


@pytest.mark.parametrize("args, text", [
    (["alias", "model:v0", "latest"], "managed by assay"),
    (["alias", "model:v9", "prod"], "versions v0..v1"),
    (["unalias", "model", "prod"], "latest (v1)"),
    (["unalias", "model", "latest"], "managed by assay"),
    (["get", "model:prod"], "no artifact version model:prod"),
    (["get", "nope"], "no artifact named"),
])
def test_cli_alias_errors_exit_2_with_a_hint(model, args, text):
    out = runner.invoke(app, ["artifact", *args, "--dir", str(model.dir)])
    assert out.exit_code == 2, out.output
    assert text in out.output and "hint:" in out.output
    assert _aliases(model) == {0: [], 1: ["latest"]}


def test_cli_get_refuses_a_folder_holding_other_files(model, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    out = runner.invoke(app, ["artifact", "get", "model:v0", "--out", str(busy),
                              "--dir", str(model.dir)])
    assert out.exit_code == 2 and "already exists" in out.output
    assert (busy / "mine.txt").read_text() == "keep me"


def test_the_artifact_handle_moves_and_removes_its_own_aliases(data_dir, tmp_path):
    """W&B users promote from the handle they hold; it had no alias methods."""
    from assay.errors import ConflictError

    f = tmp_path / "w.bin"
    f.write_bytes(b"one")
    with assay.init(project="p", system_metrics_interval=None, capture=False) as run:
        v0 = run.log_artifact(f, name="m", type="model")
        f.write_bytes(b"two")
        v1 = run.log_artifact(f, name="m", type="model")
    assert v0.set_alias("prod", reason="eval passed") is v0
    assert set(v0.aliases) == {"prod"}
    assert assay.Api().artifact("m:prod").version == 0
    v1.set_alias("prod")  # moves it
    with pytest.raises(ConflictError, match="moved to v1"):
        v0.remove_alias("prod")  # it names v1 now: not v0's to remove
    assert set(v1.remove_alias("prod").aliases) == {"latest"}
    with pytest.raises(UserInputError, match="managed by assay"):
        v1.set_alias("latest")
    audit = [e for e in assay.Api().audit_log() if e["action"] == "artifact.alias"]
    assert any(e["reason"] == "eval passed" for e in audit)
