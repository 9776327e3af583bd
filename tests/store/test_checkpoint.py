"""Trust anchors held outside the data directory: a pinned key and signed checkpoints.

Real runs on real LanceDB files; the attacks are what someone who can write the data
directory (but holds none of the user's anchors) would do: cut the newest records off a
chain and the audit trail together, or replace the key pair and re-sign everything.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import assay
import pytest
from assay.errors import UserInputError
from assay.sdk import run as run_mod
from assay.sdk.graph import open_graph
from assay.store.checkpoint import Checkpoint, make_checkpoint
from assay.store.lance import sql_str
from assay.store.provenance import ChainStore, run_record_payload
from assay.store.signing import KeyPair, key_id, seal

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _inprocess_ingest(monkeypatch):
    monkeypatch.setattr(run_mod, "INGEST_MODE", "inprocess")  # sealed at finish(), no daemon


def _run(project: str = "digits", **config):
    with assay.init(project=project, config=config, system_metrics_interval=None,
                    capture=False) as run:
        for i in range(5):
            run.log({"loss": 1.0 / (i + 1)})
    return run


@pytest.fixture
def two_runs(data_dir, tmp_path):
    """Two sealed runs of project digits, the public key saved (outside) as the user would."""
    first, second = _run(lr=0.1), _run(lr=0.2)
    pem = tmp_path / "trusted.pub.pem"
    pem.write_text(open_graph(data_dir).audit.key.export_public_key())
    return {"first": first, "second": second, "pem": pem, "dir": data_dir}


def _fresh_api(data_dir: Path) -> assay.Api:
    open_graph.cache_clear()  # what a new process would see (the key is cached per directory)
    return assay.Api(data_dir)


def _texts(problems) -> str:
    return "\n".join(str(p) for p in problems)


# --------------------------------------------------------------------------- the attacks

def _cut_newest_run(data_dir: Path, run_id: str, *, audit_too: bool = True) -> None:
    """Remove a project's newest run, its chain record and (``audit_too``) the audit
    trail's entries from its first one on: consistent, so the in-directory checks pass."""
    store = open_graph(data_dir).store
    assert ChainStore(store).head("run:digits").subject_id == run_id  # the tail, not a middle
    store.table("chain").delete(f"subject_id = {sql_str(run_id)} AND kind = 'run'")
    store.table("runs").delete(f"run_id = {sql_str(run_id)}")
    store.table("metrics").delete(f"run_id = {sql_str(run_id)}")
    if audit_too:
        _cut_audit(data_dir, lambda row: row["subject_id"] == f"run:{run_id}")


def _cut_audit(data_dir: Path, first_removed) -> int:
    path = data_dir / "audit" / "audit.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    keep = next(i for i, line in enumerate(lines) if first_removed(json.loads(line)))
    path.write_text("".join(lines[:keep]))
    return len(lines) - keep


def _replace_key_and_reseal(data_dir: Path, run_id: str) -> KeyPair:
    """Edit a run's config, swap in a new key pair and re-seal every chain and audit entry."""
    g = open_graph(data_dir)
    g.store.table("runs").update(where=f"run_id = {sql_str(run_id)}",
                                 values={"config": json.dumps({"lr": 0.5})})
    for name in ("signing_key.pem", "signing_key.pub.pem"):
        (data_dir / name).unlink()
    new = KeyPair.load_or_create(data_dir)
    chains, renamed = ChainStore(g.store), {}
    for name in chains.chains():
        prev, resealed = None, []
        for rec in chains.records(name):
            payload = run_record_payload(g.store, g.store.get_run(rec.subject_id))
            prev = seal(payload, prev, new, kind=rec.kind, subject_id=rec.subject_id)
            renamed[rec.hash] = prev.hash
            resealed.append(prev)
        g.store.table("chain").delete(f"chain = {sql_str(name)}")
        chains.append(name, resealed)
    prev, lines = None, []
    for rec in g.audit.records():
        payload = rec.payload
        details = payload["details"]
        if details.get("record") in renamed:
            details["record"] = renamed[details["record"]]
        prev = seal(payload, prev, new, kind=rec.kind, subject_id=rec.subject_id)
        lines.append(json.dumps(prev.to_row(), separators=(",", ":")) + "\n")
    g.audit.path.write_text("".join(lines))
    return new


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------- checkpoints

