"""`assay verify` while an ingest pass is between committing a run's points and sealing its
record: it waits for the pass (the ingest lock) instead of reporting the run unsealed."""

from __future__ import annotations

import threading
import time

import assay
import assay.sdk.run as run_mod
import pytest
from assay.store.ingestd import local_ingester
from assay.store.wal import list_segments

pytestmark = pytest.mark.integration


def test_verify_waits_for_the_seal_of_a_run_being_ingested(tmp_path, monkeypatch):
    monkeypatch.setattr(run_mod, "INGEST_MODE", "daemon")
    monkeypatch.setattr(run_mod, "ensure_daemon", lambda *a, **k: None)  # no daemon: ours
    monkeypatch.setattr(run_mod, "wait_segment_ingested", lambda *a, **k: True)
    run = assay.init(project="p", dir=tmp_path, capture=False, system_metrics_interval=None)
    for i in range(5):
        run.log({"loss": 1.0 / (i + 1)})
    run.finish()

    _, lock, ingester = local_ingester(tmp_path)
    seal = ingester.finalizer
    sealing = threading.Event()

    def slow_seal(runs):
        sealing.set()  # the points and the finished status are committed by now
        time.sleep(1.0)
        seal(runs)

    ingester.finalizer = slow_seal

    def ingest():
        with lock:
            ingester.ingest(list_segments(tmp_path / "wal"))

    t = threading.Thread(target=ingest)
    t.start()
    assert sealing.wait(30)
    api = assay.Api(tmp_path)
    assert api.run(run.id).status == "completed"  # visible before its seal
    checked, problems = api.verify(run.id)
    t.join(30)
    assert (checked, problems) == (1, [])


def test_a_resumed_run_still_running_is_not_reported_against_its_older_seal(tmp_path,
                                                                             monkeypatch):
    """Its newest seal describes the attach it continues (and here rewinds): checked again
    once it finishes, not reported as altered while it runs."""
    monkeypatch.setattr(run_mod, "INGEST_MODE", "inprocess")
    run = assay.init(project="p", dir=tmp_path, capture=False, system_metrics_interval=None)
    for i in range(6):
        run.log({"loss": 10.0 + i})
    run.finish()
    api = assay.Api(tmp_path)
    assert api.verify(run.id) == (1, [])
    again = assay.init(project="p", dir=tmp_path, resume=run.id, resume_from_step=2,
                       capture=False, system_metrics_interval=None)
    again.log({"loss": 1.0})
    again.flush()
    _, lock, ingester = local_ingester(tmp_path)
    with lock:  # the live segment, as the daemon ingests it
        ingester.ingest(list_segments(tmp_path / "wal"))
    assert api.run(run.id).status == "running"
    assert api.history(run.id, "loss")["step"].to_list() == [0, 1, 2]
    assert api.verify(run.id) == (0, [])
    again.finish()
    assert api.verify(run.id) == (1, [])


def test_a_row_edited_to_say_running_a_later_attach_does_not_hide_tampering(tmp_path,
                                                                            monkeypatch):
    """The skip above trusted the row: editing a finished run's row to 'running, attach 1'
    (with its config changed) made verify pass it over (found by an integrity review). It
    now also needs a write-ahead log of that attach, which a running attach keeps."""
    from dataclasses import replace

    from assay.store.records import RunStatus

    monkeypatch.setattr(run_mod, "INGEST_MODE", "inprocess")
    run = assay.init(project="p", dir=tmp_path, config={"lr": 0.1}, capture=False,
                     system_metrics_interval=None)
    run.log({"acc": 0.5})
    run.finish()
    api = assay.Api(tmp_path)
    rec = api.run(run.id)
    api.store.upsert_runs([replace(rec, status=RunStatus.RUNNING, attach=1,
                                   config={"lr": 0.5})])
    checked, problems = api.verify(run.id)
    assert checked == 1 and len(problems) == 1
    assert "says attach 1 is running, but no write-ahead log" in problems[0].reason


def test_a_pass_killed_between_committing_a_run_and_sealing_it_is_sealed_by_the_next(
        tmp_path, monkeypatch):
    """Killed there (or the seal failing), the run stayed unsealed forever, reported by
    verify as tampering: its records were ingested, so no later pass touched it again."""
    import os
    import signal
    import subprocess
    import sys

    from assay.store.ingest import sync_orphans

    env = {**os.environ, "ASSAY_DIR": str(tmp_path), "ASSAY_INGEST": "inprocess"}
    child = ("import assay, os, signal\n"
             "r = assay.init(project='u', system_metrics_interval=0, capture=False)\n"
             "[r.log({'x': float(s)}, step=s) for s in range(10)]\n"
             "r.flush(); print(r.id, flush=True); os.kill(os.getpid(), signal.SIGKILL)\n")
    out = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == -signal.SIGKILL, out.stderr
    rid = out.stdout.strip()

    class Killed(BaseException):  # what a SIGKILL right before sealing looks like here
        pass

    def die(runs):
        raise Killed

    store, lock, ing = local_ingester(tmp_path)
    ing.finalizer = die
    with pytest.raises(Killed):
        sync_orphans(tmp_path, store, lock, ing)
    api = assay.Api(tmp_path)
    assert api.run(rid).status == "crashed"
    _, problems = api.verify(rid)
    assert [p.reason for p in problems] and "no signed record" in problems[0].reason
    store, lock, ing = local_ingester(tmp_path)  # the next process's pass (assay sync)
    sync_orphans(tmp_path, store, lock, ing)
    assert api.verify(rid) == (1, [])
    assert not (tmp_path / "seal-pending.json").exists()


