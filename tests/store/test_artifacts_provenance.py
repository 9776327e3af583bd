"""Artifacts, lineage, signed records and tampering, on real LanceDB files and blobs."""

from __future__ import annotations

import json
import os
import stat

import assay
import pyarrow as pa
import pytest
from assay.errors import ConflictError, IntegrityError, NotFoundError, UserInputError
from assay.sdk.graph import open_graph
from assay.store.lance import sql_str

pytestmark = pytest.mark.integration


def _init(**kw):
    kw.setdefault("system_metrics_interval", None)
    kw.setdefault("capture", False)
    kw.setdefault("project", "digits")
    return assay.init(**kw)


@pytest.fixture
def pipeline(data_dir, tmp_path):
    """A dataset run -> digits-train:v0 (alias prod) -> a training run -> digits-mlp:v0."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("x,y\n1,2\n")
    (data / "sub").mkdir()
    (data / "sub" / "labels.txt").write_text("0 1 2\n")
    with _init(config={"stage": "prep"}) as r1:
        ds = r1.log_artifact(data, name="digits-train", type="dataset", aliases=["prod"])
        r1.log({"rows": 1.0})
    model = tmp_path / "model.pt"
    model.write_bytes(os.urandom(4096))
    with _init(config={"lr": 0.1}) as r2:
        used = r2.use_artifact("digits-train:prod")
        for i in range(20):
            r2.log({"loss": 1.0 / (i + 1)})
        mv = r2.log_artifact(model, name="digits-mlp", type="model")
    return {"prep": r1, "train": r2, "ds": ds, "used": used, "model": mv, "data": data,
            "model_path": model}


def test_versions_aliases_and_identical_content(pipeline, data_dir):
    ds = pipeline["ds"]
    assert (ds.name, ds.version) == ("digits-train", 0) and ds.digest.startswith("sha256:")
    assert pipeline["used"].version == 0 and set(pipeline["used"].aliases) == {"latest", "prod"}
    with _init() as r:
        same = r.log_artifact(pipeline["data"], name="digits-train", type="dataset")
        assert same.version == 0  # identical content: no new version
        (pipeline["data"] / "train.csv").write_text("x,y\n1,3\n")
        v1 = r.log_artifact(pipeline["data"], name="digits-train", type="dataset")
    assert v1.version == 1 and v1.digest != ds.digest
    api = assay.Api()
    assert api.artifact("digits-train:latest").version == 1
    assert api.artifact("digits-train:prod").version == 0  # user alias stays until moved
    assert api.artifact("digits-train:v0").digest == ds.digest
    table = api.artifacts(name="digits-train")
    assert table["version"].to_list() == [0, 1]
    audit = [e for e in api.audit_log() if e["action"] == "artifact.alias"]
    assert {"alias": "latest", "from": 0, "to": 1} in [e["details"] for e in audit]


def test_download_is_read_only_and_verified(pipeline, tmp_path):
    path = assay.Api().artifact("digits-train:v0").download(tmp_path / "dl")
    assert (path / "train.csv").read_text() == "x,y\n1,2\n"
    assert (path / "sub" / "labels.txt").exists()
    assert not os.stat(path / "train.csv").st_mode & stat.S_IWUSR
    single = pipeline["model"].download()
    assert single.read_bytes() == pipeline["model_path"].read_bytes()


def test_bad_artifact_input_is_rejected_and_nothing_changes(pipeline, tmp_path):
    with _init() as r:
        with pytest.raises(UserInputError, match="no file or directory"):
            r.log_artifact(tmp_path / "missing", name="x", type="dataset")
        with pytest.raises(UserInputError, match="invalid artifact name"):
            r.log_artifact(pipeline["data"], name="../escape", type="dataset")
        with pytest.raises(ConflictError, match="has type 'dataset'"):
            r.log_artifact(pipeline["model_path"], name="digits-train", type="model")
        with pytest.raises(NotFoundError, match="no artifact version digits-train:v9"):
            r.use_artifact("digits-train:v9")
        with pytest.raises(NotFoundError, match="no artifact named"):
            r.use_artifact("nothing:latest")
    assert assay.Api().artifacts(name="digits-train")["version"].to_list() == [0]


def test_lineage_up_and_down(pipeline):
    api = assay.Api()
    nodes, edges = api.lineage("digits-mlp:latest", direction="up")
    ids = set(nodes["id"].to_list())
    assert {"artifact:digits-mlp:v0", f"run:{pipeline['train'].id}", "artifact:digits-train:v0",
            f"run:{pipeline['prep'].id}"} == ids
    assert edges.height == 3
    down, _ = api.lineage("digits-train:v0", direction="down")
    assert set(down["id"].to_list()) == {"artifact:digits-train:v0", f"run:{pipeline['train'].id}",
                                         "artifact:digits-mlp:v0"}
    one_hop, _ = api.lineage("digits-train:v0", direction="down", depth=1)
    assert one_hop.height == 2
    with pytest.raises(UserInputError, match="direction"):
        api.lineage("digits-train:v0", direction="sideways")


def test_verify_passes_on_untouched_data(pipeline):
    checked, problems = assay.Api().verify()
    assert checked == 2 and problems == []


def _tamper_metrics(g, run_id):
    tbl = g.store.table("metrics")
    rows = tbl.search().where(f"run_id = {sql_str(run_id)}").limit(None).to_arrow().to_pylist()
    row = next(r for r in rows if r["key"] == "loss")
    row["value"] = [v + (1e-9 if i == 3 else 0.0) for i, v in enumerate(row["value"])]
    tbl.delete(f"run_id = {sql_str(run_id)} AND key = 'loss' AND seq = {row['seq']}")
    tbl.add(pa.Table.from_pylist([row], schema=tbl.schema))


def _tamper_config(g, run_id):
    tbl = g.store.table("runs")
    tbl.update(where=f"run_id = {sql_str(run_id)}", values={"config": json.dumps({"lr": 0.2})})


def _tamper_blob(g, run_id, model_digest):
    for e in g.artifacts.manifest(g.artifacts.get("digits-mlp:v0")):
        p = g.blobs.path_of(e.digest)
        os.chmod(p, 0o644)
        data = bytearray(p.read_bytes())
        data[100] ^= 1
        p.write_bytes(bytes(data))


def _remove_record(g, run_id, _):
    g.store.table("chain").delete(f"subject_id = {sql_str(run_id)} AND kind = 'run'")


def _tamper_metric_time(g, run_id):
    tbl = g.store.table("metrics")
    rows = tbl.search().where(f"run_id = {sql_str(run_id)}").limit(None).to_arrow().to_pylist()
    row = next(r for r in rows if r["key"] == "loss")
    row["time"] = [t + (3600.0 if i == 3 else 0.0) for i, t in enumerate(row["time"])]
    tbl.delete(f"run_id = {sql_str(run_id)} AND key = 'loss' AND seq = {row['seq']}")
    tbl.add(pa.Table.from_pylist([row], schema=tbl.schema))


def _tamper_run_column(g, run_id, column, edit):
    tbl = g.store.table("runs")
    row = tbl.search().where(f"run_id = {sql_str(run_id)}").limit(1).to_arrow().to_pylist()[0]
    tbl.update(where=f"run_id = {sql_str(run_id)}", values={column: edit(row[column])})


def _lower_min(summary_json):
    summary = json.loads(summary_json)
    summary["loss"]["min"] -= 1.0  # a better best loss than was ever logged
    return json.dumps(summary)


@pytest.mark.parametrize("tamper,expect", [
    (lambda g, rid, d: _tamper_metrics(g, rid), "metrics.digest changed"),
    (lambda g, rid, d: _tamper_metric_time(g, rid), "metrics.times changed"),
    (lambda g, rid, d: _tamper_run_column(g, rid, "summary", _lower_min),
     "summary_stats.loss.min changed"),
    (lambda g, rid, d: _tamper_run_column(g, rid, "error", lambda e: "all fine"),
     "error changed"),
    (lambda g, rid, d: _tamper_config(g, rid), "config.lr changed"),
    (_tamper_blob, "artifact digits-mlp:v0 (produced)"),
    (_remove_record, "no signed record"),
])
def test_verify_names_the_run_whose_data_changed(pipeline, data_dir, tamper, expect):
    rid = pipeline["train"].id
    g = open_graph(data_dir)
    tamper(g, rid, pipeline["model"].digest)
    _checked, problems = assay.Api().verify()
    assert problems, "tampering went unnoticed"
    assert all(p.subject_id == rid for p in problems), problems
    assert any(expect in p.reason for p in problems), [str(p) for p in problems]
    _, one = assay.Api().verify(rid)
    assert one


def test_removing_a_record_in_the_middle_breaks_the_link(pipeline, data_dir):
    with _init() as r3:
        r3.log({"x": 1.0})
    g = open_graph(data_dir)
    _remove_record(g, pipeline["train"].id, None)
    _, problems = assay.Api().verify()
    text = "\n".join(str(p) for p in problems)
    assert "broken link" in text and pipeline["train"].id in text


def test_audit_log_records_status_changes_and_is_intact(pipeline):
    entries = assay.Api().audit_log()
    finished = [e for e in entries if e["action"] == "run.status"]
    assert {e["target"] for e in finished} == {f"run:{pipeline['prep'].id}",
                                              f"run:{pipeline['train'].id}"}
    assert all(e["details"]["status"] == "completed" for e in finished)


def test_corrupted_blob_fails_download_with_its_digest(pipeline, data_dir, tmp_path):
    g = open_graph(data_dir)
    _tamper_blob(g, None, None)
    with pytest.raises(IntegrityError, match="sha256:"):
        assay.Api().artifact("digits-mlp:v0").download(tmp_path / "x")


def test_cli_artifacts_lineage_verify_and_export_key(pipeline, data_dir):
    from assay.cli import app
    from typer.testing import CliRunner

    runner = CliRunner()
    d = ["--dir", str(data_dir)]
    out = runner.invoke(app, ["artifacts", *d])
    assert out.exit_code == 0 and "digits-train" in out.stdout and "prod" in out.stdout
    out = runner.invoke(app, ["lineage", "digits-train:v0", "--down", *d])
    assert out.exit_code == 0 and "artifact:digits-mlp:v0" in out.stdout
    out = runner.invoke(app, ["verify", *d])
    assert out.exit_code == 0 and "OK: 2 run record(s)" in out.stdout
    out = runner.invoke(app, ["export-key", *d])
    assert out.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    _tamper_config(open_graph(data_dir), pipeline["train"].id)
    out = runner.invoke(app, ["verify", pipeline["train"].id, *d])
    assert out.exit_code == 1 and pipeline["train"].id in out.output
    out = runner.invoke(app, ["lineage", "nope:v0", *d])
    assert out.exit_code == 2 and "no artifact" in out.output


def test_a_run_whose_config_holds_the_string_nan_is_sealed_and_verifies(data_dir):
    # "NaN" is a legal config string (a padding token); canonical JSON once refused it, so
    # the run was never sealed and verify reported its record missing.
    with _init(project="pad", config={"pad_value": "NaN", "fill": "-Infinity"}) as run:
        run.log({"loss": 1.0})
    checked, problems = assay.Api().verify()
    assert problems == [] and checked == 1
    assert assay.Api().run(run.id).config["pad_value"] == "NaN"


def test_records_that_arrive_after_a_run_ended_are_sealed_again(data_dir):
    """A remote client can come back after the server marked its run crashed: the metrics it
    then sends must be sealed too, or verify reports the run's own data as tampered with."""
    from assay.sdk.run import _sync_and_get
    from assay.store.wal import WalWriter, segment_path

    run = _init(project="late")
    run.log({"loss": 1.0}, step=0)
    run.finish("crashed")
    seq = assay.Api().run(run.id).ingested_seq
    w = WalWriter(segment_path(data_dir / "wal", run.id, 0))
    w.append([{"k": "metrics", "seq": seq + 1, "chunks": [
        {"keys": ["loss"], "step": [1], "time": [2.0], "vals": [[0.5]]}]}])
    w.close()
    _sync_and_get(data_dir, run.id)  # ingests the late segment
    assert assay.Api().history(run.id, "loss")["step"].to_list() == [0, 1]
    checked, problems = assay.Api().verify()
    assert problems == [] and checked == 1


