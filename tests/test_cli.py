from __future__ import annotations

import json

import assay
from assay.cli import app
from assay.store.wal import WalWriter, segment_path
from typer.testing import CliRunner

runner = CliRunner()


def _run(data_dir, **kw):
    r = assay.init(project="cli", system_metrics_interval=None, capture=False, **kw)
    for i in range(3):
        r.log({"loss": 1.0 / (i + 1)})
    r.finish()
    return r


def test_runs_and_show_print_the_run(data_dir):
    r = _run(data_dir, config={"lr": 0.1})
    out = runner.invoke(app, ["runs", "--dir", str(data_dir)])
    assert out.exit_code == 0 and r.id in out.stdout and "completed" in out.stdout
    out = runner.invoke(app, ["show", r.id, "--dir", str(data_dir), "--json"])
    assert out.exit_code == 0
    rec = json.loads(out.stdout)
    assert rec["config"] == {"lr": 0.1} and abs(rec["summary"]["loss"] - 1 / 3) < 1e-12


def test_show_unknown_run_exits_2_with_hint(data_dir):
    out = runner.invoke(app, ["show", "nope", "--dir", str(data_dir)])
    assert out.exit_code == 2
    assert "no run 'nope'" in out.output and "hint" in out.output


def test_sync_ingests_an_orphaned_wal_and_compact_keeps_data(data_dir):
    w = WalWriter(segment_path(data_dir / "wal", "orphan01", 0))
    w.append([{"k": "run", "seq": 1, "time": 1.0, "run_id": "orphan01", "project": "cli",
               "name": "o", "attach": 0},
              {"k": "metrics", "seq": 2, "chunks": [{"keys": ["x"], "step": [0, 1],
                                                      "time": [1.0, 2.0], "vals": [[1.0, 2.0]]}]}])
    w.close()
    out = runner.invoke(app, ["sync", "--dir", str(data_dir)])
    assert out.exit_code == 0 and "synced 1 WAL segment(s): 2 records, 2 points" in out.stdout
    assert assay.Api(data_dir).run("orphan01").status == "crashed"
    out = runner.invoke(app, ["compact", "--dir", str(data_dir)])
    assert out.exit_code == 0 and "metrics: 1 rows" in out.stdout
    assert assay.Api(data_dir).history("orphan01")["value"].to_list() == [1.0, 2.0]
