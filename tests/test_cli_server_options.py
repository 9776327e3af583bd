"""CLI commands that ask an ``assay server`` (``--server/--token``) against a real uvicorn
server on 127.0.0.1 (``served_dir``), and what ``assay verify`` prints when many records
fail alike."""

from __future__ import annotations

from pathlib import Path

import assay
import pytest
from assay.cli import app
from assay.sdk import run as run_mod
from typer.testing import CliRunner

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture(autouse=True)
def _inprocess_ingest(monkeypatch):
    monkeypatch.setattr(run_mod, "INGEST_MODE", "inprocess")  # sealed at finish(), no daemon


def _flat(text: str) -> str:
    return " ".join(text.split())  # the console wraps long lines


def _runs(d: Path, n: int, tmp_path: Path) -> list[str]:
    """``n`` finished runs of project p in ``d``: the first logs artifact data:v0 (alias
    prod), the second uses it and logs model:v0."""
    ids = []
    (tmp_path / "data.csv").write_text("x,y\n1,2\n")
    (tmp_path / "model.pt").write_bytes(b"weights")
    for i in range(n):
        with assay.init(project="p", dir=d, config={"i": i}, system_metrics_interval=None,
                        capture=False) as run:
            run.log({"loss": 1.0 / (i + 1)})
            if i == 0:
                run.log_artifact(tmp_path / "data.csv", name="data", type="dataset",
                                 aliases=["prod"])
            elif i == 1:
                run.use_artifact("data:prod")
                run.log_artifact(tmp_path / "model.pt", name="model", type="model")
        ids.append(run.id)
    return ids


# ------------------------------------------------------------------ artifacts and lineage

def test_artifacts_and_lineage_ask_a_server(served_dir, data_dir, tmp_path):
    ids = _runs(data_dir, 2, tmp_path)
    url, viewer = served_dir["server"].url, served_dir["viewer"]
    srv = ["--server", url, "--token", viewer]
    out = runner.invoke(app, ["artifacts", *srv])
    assert out.exit_code == 0, out.output
    text = _flat(out.output)
    assert "data" in text and "model" in text and "prod" in text and ids[0] in text
    out = runner.invoke(app, ["artifacts", "--name", "model", *srv])
    assert out.exit_code == 0 and "model" in out.output and "prod" not in out.output
    out = runner.invoke(app, ["lineage", "model:v0", *srv])
    assert out.exit_code == 0, out.output
    text = _flat(out.output)
    assert "upstream of model:v0" in text and f"run:{ids[1]}" in text
    assert "artifact:data:v0" in text and f"run:{ids[0]}" in text
    out = runner.invoke(app, ["lineage", "data:prod", "--down", *srv])
    assert out.exit_code == 0 and "artifact:model:v0" in out.output
    # The server's refusals and this CLI's own rules, as for `runs --server`.
    out = runner.invoke(app, ["artifacts", "--server", url, "--token", "asy_not_a_token"])
    assert out.exit_code == 2 and "error:" in out.output
    out = runner.invoke(app, ["lineage", "nosuch:v0", *srv])
    assert out.exit_code == 2 and "nosuch" in out.output
    out = runner.invoke(app, ["artifacts", "--dir", str(data_dir), *srv])
    assert out.exit_code == 2 and "pass --dir or --server, not both" in _flat(out.output)
    out = runner.invoke(app, ["lineage", "model:v0", "--token", viewer])
    assert out.exit_code == 2 and "--token is for --server" in _flat(out.output)