def test_deleting_the_newest_run_with_its_record_is_caught_by_the_audit_trail(pipeline,
                                                                              data_dir):
    """The newest record of a chain has no successor to break: removing it together with its
    run leaves the chain valid. The signed audit trail names every seal, so verify sees it."""
    rid = pipeline["train"].id  # the newest run of project "digits"
    g = open_graph(data_dir)
    _remove_record(g, rid, None)
    for table in ("runs", "metrics"):
        g.store.table(table).delete(f"run_id = {sql_str(rid)}")
    _, problems = assay.Api().verify()
    text = "\n".join(str(p) for p in problems)
    assert "sealed record" in text and rid in text and "which no chain holds" in text


def test_a_record_sealed_before_version_2_is_checked_on_the_fields_it_holds(pipeline, data_dir):
    # Records sealed by an older assay hold no error text, summary stats or metric times:
    # they must still verify, and still catch changes to what they do hold.
    from assay.store.provenance import (
        _V2_ONLY,
        _V3_ONLY,
        ChainStore,
        run_chain,
        run_record_payload,
    )
    from assay.store.signing import seal

    rid = pipeline["train"].id
    g = open_graph(data_dir)
    run = g.store.get_run(rid)
    v1 = {k: v for k, v in run_record_payload(g.store, run).items()
          if k not in _V2_ONLY + _V3_ONLY}
    v1["metrics"] = {k: v for k, v in v1["metrics"].items() if k != "times"}
    chains, chain = ChainStore(g.store), run_chain(run.project)
    chains.append(chain, [seal(v1, chains.head(chain), g.audit.key, kind="run",
                               subject_id=rid)])
    assert assay.Api().verify(rid) == (1, [])
    _tamper_run_column(g, rid, "error", lambda e: "all fine")  # not in a v1 record
    assert assay.Api().verify(rid) == (1, [])
    _tamper_config(g, rid)
    _, problems = assay.Api().verify(rid)
    assert [p.reason for p in problems] == ["config.lr changed"]


