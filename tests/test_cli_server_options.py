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