def test_checkpoint_notes_every_chain_and_holds_while_runs_are_appended(two_runs, tmp_path):
    api = assay.Api()
    cp = api.checkpoint(tmp_path / "cp.json")
    assert set(cp.heads) == {"run:digits", "audit"}
    assert cp.heads["run:digits"].seq == 1 and cp.heads["audit"].seq == 1
    assert cp.key_id == key_id(two_runs["pem"].read_text())
    assert Checkpoint.from_json((tmp_path / "cp.json").read_text()) == cp
    _run(lr=0.3)
    _run(project="other")  # a chain the checkpoint never saw: new, so fine
    checked, problems = api.verify(checkpoint=tmp_path / "cp.json")
    assert problems == [] and checked == 4
    _, problems = api.verify(public_key=two_runs["pem"], checkpoint=[cp, tmp_path / "cp.json"])
    assert problems == []


def test_a_cut_chain_tail_passes_plain_verify_but_not_the_checkpoint(two_runs, tmp_path):
    api = assay.Api()
    api.checkpoint(tmp_path / "cp.json")
    _cut_newest_run(two_runs["dir"], two_runs["second"].id)
    checked, plain = api.verify()
    assert plain == [] and checked == 1  # the gap the checkpoint closes
    _, problems = api.verify(checkpoint=tmp_path / "cp.json")
    by_chain = {p.chain: str(p) for p in problems}
    assert set(by_chain) == {"run:digits", "audit"}, _texts(problems)
    assert "truncated: the chain now ends at record #0" in by_chain["run:digits"]
    assert "record(s) #1 were removed" in by_chain["run:digits"]
    assert "truncated: the chain now ends at record #0" in by_chain["audit"]
    assert all("cp.json" in str(p) for p in problems)


def test_a_cut_audit_trail_alone_is_caught_by_the_checkpoint(two_runs, tmp_path):
    api = assay.Api()
    cp = api.checkpoint()
    _run(lr=0.3)  # appended after the checkpoint: one more audit entry to cut along
    removed = _cut_audit(two_runs["dir"],
                         lambda row: row["subject_id"] == f"run:{two_runs['second'].id}")
    assert removed == 2
    # Without the checkpoint, the run sealed after the cut entries still names one of them
    # (its record's audit anchor, from record version 4).
    _, plain = api.verify()
    assert [p.chain for p in plain] == ["run:digits"], _texts(plain)
    assert "the audit trail lacks entry 1" in plain[0].reason
    _, problems = api.verify(checkpoint=cp)
    audit = [p for p in problems if p.chain == "audit"]
    assert len(audit) == 1, _texts(problems)
    assert "truncated: the chain now ends at record #0" in str(audit[0])


def test_a_rewritten_chain_with_the_same_length_is_caught(two_runs, tmp_path):
    cp = assay.Api().checkpoint()
    _replace_key_and_reseal(two_runs["dir"], two_runs["first"].id)
    # Pinned to the original key, the checkpoint is trusted and its heads are compared.
    _, problems = _fresh_api(two_runs["dir"]).verify(public_key=two_runs["pem"], checkpoint=cp)
    rewritten = [p for p in problems if "rewritten: record #1" in p.reason]
    assert {p.chain for p in rewritten} == {"run:digits", "audit"}, _texts(problems)


# ------------------------------------------------------------------------------ pinned key