def test_the_group_is_sealed_from_record_version_3(pipeline, data_dir):
    """A run's group was neither sealed nor listed as unsealed (found by an integrity
    review); records sealed before version 3 are checked without it."""
    from assay.store.provenance import _V3_ONLY, ChainStore, run_chain, run_record_payload
    from assay.store.signing import seal

    rid = pipeline["train"].id
    g = open_graph(data_dir)
    assert assay.Api().verify(rid) == (1, [])
    _tamper_run_column(g, rid, "group", lambda x: "another-group")
    _, problems = assay.Api().verify(rid)
    assert [p.reason for p in problems] == ["group changed"]
    run = g.store.get_run(rid)
    v2 = {k: v for k, v in run_record_payload(g.store, run).items() if k not in _V3_ONLY}
    chains, chain = ChainStore(g.store), run_chain(run.project)
    chains.append(chain, [seal({**v2, "v": 2}, chains.head(chain), g.audit.key, kind="run",
                               subject_id=rid)])
    assert assay.Api().verify(rid) == (1, [])  # a version 2 record holds no group


def test_a_deleted_or_cut_back_audit_trail_is_caught_by_the_records_anchoring_it(
        pipeline, data_dir):
    """Deleting audit.jsonl (who stopped what, who deleted which version), or cutting it
    back, passed verify: nothing outside the trail named its entries (integrity gap)."""
    rid = pipeline["train"].id
    g = open_graph(data_dir)
    from assay.store.provenance import ChainStore, run_chain

    [rec] = [r for r in ChainStore(g.store).records(run_chain("digits")) if r.subject_id == rid]
    anchor = rec.payload["audit_anchor"]
    assert rec.payload["v"] == 4 and anchor["seq"] >= 0
    trail = data_dir / "audit" / "audit.jsonl"
    assert assay.Api().verify() == (2, [])
    lines = trail.read_bytes().splitlines(keepends=True)
    cut = [ln for ln in lines if json.loads(ln)["seq"] < anchor["seq"]]
    trail.write_bytes(b"".join(cut))  # cut back to before the anchored entry
    _, problems = assay.Api().verify()
    text = "\n".join(str(p) for p in problems)
    assert f"lacks entry {anchor['seq']}" in text and rid in text
    trail.unlink()  # the whole trail
    _, problems = assay.Api().verify(rid)
    assert any("audit trail lacks entry" in p.reason for p in problems)
    trail.write_bytes(b"".join(lines))  # restored: clean again
    assert assay.Api().verify() == (2, [])