def test_verify_rehashes_the_sealed_git_diff_blob(tmp_path, monkeypatch):
    """The record seals the diff blob's digest, but verify never read it: a rewritten diff
    passed (found by an integrity review)."""
    from gitrepo import dirty_checkout  # tests/ is on sys.path (rootdir conftest)

    code = dirty_checkout(tmp_path / "code", "x = 1\n", "x = 2  # the change that was run\n")
    monkeypatch.chdir(code)
    monkeypatch.setattr(run_mod, "INGEST_MODE", "inprocess")
    data = tmp_path / "data"
    with assay.init(project="g", dir=data, system_metrics_interval=None) as run:
        run.log({"x": 1.0})
    api = assay.Api(data)
    digest = api.run(run.id).git["diff_blob"]
    assert digest and api.verify(run.id) == (1, [])
    [blob] = [p for p in (data / "blobs").rglob(digest.split(":")[1])]
    blob.chmod(0o644)
    blob.write_text(blob.read_text().replace("x = 2", "x = 3"))
    checked, problems = api.verify(run.id)
    assert checked == 1 and "git diff blob" in problems[0].reason
    # The record says this store holds the diff (a local run): a missing one is reported.
    assert api.run(run.id).git["diff_stored"] is True
    blob.unlink()
    checked, problems = api.verify(run.id)
    assert checked == 1 and "is missing" in problems[0].reason


def test_a_missing_diff_blob_the_record_does_not_claim_is_not_reported(tmp_path):
    """Records from before ``diff_stored``, and remote runs whose upload failed, keep their
    diff on the client: absence proves nothing there (a regression review found every such
    run reported)."""
    from assay.store.blobs import LocalBlobStore
    from assay.store.provenance import _check_git_diff

    blobs = LocalBlobStore(tmp_path / "blobs")
    digest = "sha256:" + "0" * 64
    assert _check_git_diff(blobs, {"git": {"diff_blob": digest}}) == []
    assert _check_git_diff(blobs, {"git": {"diff_blob": digest, "diff_stored": False}}) == []
    assert "missing" in _check_git_diff(blobs, {"git": {"diff_blob": digest,
                                                         "diff_stored": True}})[0]


def test_a_run_whose_seal_fails_twice_stays_pending_until_it_is_sealed(tmp_path):
    """Every pass replaced the pending list: a run whose retried seal failed again dropped
    out of it once the same pass committed another run, and was never sealed (found by a
    regression review)."""
    import logging

    from assay.store.wal import WalWriter, segment_path

    _, lock, ing = local_ingester(tmp_path)
    real, fail = ing.finalizer, {"on": True}

    def flaky(runs):
        if fail["on"]:
            raise OSError("disk hiccup")
        real(runs)

    ing.finalizer = flaky

    def segment(rid, finished):
        p = segment_path(tmp_path / "wal", rid, 0)
        p.parent.mkdir(parents=True, exist_ok=True)
        w = WalWriter(p)
        now = time.time()
        recs = [{"k": "run", "seq": 1, "time": now, "run_id": rid, "project": "p", "name": rid,
                 "attach": 0},
                {"k": "metrics", "seq": 2, "time": now, "chunks": [
                    {"keys": ["loss"], "step": [0], "time": [now], "vals": [[1.0]]}]}]
        if finished:
            recs.append({"k": "status", "seq": 3, "time": now, "status": "completed"})
        w.append(recs)
        w.close()
        return p

    logging.disable(logging.CRITICAL)
    try:
        with lock:
            ing.ingest([segment("runAaaa", True)])  # its seal fails
            ing.ingest([segment("runBbbb", False)])  # the retry fails; another run commits
        fail["on"] = False
        with lock:
            ing.ingest([segment("runCccc", True)])
    finally:
        logging.disable(logging.NOTSET)
    api = assay.Api(tmp_path)
    assert api.verify("runAaaa") == (1, []) and api.verify("runCccc") == (1, [])
    assert not (tmp_path / "seal-pending.json").exists()