def test_a_replaced_key_and_resealed_data_is_caught_only_by_the_pinned_key(two_runs):
    old_id = key_id(two_runs["pem"].read_text())
    new = _replace_key_and_reseal(two_runs["dir"], two_runs["first"].id)
    api = _fresh_api(two_runs["dir"])
    assert api.run(two_runs["first"].id).config == {"lr": 0.5}
    checked, plain = api.verify()
    assert plain == [] and checked == 2  # consistent with the directory's (new) key
    _, problems = api.verify(public_key=two_runs["pem"])
    key_lines = [p for p in problems if p.chain == "key"]
    assert len(key_lines) == 1
    assert (f"the data directory's signing key {new.key_id} is not the pinned key {old_id}"
            in str(key_lines[0]))
    bad_sigs = [p for p in problems if "signature does not verify" in p.reason]
    assert len([p for p in bad_sigs if p.chain == "run:digits"]) == 2  # every record fails
    assert len([p for p in bad_sigs if p.chain == "audit"]) == 2  # the audit trail too
    # The same key as PEM text (a script's pinned copy) works alike.
    _, again = api.verify(public_key=two_runs["pem"].read_text())
    assert _texts(again) == _texts(problems)


def test_the_pinned_key_of_an_untouched_directory_passes(two_runs):
    checked, problems = assay.Api().verify(two_runs["first"].id, public_key=two_runs["pem"])
    assert problems == [] and checked == 1


def test_a_checkpoint_signed_by_another_key_is_refused(two_runs):
    """Without a pin, a replaced key shows through the checkpoint the old key signed; with a
    pin, a checkpoint signed by any other key (even one describing the chains truly) fails."""
    g = open_graph(two_runs["dir"])
    old_cp = make_checkpoint(ChainStore(g.store), g.audit, g.audit.key)
    new = _replace_key_and_reseal(two_runs["dir"], two_runs["first"].id)
    _, problems = _fresh_api(two_runs["dir"]).verify(checkpoint=old_cp)
    assert len(problems) == 1, _texts(problems)
    assert (f"was signed by key {old_cp.key_id}, not by the key in use {new.key_id}"
            in str(problems[0]))
    g = open_graph(two_runs["dir"])
    other_cp = make_checkpoint(ChainStore(g.store), g.audit, KeyPair.generate())
    _, problems = assay.Api().verify(public_key=two_runs["pem"], checkpoint=other_cp)
    refused = [p for p in problems if p.chain == "checkpoint"]
    assert len(refused) == 1
    assert f"not by the key in use {key_id(two_runs['pem'].read_text())}" in str(refused[0])


def test_an_edited_checkpoint_fails_its_signature(two_runs, tmp_path):
    """The attacker cuts the newest run and edits the checkpoint to match: caught."""
    api = assay.Api()
    cp_file = tmp_path / "cp.json"
    api.checkpoint(cp_file)
    first_rec = ChainStore(open_graph(two_runs["dir"]).store).records("run:digits")[0]
    _cut_newest_run(two_runs["dir"], two_runs["second"].id, audit_too=False)
    doc = json.loads(cp_file.read_text())
    doc["chains"]["run:digits"] = {"seq": 0, "hash": first_rec.hash}
    cp_file.write_text(json.dumps(doc))
    _, problems = api.verify(checkpoint=cp_file)
    forged = [p for p in problems if p.chain == "checkpoint"]
    assert len(forged) == 1, _texts(problems)
    assert "signature does not verify" in str(forged[0]) and "edited or forged" in str(forged[0])
    assert not any(p.chain == "run:digits" and "cp.json" in str(p) for p in problems)


# ------------------------------------------------------------------------------ bad input

def _doc(cp: Checkpoint, **changes) -> str:
    doc = json.loads(cp.to_json())
    for k, v in changes.items():
        if v is None:
            doc.pop(k)
        else:
            doc[k] = v
    return json.dumps(doc)