def test_a_version_3_record_without_an_anchor_still_verifies(pipeline, data_dir):
    from assay.store.provenance import ChainStore, run_chain, run_record_payload
    from assay.store.signing import seal

    rid = pipeline["train"].id
    g = open_graph(data_dir)
    run = g.store.get_run(rid)
    v3 = {**run_record_payload(g.store, run), "v": 3}
    chains, chain = ChainStore(g.store), run_chain(run.project)
    chains.append(chain, [seal(v3, chains.head(chain), g.audit.key, kind="run", subject_id=rid)])
    assert assay.Api().verify(rid) == (1, [])
    _tamper_run_column(g, rid, "group", lambda x: "another-group")  # v3 seals the group
    _, problems = assay.Api().verify(rid)
    assert [p.reason for p in problems] == ["group changed"]


def test_one_runs_anchor_check_reads_only_what_the_trail_appended(pipeline, data_dir):
    """Verifying one run (every run page asks) parsed the whole audit trail for its anchor
    (regression review: 2.4 s at 300k entries); the trail is now indexed incrementally, and
    a trail cut back and written again is read afresh."""
    from assay.store.audit import AuditTrail

    trail = AuditTrail(data_dir)
    head = trail.anchor()
    assert trail.hash_at(head["seq"]) == head["hash"] and trail.hash_at(head["seq"] + 1) is None
    from assay.store.audit import _INDEXES

    offset = _INDEXES[str(trail.path)].offset
    trail.record("tester", "note", "x", "one more")
    assert trail.hash_at(head["seq"] + 1) is not None
    assert _INDEXES[str(trail.path)].offset > offset  # read on from where it stopped
    lines = trail.path.read_bytes().splitlines(keepends=True)
    # Cut back by one and padded to the same size: the stale index is not trusted.
    trail.path.write_bytes(b"".join(lines[:-1]) + b" " * (len(lines[-1]) - 1) + b"\n")
    assert trail.hash_at(head["seq"] + 1) is None and trail.hash_at(head["seq"]) == head["hash"]
    rid = pipeline["train"].id
    assert assay.Api().verify(rid) == (1, [])
