"""Commands that read or maintain a data directory refuse a path that is not one (a typo in
--dir or $ASSAY_DIR) and create nothing there: no empty store, no new key pair."""

from __future__ import annotations

import assay
import pytest
from assay.cli import app
from typer.testing import CliRunner

runner = CliRunner()

#: Every read or maintenance command, with the arguments it needs besides --dir.
READERS = [
    ["runs"], ["show", "abc123"], ["sync"], ["compact"], ["artifacts"],
    ["lineage", "model:v0"], ["verify"], ["checkpoint"], ["export-key"], ["report", "obj"],
    ["agents"], ["decisions", "ag1"], ["pause", "ag1"], ["resume", "ag1"], ["stop", "ag1"],
    ["stop-run", "abc123"], ["artifact", "list"], ["artifact", "delete", "model:v0"],
    ["artifact", "gc"], ["artifact", "get", "model"], ["artifact", "alias", "model:v0", "prod"],
    ["artifact", "unalias", "model", "prod"], ["token", "list"], ["token", "revoke", "tok1"],
]
IDS = [" ".join(c[:2]) for c in READERS]


def _refused(out, path, why):
    assert out.exit_code == 2, out.output
    text = " ".join(out.output.split())  # rich wraps long lines
    assert f"no assay data directory at {path}" in text and why in text, text
    assert "hint: check the path; nothing was created there" in text, text


@pytest.mark.parametrize("cmd", READERS, ids=IDS)
def test_a_mistyped_dir_is_refused_and_not_created(tmp_path, cmd):
    typo = tmp_path / "assay-dta"
    out = runner.invoke(app, [*cmd, "--dir", str(typo)])
    _refused(out, typo, "it does not exist")
    assert not typo.exists()


@pytest.mark.parametrize("cmd", READERS, ids=IDS)
def test_a_folder_without_assay_data_is_refused_and_left_as_it_was(tmp_path, cmd):
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    out = runner.invoke(app, [*cmd, "--dir", str(home)])
    _refused(out, home, "the folder holds no assay data")
    assert [p.name for p in home.iterdir()] == ["notes.txt"]  # no key, no lance/, no wal/


def test_a_wrong_assay_dir_variable_or_a_missing_default_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSAY_DIR", str(tmp_path / "typo"))
    out = runner.invoke(app, ["export-key"])
    _refused(out, tmp_path / "typo", "(from $ASSAY_DIR)")
    monkeypatch.delenv("ASSAY_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    out = runner.invoke(app, ["artifact", "list"])
    _refused(out, tmp_path / ".assay", "(the default; set --dir or $ASSAY_DIR")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    f = tmp_path / "file"
    f.write_text("x")
    _refused(runner.invoke(app, ["verify", "--dir", str(f)]), f, "it is a file")


@pytest.mark.integration
def test_commands_still_work_on_a_real_data_directory(data_dir):
    with assay.init(project="p", dir=data_dir, system_metrics_interval=None,
                    capture=False) as run:
        run.log({"x": 1.0})
    d = ["--dir", str(data_dir)]
    key = runner.invoke(app, ["export-key", *d])
    assert key.exit_code == 0 and "BEGIN PUBLIC KEY" in key.stdout
    assert runner.invoke(app, ["export-key", *d]).stdout == key.stdout  # the same key
    for cmd in (["runs"], ["artifact", "list"], ["artifact", "gc", "--dry-run"], ["sync"],
                ["checkpoint"], ["verify"], ["agents"]):
        out = runner.invoke(app, [*cmd, *d])
        assert out.exit_code == 0, (cmd, out.output)


def test_a_remote_runs_local_directory_is_one(tmp_path):
    """``assay.init(server=...)`` keeps only an outbox locally; `assay sync` ships it."""
    local = tmp_path / "local"
    (local / "outbox").mkdir(parents=True)
    out = runner.invoke(app, ["sync", "--dir", str(local)])
    assert out.exit_code == 0 and "synced 0 WAL segment(s)" in out.output, out.output


def test_export_key_of_a_directory_without_a_key_makes_none(tmp_path):
    """A remote run's local directory (only an outbox) has no signing key: export-key made
    one, which signs nothing and looks like the key to pin."""
    local = tmp_path / "local"
    (local / "outbox").mkdir(parents=True)
    out = runner.invoke(app, ["export-key", "--dir", str(local)])
    assert out.exit_code == 2 and "no signing key yet" in out.output, out.output
    assert not (local / "signing_key.pem").exists()


def test_setup_commands_may_start_a_new_directory(tmp_path):
    """`assay token create` comes before `assay server` on a fresh machine."""
    from assay.api.cli import token_app

    fresh = tmp_path / "fresh"
    out = CliRunner().invoke(token_app, ["create", "alice", "--role", "admin", "--dir",
                                         str(fresh)])
    assert out.exit_code == 0, out.output
    assert (fresh / "auth" / "tokens.json").exists()
    listed = runner.invoke(app, ["token", "list", "--dir", str(fresh)])  # now it is one
    assert listed.exit_code == 0 and "alice" in listed.output


def test_a_url_is_refused_as_a_data_directory_and_file_urls_are_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = runner.invoke(app, ["export-key", "--dir", "s3://bucket/assay"])
    assert out.exit_code == 2 and "must be a local folder" in " ".join(out.output.split())
    assert list(tmp_path.iterdir()) == []  # no ./s3:/bucket/assay
    out = runner.invoke(app, ["runs", "--dir", f"file://{tmp_path}/typo"])
    _refused(out, tmp_path / "typo", "it does not exist")