def test_the_artifact_commands_ask_a_server(served_dir, data_dir, tmp_path, monkeypatch):
    """`assay artifact list|get|alias|unalias|delete` took --dir only: an engineer with a
    server had to use Python for what `assay artifacts --server` showed."""
    from assay.api.auth import TokenStore

    _runs(data_dir, 2, tmp_path)
    sup = TokenStore(data_dir).create("ops", "supervisor")[0]
    monkeypatch.setenv("ASSAY_DIR", str(tmp_path / "laptop"))  # the download cache
    srv = ["--server", served_dir["server"].url, "--token", sup]
    out = runner.invoke(app, ["artifact", "list", *srv])
    assert out.exit_code == 0, out.output
    assert "data:v0" in out.output and "model:v0" in out.output
    got = tmp_path / "got"
    out = runner.invoke(app, ["artifact", "get", "data:prod", "--out", str(got), *srv])
    assert out.exit_code == 0, out.output
    assert (got / "data.csv").read_text() == "x,y\n1,2\n" and "verified" in out.output
    out = runner.invoke(app, ["artifact", "alias", "model:v0", "staging", "-r", "eval ok", *srv])
    assert out.exit_code == 0 and "model:staging -> v0" in out.output, out.output
    out = runner.invoke(app, ["artifact", "unalias", "data", "prod", "-r", "retired", *srv])
    assert out.exit_code == 0 and "removed data:prod" in out.output, out.output
    out = runner.invoke(app, ["artifact", "delete", "data:v0", "--force", "-r", "leak", *srv])
    assert out.exit_code == 0 and "deleted data:v0" in out.output, out.output
    out = runner.invoke(app, ["artifact", "list", "--deleted", *srv])
    assert "DELETED" in out.output and "by ops: leak" in out.output, out.output
    audit = {e["action"]: e for e in assay.Api(data_dir).audit_log()}
    assert audit["artifact.delete"]["actor"] == "ops"  # the token's name, on the server
    out = runner.invoke(app, ["artifact", "list", "--server", served_dir["server"].url,
                              "--dir", str(data_dir)])
    assert out.exit_code == 2 and "not both" in _flat(out.output)
    out = runner.invoke(app, ["artifact", "get", "data:v0", "--token", sup])
    assert out.exit_code == 2 and "--token is for --server" in _flat(out.output)


# ------------------------------------------------------- verify: many records, one reason

def _wrong_key(tmp_path: Path) -> Path:
    from assay.store.signing import KeyPair

    pem = tmp_path / "other.pem"
    pem.write_text(KeyPair.generate().export_public_key())
    return pem


def _fails(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("FAIL")]


def _tamper_blob(d: Path, content: bytes) -> None:
    """Change the stored bytes of the blob holding ``content`` (an artifact file)."""
    import os

    hits = [p for p in (d / "blobs").rglob("*") if p.is_file() and p.read_bytes() == content]
    assert len(hits) == 1, hits
    os.chmod(hits[0], 0o644)
    hits[0].write_bytes(b"changed\n")


def test_a_wrong_pinned_key_prints_the_key_problem_and_a_count(data_dir, tmp_path):
    _runs(data_dir, 6, tmp_path)
    pem = _wrong_key(tmp_path)
    _, problems = assay.Api(data_dir).verify(public_key=pem)
    assert len(problems) > 12  # the key, 6 run records and the audit trail's entries
    out = runner.invoke(app, ["verify", "--public-key", str(pem), "--dir", str(data_dir)],
                        terminal_width=2000)
    assert out.exit_code == 1
    fails = _fails(out.output)
    assert len(fails) == 2, out.output
    assert "is not the pinned key" in fails[0]
    assert fails[1].startswith(f"FAIL {len(problems) - 1} record(s) do not verify against "
                               "the pinned key (first: run:p #0 (")
    assert "signature does not verify" in fails[1]
    assert f"{len(problems)} problem(s) in 6 record(s) checked" in out.output


def test_repeated_reasons_are_cut_to_five_and_other_failures_stay(data_dir, tmp_path):
    _runs(data_dir, 6, tmp_path)
    _tamper_blob(data_dir, b"x,y\n1,2\n")  # data:v0, produced by run 0 and used by run 1
    pem = _wrong_key(tmp_path)
    _, problems = assay.Api(data_dir).verify(public_key=pem)
    bad_sigs = [p for p in problems if "signature does not verify" in p.reason]
    out = runner.invoke(app, ["verify", "--public-key", str(pem), "--dir", str(data_dir)],
                        terminal_width=2000)
    assert out.exit_code == 1
    fails = _fails(out.output)
    assert sum("signature does not verify" in f for f in fails) == 5, out.output
    assert (f"... and {len(bad_sigs) - 5} more with the same reason (signature does not "
            "verify (sealed by key") in out.output
    # The records past the fifth are still named (helper-66), by chain and subject.
    for p in bad_sigs[5:]:
        assert f"{p.chain} {p.subject_id}" in out.output
    # Not collapsed: the key problem and both records naming the changed artifact bytes.
    assert sum("is not the pinned key" in f for f in fails) == 1
    assert sum("artifact data:v0" in f for f in fails) == 2, out.output
    assert len(fails) == 8
    assert f"{len(problems)} problem(s) in 6 record(s) checked" in out.output


