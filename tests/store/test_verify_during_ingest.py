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