@pytest.mark.parametrize("write,match", [
    (None, "checkpoint file .*missing.json does not exist"),
    (lambda cp: "{not json", "is not JSON"),
    (lambda cp: "[1, 2]", "is not an assay checkpoint"),
    (lambda cp: _doc(cp, format="rekor"), "is not an assay checkpoint"),
    (lambda cp: _doc(cp, version=2), "is checkpoint version 2; this assay reads version 1"),
    (lambda cp: _doc(cp, version=True), "is checkpoint version True"),
    (lambda cp: _doc(cp, signature=None), r"missing fields \['signature'\]"),
    (lambda cp: _doc(cp, note="hi"), r"unknown fields \['note'\]"),
    (lambda cp: _doc(cp, key_id=7), "'key_id' must be a non-empty string"),
    (lambda cp: _doc(cp, chains=[]), "'chains' must be an object"),
    (lambda cp: _doc(cp, chains={"audit": {"seq": -1, "hash": "sha256:00"}}),
     "chain 'audit' must be"),
    (lambda cp: _doc(cp, chains={"audit": {"seq": "1", "hash": "sha256:00"}}),
     "chain 'audit' must be"),
])
def test_bad_checkpoint_files_are_clear_errors_and_change_nothing(two_runs, tmp_path, write,
                                                                  match):
    path = tmp_path / ("missing.json" if write is None else "cp.json")
    if write is not None:
        path.write_text(write(assay.Api().checkpoint()))
    before = _snapshot(two_runs["dir"])
    with pytest.raises(UserInputError, match=match) as e:
        assay.Api().verify(checkpoint=path)
    assert "assay checkpoint" in e.value.hint
    assert _snapshot(two_runs["dir"]) == before


@pytest.mark.parametrize("content,match", [
    (None, "public key file .*missing.pem does not exist"),
    ("hello", "public key file .*key.pem: not a PEM public key"),
])
def test_bad_public_key_files_are_clear_errors(two_runs, tmp_path, content, match):
    path = tmp_path / ("missing.pem" if content is None else "key.pem")
    if content is not None:
        path.write_text(content)
    before = _snapshot(two_runs["dir"])
    with pytest.raises(UserInputError, match=match) as e:
        assay.Api().verify(public_key=path)
    assert "assay export-key" in e.value.hint
    assert _snapshot(two_runs["dir"]) == before


# ---------------------------------------------------------------------------------- CLI

def _flat(text: str) -> str:
    return " ".join(text.split())  # the console wraps long lines



def test_cli_checkpoint_and_verify_with_anchors(two_runs, tmp_path):
    from assay.cli import app
    from typer.testing import CliRunner

    runner = CliRunner()
    d = ["--dir", str(two_runs["dir"])]
    pem = tmp_path / "key.pem"
    pem.write_text(runner.invoke(app, ["export-key", *d]).stdout)
    out = runner.invoke(app, ["checkpoint", *d])
    assert out.exit_code == 0 and set(json.loads(out.stdout)["chains"]) == {"run:digits", "audit"}
    cp = tmp_path / "cp.json"
    out = runner.invoke(app, ["checkpoint", "--out", str(cp), *d])
    assert out.exit_code == 0 and "2 chain(s)" in _flat(out.output) and cp.exists()
    inside = two_runs["dir"] / "cp.json"
    out = runner.invoke(app, ["checkpoint", "--out", str(inside), *d])
    assert out.exit_code == 0 and "inside the data directory" in _flat(out.output)
    inside.unlink()
    third = _run(lr=0.3)
    out = runner.invoke(app, ["verify", "--public-key", str(pem), "--checkpoint", str(cp),
                              "--checkpoint", str(cp), *d])
    assert out.exit_code == 0, out.output
    assert "OK: 3 run record(s)" in _flat(out.stdout) and "extending 2 checkpoint(s)" in _flat(out.stdout)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    out = runner.invoke(app, ["verify", "--checkpoint", str(bad), *d])
    assert out.exit_code == 2 and "is not an assay checkpoint" in _flat(out.output)
    out = runner.invoke(app, ["verify", "--public-key", str(tmp_path / "nope.pem"), *d])
    assert out.exit_code == 2 and "does not exist" in _flat(out.output)
    other = tmp_path / "other.pem"
    other.write_text(KeyPair.generate().export_public_key())
    out = runner.invoke(app, ["verify", "--public-key", str(other), *d])
    assert out.exit_code == 1 and "is not the pinned key" in _flat(out.output)
    for run in (third, two_runs["second"]):  # newest first: the chain's tail, consistently
        _cut_newest_run(two_runs["dir"], run.id)
    out = runner.invoke(app, ["verify", *d])
    assert out.exit_code == 0 and "OK: 1 run record(s)" in _flat(out.stdout)
    out = runner.invoke(app, ["verify", "--checkpoint", str(cp), *d])
    assert out.exit_code == 1 and "truncated: the chain now ends at record #0" in _flat(out.output)