# ------------------------------------------------------------------------ verify --server

def test_verify_asks_the_server_and_says_so(served_dir, data_dir, tmp_path):
    ids = _runs(data_dir, 2, tmp_path)
    url, viewer = served_dir["server"].url, served_dir["viewer"]
    srv = ["--server", url, "--token", viewer]
    out = runner.invoke(app, ["verify", *srv], terminal_width=2000)
    assert out.exit_code == 0, out.output
    assert "OK: 2 run record(s) and the audit log verify" in out.stdout
    assert f"checked by the server {url}" in out.stdout
    assert "only as trustworthy as that server" in out.stdout
    out = runner.invoke(app, ["verify", ids[1], *srv], terminal_width=2000)
    assert out.exit_code == 0 and "OK: 1 run record(s) verify" in out.stdout, out.output
    # Changed bytes right after a clean answer: the server recomputes (fresh), it does not
    # answer from the result it keeps for a minute while its tables are unchanged.
    _tamper_blob(data_dir, b"x,y\n1,2\n")
    out = runner.invoke(app, ["verify", *srv], terminal_width=2000)
    assert out.exit_code == 1, out.output
    fails = _fails(out.output)
    assert len(fails) == 2 and all("artifact data:v0" in f for f in fails), out.output
    assert any(f.startswith(f"FAIL run:p #0 ({ids[0]}): artifact data:v0 (produced)")
               for f in fails), fails
    assert "2 problem(s) in 2 record(s) checked" in out.output
    assert f"checked by the server {url}" in out.output and "OK" not in out.output
    out = runner.invoke(app, ["verify", ids[0], *srv], terminal_width=2000)
    assert out.exit_code == 1 and len(_fails(out.output)) == 1
    # A local check of the same directory finds the same.
    local = runner.invoke(app, ["verify", "--dir", str(data_dir)], terminal_width=2000)
    assert local.exit_code == 1 and _fails(local.output) == fails


def test_verify_on_a_server_refuses_local_anchors_and_unknown_runs(served_dir, data_dir,
                                                                   tmp_path):
    url, viewer = served_dir["server"].url, served_dir["viewer"]
    srv = ["--server", url, "--token", viewer]
    pem, cp = _wrong_key(tmp_path), tmp_path / "cp.json"
    cp.write_text("{}")
    for anchor in (["--public-key", str(pem)], ["--checkpoint", str(cp)]):
        out = runner.invoke(app, ["verify", *anchor, *srv], terminal_width=2000)
        assert out.exit_code == 2, out.output
        assert ("--public-key and --checkpoint anchor a check made here" in out.output
                and "where the data directory is" in out.output), out.output
    out = runner.invoke(app, ["verify", "nosuchrun", *srv], terminal_width=2000)
    assert out.exit_code == 2 and "nosuchrun" in out.output, out.output
    out = runner.invoke(app, ["verify", "--server", url, "--token", "asy_not_a_token"])
    assert out.exit_code == 2 and "error:" in out.output
    out = runner.invoke(app, ["verify", "--dir", str(data_dir), *srv])
    assert out.exit_code == 2 and "pass --dir or --server, not both" in _flat(out.output)
    out = runner.invoke(app, ["verify", "--token", viewer, "--dir", str(data_dir)])
    assert out.exit_code == 2 and "--token is for --server" in _flat(out.output)


# ------------------------------------------------------------------------ report --server

@pytest.fixture
def server_agent(data_dir):
    """An agent kept in the served directory (as one whose trials log to the server is)."""
    from assay.store.control import AgentRow, LanceControlStore
    from assay.store.ingest import IngestLock
    from assay.store.lance import LanceStore

    ctl = LanceControlStore(LanceStore(data_dir), IngestLock(data_dir))
    spec = {"name": "toy", "project": "p", "metric": "score", "mode": "max",
            "owner": "researcher", "budget": {"trials": 2}}
    state = {"trials": {"t1": {"config": {"x": 0.1}, "status": "completed", "final": 0.9,
                               "origin": "searcher", "reason": "", "curve": [[0, 0.5], [1, 0.9]]},
                        "t2": {"config": {"x": 0.7}, "status": "completed", "final": 0.4,
                               "origin": "searcher", "reason": "", "curve": [[0, 0.4]]}},
             "best": "t1", "concurrency": 1}
    ctl.save_agent(AgentRow("agtoy00001", "toy", "p", spec, state=state, hlc="1"))
    return "agtoy00001"


