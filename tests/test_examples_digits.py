"""The main job (``scripts/run``, ``python -m assay.examples.digits``) around its sweep."""

from __future__ import annotations

import pytest


@pytest.mark.integration
def test_the_main_job_says_so_when_no_trial_completed(data_dir, monkeypatch, capsys):
    """A directory with earlier sweeps warm-starts the learned stopper, which may stop a
    two-trial sweep whole: the job said nothing of it and crashed formatting a None best
    value (helper-60), before printing the runs, lineage and verification."""
    from assay.agents import runner
    from assay.examples.digits import main

    def no_finisher(obj, **kw):
        return runner.SweepResult("agnone0001", "finished", None, None, None, {"stopped": 2})

    monkeypatch.setattr(runner, "run_objective", no_finisher)
    main(["--trials", "2"])
    out = " ".join(capsys.readouterr().out.split())
    assert "no trial completed with a val/acc (trials: {'stopped': 2})" in out
    assert "verify: 1 signed run records, 0 problems" in out  # the dataset's run
