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