def test_report_from_a_server_is_stored_there(served_dir, server_agent, tmp_path):
    url = served_dir["server"].url
    local = tmp_path / "local"
    viewer = assay.Api(server=url, token=served_dir["viewer"])
    out = runner.invoke(app, ["report", "toy", "--dir", str(local), "--server", url,
                              "--token", served_dir["researcher"],
                              "--out", str(tmp_path / "out" / "r.html")], terminal_width=2000)
    assert out.exit_code == 0, out.output
    assert f"report: {tmp_path / 'out' / 'r.html'}" in out.stdout
    assert f"stored as artifact report-toy:v0 on {url}" in out.stdout
    assert "warning" not in out.output
    html = local / "reports" / "toy-agtoy00001.html"
    assert html.exists() and (tmp_path / "out" / "r.html").exists()
    art = viewer.artifact("report-toy:latest")
    assert art.version == 0 and art.metadata["agent_id"] == server_agent
    assert sorted(f.path for f in art.files()) == ["toy-agtoy00001.html", "toy-agtoy00001.md"]
    run = viewer.run(art.created_by)
    assert run.name == f"report-{server_agent}" and run.project == "p"
    assert assay.Api(local).artifacts().height == 0  # nothing stored in the local directory
    # A viewer's token reads the agent but cannot store: the files come, with a warning.
    html.unlink()
    out = runner.invoke(app, ["report", server_agent, "--dir", str(local), "--server", url,
                              "--token", served_dir["viewer"]], terminal_width=2000)
    assert out.exit_code == 0, out.output
    assert f"report: {html}" in out.stdout and html.exists()
    text = _flat(out.output)
    assert (f"warning: the report was written but not stored as an artifact on {url}: "
            "the token 'viewer' is a viewer's") in text, text
    assert "stored as artifact" not in out.stdout
    assert viewer.artifacts(name="report-toy").height == 1  # still v0 alone
    out = runner.invoke(app, ["report", "nosuch", "--dir", str(local), "--server", url,
                              "--token", served_dir["viewer"]], terminal_width=2000)
    assert out.exit_code == 2 and f"no agent or objective named 'nosuch' on {url}" in out.output


def test_report_in_a_data_directory_says_where_it_is_stored(data_dir, server_agent,
                                                            monkeypatch):
    monkeypatch.delenv("ASSAY_SERVER", raising=False)
    out = runner.invoke(app, ["report", "toy", "--dir", str(data_dir)], terminal_width=2000)
    assert out.exit_code == 0, out.output
    assert f"stored as artifact report-toy:v0 in {data_dir}" in out.stdout
    assert assay.Api(data_dir).artifact("report-toy:latest").metadata["agent_id"] == server_agent


# ------------------------------------------------- reasons of alias removal and deletion

def test_unalias_and_delete_record_their_reason_in_the_audit_trail(data_dir, tmp_path):
    """Every way to remove an alias or delete a version takes a reason (CLI -r/--reason,
    Api reason=) and the audit trail keeps it."""
    _runs(data_dir, 2, tmp_path)
    d = ["--dir", str(data_dir)]
    out = runner.invoke(app, ["artifact", "alias", "model:v0", "prod", "-r", "best eval", *d])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["artifact", "unalias", "model", "prod", "--reason", "rolled back",
                              *d])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["artifact", "delete", "data:v0", "-r", "leaked rows", "--force",
                              *d])
    assert out.exit_code == 0, out.output
    api = assay.Api(data_dir)
    api.set_alias("model:v0", "staging", reason="to test")
    api.remove_alias("model", "staging", reason="tested")
    with pytest.raises(assay.errors.UserInputError, match="at most 2000 characters"):
        api.delete_artifact("model:v0", reason="x" * 2001, delete_aliases=True)
    given = {"best eval", "rolled back", "leaked rows", "to test", "tested"}
    trail = [(e["action"], e["target"], e["reason"]) for e in api.audit_log()
             if e["reason"] in given]
    assert trail == [("artifact.alias", "artifact:model", "best eval"),
                     ("artifact.alias", "artifact:model", "rolled back"),
                     ("artifact.delete", "artifact:data", "leaked rows"),
                     ("artifact.alias", "artifact:model", "to test"),
                     ("artifact.alias", "artifact:model", "tested")], trail
