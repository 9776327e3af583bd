"""RayBackend on a real local Ray: real trials end to end, commands, dead workers, stops."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time

import pytest
from assay.scheduler import EventKind, RayBackend, StoreMetricSource, TrialEvent, TrialSpec

pytestmark = pytest.mark.integration


def _pids(path, n: int, timeout: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            pids = [int(x) for x in path.read_text().split()]
            if len(pids) >= n:
                return pids
        time.sleep(0.05)
    raise AssertionError(f"no pid #{n} in {path}")


def test_digits_and_a_trivial_function_run_end_to_end_with_curves_in_the_store(
        ray_backend, data_dir):
    import assay

    case = ray_backend
    digits = TrialSpec("digits0001", "e2e", {"epochs": 2, "hidden": 16},
                       "assay.examples.digits:train")
    trivial = case.spec("ok", config={"steps": 4})
    case.backend.launch(digits)
    case.backend.launch(trivial)
    done = case.wait_for(digits.trial_id, EventKind.COMPLETED, timeout=120)
    case.wait_for(trivial.trial_id, EventKind.COMPLETED)
    assert case.of(digits.trial_id) == [EventKind.STARTED, EventKind.COMPLETED]
    assert 0 < done.result["val/acc"] <= 1 and done.usage.cpu_s > 0
    api = assay.Api(data_dir)
    rec = api.run(digits.trial_id)
    assert rec.status == "completed" and rec.config["epochs"] == 2
    source = StoreMetricSource(data_dir)
    pts = source.new_points([digits.trial_id, trivial.trial_id])
    assert [s for s, _ in pts[digits.trial_id]["val/acc"]] == [0, 1]
    assert pts[trivial.trial_id]["loss"] == [(0, 1.0), (1, 0.5), (2, 1 / 3), (3, 0.25)]
    assert not any(k.startswith("sys/") for k in pts[digits.trial_id])
    assert source.new_points([digits.trial_id, trivial.trial_id]) == {}


def test_command_trials_get_their_config_and_log_through_the_sdk(ray_backend, data_dir,
                                                                 tmp_path):
    import assay

    script = tmp_path / "train_cmd.py"
    script.write_text(textwrap.dedent("""
        import json, os, sys
        import assay
        cfg = json.loads(os.environ["ASSAY_CONFIG"])
        args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
        assert {k: args.pop(k) for k in ("lr", "name", "layers")} == {
            "lr": "0.5", "name": "x y", "layers": "[1, 2]"}, args
        assert set(args) <= {"exit", "forever", "pid_file"}, args
        if cfg.get("exit"):
            print("giving up on purpose")
            sys.exit(cfg["exit"])
        with assay.init(os.environ["ASSAY_PROJECT"], config=cfg) as run:
            if cfg.get("pid_file"):
                open(cfg["pid_file"], "w").write(str(os.getpid()))
            for step in range(3 if not cfg.get("forever") else 10**6):
                run.log({"loss": cfg["lr"] / (step + 1)}, step=step)
                if cfg.get("forever") == "polite" and run.should_stop():
                    break
                time.sleep(0.1 if cfg.get("forever") else 0)
    """).replace("import json, os, sys", "import json, os, sys, time"))
    case = ray_backend
    ok = TrialSpec("cmdok0001", "cmd", {"lr": 0.5, "name": "x y", "layers": [1, 2]},
                   f"python {script}")
    bad = TrialSpec("cmdbad001", "cmd", {"lr": 0.5, "name": "x y", "layers": [1, 2], "exit": 3},
                    [sys.executable, str(script)])
    base = {"lr": 0.5, "name": "x y", "layers": [1, 2]}
    polite = TrialSpec("cmdpol001", "cmd", {**base, "forever": "polite"}, ["python", str(script)])
    pid_file = tmp_path / "stubborn.pid"
    stubborn = TrialSpec("cmdstb001", "cmd", {**base, "forever": "stubborn",
                                              "pid_file": str(pid_file)},
                         ["python", str(script)], stop_grace_s=1.0)
    for s in (ok, bad, polite, stubborn):
        case.backend.launch(s)
    done = case.wait_for(ok.trial_id, EventKind.COMPLETED, timeout=90)
    failed = case.wait_for(bad.trial_id, EventKind.FAILED, timeout=90)
    assert done.result["loss"] == pytest.approx(0.5 / 3)
    assert failed.reason == "command exited with code 3"
    assert "giving up on purpose" in failed.error
    for s in (polite, stubborn):
        case.wait_for(s.trial_id, EventKind.STARTED)
    child = int(_pids(pid_file, 1)[0])
    case.backend.stop(polite.trial_id, "budget exhausted")
    case.backend.stop(stubborn.trial_id, "budget exhausted")
    assert case.wait_for(polite.trial_id, EventKind.STOPPED).reason == "budget exhausted"
    forced = case.wait_for(stubborn.trial_id, EventKind.STOPPED)
    assert "killed after 1 s grace" in forced.reason
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:
        time.sleep(0.1)  # the command dies with its killed worker
    assert not os.path.exists(f"/proc/{child}")
    api = assay.Api(data_dir)
    assert api.run(ok.trial_id).status == "completed"
    rec = api.run(bad.trial_id)
    assert rec.status == "failed" and "exited with code 3" in rec.error
    assert api.run(polite.trial_id).status == "stopped"
    assert api.run(stubborn.trial_id).status == "stopped"


def test_a_killed_worker_is_retried_by_resuming_then_failed_after_max_retries(
        ray_backend, data_dir, tmp_path):
    import assay

    case = ray_backend
    pid_file = tmp_path / "pids"
    spec = case.spec("long", max_retries=1, config={"pid_file": str(pid_file)})
    case.backend.launch(spec)
    case.wait_for(spec.trial_id, EventKind.STARTED)
    time.sleep(1.0)  # let it log a few steps
    os.kill(_pids(pid_file, 1)[0], signal.SIGKILL)
    retried = case.wait_for(spec.trial_id, EventKind.RETRIED)
    assert retried.attempt == 2 and "worker died" in retried.reason
    second = _pids(pid_file, 2)[1]
    case.wait(lambda es: [e.kind for e in es if e.trial_id == spec.trial_id].count(
        EventKind.STARTED) == 2)
    time.sleep(1.0)
    os.kill(second, signal.SIGKILL)
    failed = case.wait_for(spec.trial_id, EventKind.FAILED)
    assert case.of(spec.trial_id) == [EventKind.STARTED, EventKind.RETRIED, EventKind.STARTED,
                                      EventKind.FAILED]
    assert failed.attempt == 2 and "max_retries=1" in failed.reason
    assert failed.usage.wall_s > 0.5
    rec = assay.Api(data_dir).run(spec.trial_id)
    assert rec.status == "failed" and "worker died" in rec.error
    assert rec.attach >= 1  # the second attempt resumed the same run
    steps = assay.Api(data_dir).history(spec.trial_id, "loss")["step"].to_list()
    assert steps == sorted(set(steps)) and len(steps) >= 5


def test_a_sigterm_to_the_worker_is_retried_by_resuming_and_sys_exit_is_a_failure(
        ray_backend, data_dir, tmp_path):
    import assay

    case = ray_backend
    pid_file = tmp_path / "pids"
    spec = case.spec("long", max_retries=1, config={"pid_file": str(pid_file)})
    quits = case.spec("exit", max_retries=1)
    case.backend.launch(spec)
    case.backend.launch(quits)
    case.wait_for(spec.trial_id, EventKind.STARTED)
    time.sleep(1.0)  # let it log a few steps
    os.kill(_pids(pid_file, 1)[0], signal.SIGTERM)  # preemption, a draining node
    retried = case.wait_for(spec.trial_id, EventKind.RETRIED)
    assert retried.attempt == 2 and "worker died" in retried.reason
    api = assay.Api(data_dir)
    case.wait(lambda es: [e.kind for e in es if e.trial_id == spec.trial_id].count(
        EventKind.STARTED) == 2)
    _pids(pid_file, 2)  # the second attempt runs its target
    case.backend.stop(spec.trial_id, "enough")
    assert case.wait_for(spec.trial_id, EventKind.STOPPED).reason == "enough"
    rec = api.run(spec.trial_id)
    assert rec.status == "stopped" and rec.attach == 1  # resumed, never marked failed
    steps = api.history(spec.trial_id, "loss")["step"].to_list()
    # The retry restarted the target and rewound its run to step 0: the curve is the second
    # attempt's alone (stopped soon after it started), none of the first one's ~10 steps.
    assert steps == list(range(len(steps))) and 1 <= len(steps) <= rec.last_step + 1
    failed = case.wait_for(quits.trial_id, EventKind.FAILED)
    assert failed.reason == "SystemExit: 3" and case.of(quits.trial_id) == [
        EventKind.STARTED, EventKind.FAILED]  # not retried: the trial chose to exit
    assert api.run(quits.trial_id).status == "failed"


def _died_mid_run(data_dir, spec: TrialSpec, steps: int) -> None:
    """An attempt that logged ``steps`` points and died without finishing its run."""
    code = textwrap.dedent(f"""
        import os, assay
        run = assay.init({spec.project!r}, id={spec.trial_id!r}, config={dict(spec.config)!r},
                         dir={str(data_dir)!r}, system_metrics_interval=0, capture=False)
        for step in range({steps}):
            run.log({{"loss": 9.0}}, step=step)
        run.flush()
        os._exit(0)  # no finish: the process is gone, its run is not
    """)
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_resume_spec_continues_the_existing_run_or_creates_a_missing_one(ray_backend,
                                                                          data_dir):
    import assay

    case = ray_backend
    earlier = case.spec("ok", config={"steps": 2})
    _died_mid_run(data_dir, earlier, 1)  # an attempt that ran before its agent restarted
    again = TrialSpec(earlier.trial_id, earlier.project, earlier.config, earlier.target,
                      resume=True)
    missing = case.spec("ok", resume=True)  # its first attempt never became durable
    case.backend.launch(again)
    case.backend.launch(missing)
    case.wait_for(again.trial_id, EventKind.COMPLETED)
    case.wait_for(missing.trial_id, EventKind.COMPLETED)
    api = assay.Api(data_dir)
    rec = api.run(again.trial_id)
    assert rec.status == "completed" and rec.attach == 1
    assert api.history(again.trial_id, "loss")["step"].to_list() == [0, 1]
    made = api.run(missing.trial_id)
    assert made.status == "completed" and made.attach == 0


def test_a_resumed_target_with_implicit_steps_restarts_its_curve_at_step_0(ray_backend,
                                                                           data_dir):
    import assay

    case = ray_backend
    earlier = case.spec("implicit", config={"steps": 2})
    _died_mid_run(data_dir, earlier, 4)  # the attempt that died had reached step 3
    again = TrialSpec(earlier.trial_id, earlier.project, earlier.config, earlier.target,
                      resume=True)
    case.backend.launch(again)
    case.wait_for(again.trial_id, EventKind.COMPLETED)
    hist = assay.Api(data_dir).history(again.trial_id, "loss").sort("step")
    # The run was rewound to step 0: steps 0-1 are the new attempt's (attach 1: 10, 11), and
    # the dead attempt's 2-3 are superseded, not mixed into its curve.
    assert hist["step"].to_list() == [0, 1]
    assert hist["value"].to_list() == [10.0, 11.0]
    assert assay.Api(data_dir).run(again.trial_id).last_step == 1


def test_end_unlaunched_finishes_an_unfinished_run_and_leaves_a_finished_one(ray_backend,
                                                                            data_dir):
    import assay

    case = ray_backend
    lost = case.spec("ok")
    _died_mid_run(data_dir, lost, 1)  # a restarted agent's lost trial it will not relaunch
    case.backend.end_unlaunched(lost.project, lost.trial_id, "stopped", "stopped by alice")
    api = assay.Api(data_dir)
    rec = api.run(lost.trial_id)
    assert rec.status == "stopped" and "alice" in rec.error
    case.backend.end_unlaunched(lost.project, lost.trial_id, "failed", "out of retries")
    assert api.run(lost.trial_id).status == "stopped"  # a finished run is left as it is


def test_a_resumed_trial_whose_run_had_completed_reports_it_without_running_again(
        ray_backend, data_dir):
    import assay

    case = ray_backend
    done = case.spec("ok", config={"steps": 3, "returned": 7.0})
    failed = case.spec("raise")
    for spec in (done, failed):  # the attempts ended; their agent died before it heard
        case.backend.launch(spec)
    case.wait_for(done.trial_id, EventKind.COMPLETED)
    case.wait_for(failed.trial_id, EventKind.FAILED)
    api = assay.Api(data_dir)
    before = api.history(done.trial_id, "loss")["step"].to_list()
    again = [TrialSpec(s.trial_id, s.project, s.config, s.target, resume=True)
             for s in (done, failed)]
    backend = RayBackend(data_dir, heartbeat_s=0.2)  # a new one, as a restarted agent has
    try:
        for spec in again:
            backend.launch(spec)
        events: dict[str, TrialEvent] = {}
        deadline = time.monotonic() + 60
        while len(events) < 2 and time.monotonic() < deadline:
            for ev in backend.poll():
                if ev.kind is not EventKind.STARTED:
                    events[ev.trial_id] = ev
            time.sleep(0.05)
    finally:
        backend.shutdown()
    ok, bad = events[done.trial_id], events[failed.trial_id]
    assert ok.kind is EventKind.COMPLETED and ok.result["loss"] == pytest.approx(1 / 3)
    assert ok.result["returned"] == 7.0  # what the function returned, not only what it logged
    assert "already completed" in ok.reason
    assert bad.kind is EventKind.FAILED and "boom" in bad.error
    assert api.run(failed.trial_id).attach == 1  # a failed run is run again: it may have died
    rec = api.run(done.trial_id)
    assert rec.status == "completed" and rec.attach == 0  # never reopened
    assert api.history(done.trial_id, "loss")["step"].to_list() == before


def test_cooperative_stop_finishes_in_the_grace_and_forced_stop_kills_after_it(
        ray_backend, data_dir, tmp_path):
    import assay

    case = ray_backend
    pid_files = tmp_path / "polite.pid", tmp_path / "stubborn.pid"
    polite = case.spec("long", stop_grace_s=30, config={"pid_file": str(pid_files[0])})
    stubborn = case.spec("stubborn", stop_grace_s=1.0, config={"pid_file": str(pid_files[1])})
    for s in (polite, stubborn):
        case.backend.launch(s)
    for s in (polite, stubborn):
        case.wait_for(s.trial_id, EventKind.STARTED)
    for path in pid_files:  # the targets run (STARTED alone can come before the target does)
        _pids(path, 1)
    t0 = time.monotonic()
    case.backend.stop(polite.trial_id, "median rule: worse than median at step 5")
    case.backend.stop(stubborn.trial_id, "asha: rung 1")
    assert (data_dir / "control" / f"{polite.trial_id}.stop").read_text().startswith("median")
    ev = case.wait_for(polite.trial_id, EventKind.STOPPED)
    assert time.monotonic() - t0 < 10 and ev.reason.startswith("median rule")
    assert ev.result["loss"] > 0
    forced = case.wait_for(stubborn.trial_id, EventKind.STOPPED)
    assert forced.reason == "asha: rung 1 (killed after 1 s grace)"
    api = assay.Api(data_dir)
    rec = api.run(polite.trial_id)
    assert rec.status == "stopped" and rec.error.startswith("median rule")
    rec = api.run(stubborn.trial_id)
    assert rec.status == "stopped" and "killed after" in rec.error
    assert not (data_dir / "control" / f"{polite.trial_id}.stop").exists()


def test_a_trial_that_raises_records_its_traceback_in_the_run(ray_backend, data_dir):
    import assay

    case = ray_backend
    spec = case.spec("raise")
    case.backend.launch(spec)
    ev = case.wait_for(spec.trial_id, EventKind.FAILED)
    rec = assay.Api(data_dir).run(spec.trial_id)
    assert rec.status == "failed"
    assert "Traceback" in rec.error and "boom: the trial raised on purpose" in rec.error
    assert ev.error == rec.error


@pytest.mark.slow
def test_the_embedded_default_starts_a_local_ray_and_shuts_it_down(data_dir, tmp_path):
    import subprocess

    script = tmp_path / "embedded.py"
    script.write_text(textwrap.dedent(f"""
        import time, ray
        from assay.errors import UserInputError
        from assay.scheduler import EventKind, RayBackend, Resources, TrialSpec
        b = RayBackend({str(data_dir)!r}, num_cpus=1)
        assert ray.is_initialized() and ray.cluster_resources()["CPU"] == 1
        try:
            b.launch(TrialSpec("big00001", "emb", {{}}, "assay.examples.digits:train",
                               resources=Resources(cpus=4)))
        except UserInputError as e:
            print("too big:", e.message)
        b.launch(TrialSpec("emb00001", "emb", {{"epochs": 1, "hidden": 8}},
                           "assay.examples.digits:train"))
        deadline = time.monotonic() + 120
        kinds = []
        while time.monotonic() < deadline and EventKind.COMPLETED not in kinds:
            kinds += [e.kind for e in b.poll()]
            time.sleep(0.1)
        b.shutdown()
        print("kinds:", [str(k) for k in kinds], "initialized:", ray.is_initialized())
    """))
    out = subprocess.run([sys.executable, str(script)], check=False, capture_output=True,
                         text=True,
                         timeout=240, env={**os.environ, "RAY_ADDRESS": ""})
    assert "too big: each trial asks for 4 CPU, but the whole cluster has 1 CPU" in out.stdout, \
        out.stderr[-3000:]
    assert "kinds: ['started', 'completed'] initialized: False" in out.stdout, out.stderr[-3000:]
