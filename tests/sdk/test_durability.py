"""Crash and concurrency tests of the write path on real processes and LanceDB files."""

from __future__ import annotations

import collections
import mmap
import os
import random
import signal
import subprocess
import sys
import time

import assay
import numpy as np
import pytest
from assay.sdk.settings import FLUSH_INTERVAL
from assay.store.lance import LanceStore

pytestmark = pytest.mark.integration

CHILD = r"""
import mmap, sys, time
import numpy as np
import assay
path, n = sys.argv[1], int(sys.argv[2])
f = open(path, "r+b")
arr = np.frombuffer(mmap.mmap(f.fileno(), n * 8), dtype=np.float64)
run = assay.init(project="crash", system_metrics_interval=None, capture=False)
print(run.id, flush=True)
for step in range(n):
    run.log({"x": float(step), "y": 2.0 * step}, step=step)
    arr[step] = time.monotonic()  # log() has returned for this step
    if step % 200 == 0:
        time.sleep(0.001)
"""

WRITER = r"""
import sys
import assay
n = int(sys.argv[1])
with assay.init(project="many", system_metrics_interval=None, capture=False) as run:
    for step in range(n):
        run.log({"a": float(step), "b": -float(step), "c": 1.0}, step=step)
print(run.id)
"""


def _raw_points(store: LanceStore, run_id: str) -> collections.Counter:
    t = store.metric_chunks(run_id)
    c: collections.Counter = collections.Counter()
    for key, steps in zip(t["key"].to_pylist(), t["step"].to_pylist()):
        c.update((key, s) for s in steps)
    return c


@pytest.mark.parametrize("seed,mode", [(1, "inprocess"), (2, "inprocess"), (3, "daemon")])
def test_sigkill_loses_no_point_older_than_one_flush_interval(data_dir, tmp_path, seed, mode):
    """inprocess: nothing is ingested before the kill, `assay sync` recovers it all from the
    WAL. daemon: the ingest daemon has ingested part live and adopts the orphan by itself."""
    n = 3_000_000
    shm = tmp_path / "acks"
    shm.write_bytes(b"\0" * (n * 8))
    env = {**os.environ, "ASSAY_DIR": str(data_dir), "ASSAY_INGEST_INTERVAL": "0.3",
           "ASSAY_INGEST": mode}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(shm), str(n)],
                             stdout=subprocess.PIPE, env=env, text=True)
    run_id = child.stdout.readline().strip()
    time.sleep(random.Random(seed).uniform(0.3, 2.0))
    t_kill = time.monotonic()
    child.send_signal(signal.SIGKILL)
    child.wait()
    acks = np.frombuffer(mmap.mmap(os.open(shm, os.O_RDONLY), n * 8, prot=mmap.PROT_READ),
                         dtype=np.float64)
    must = np.flatnonzero((acks > 0) & (acks < t_kill - FLUSH_INTERVAL))
    assert must.size > 1000, "the child logged too little before the kill to test anything"

    if mode == "inprocess":
        out = subprocess.run([sys.executable, "-m", "assay.cli", "sync", "--dir", str(data_dir)],
                             capture_output=True, text=True, env=env, check=True)
        assert "synced 1 WAL segment" in out.stdout
    else:
        deadline = time.monotonic() + 60
        while list((data_dir / "wal").glob("*/*.wal")) and time.monotonic() < deadline:
            time.sleep(0.05)

    store = LanceStore(data_dir)
    counts = _raw_points(store, run_id)
    assert max(counts.values()) == 1, "a point was ingested twice"
    present = {s for (k, s) in counts if k == "x"}
    missing = [int(s) for s in must if int(s) not in present]
    assert not missing, f"{len(missing)} acknowledged points lost, first {missing[:5]}"
    assert assay.Api(data_dir).run(run_id).status == "crashed"
    # a second sync finds nothing to do and changes nothing
    subprocess.run([sys.executable, "-m", "assay.cli", "sync", "--dir", str(data_dir)],
                   capture_output=True, env=env, check=True)
    assert _raw_points(store, run_id) == counts


def test_eight_processes_log_into_one_directory_without_loss_or_duplicates(data_dir):
    n = 4000
    env = {**os.environ, "ASSAY_DIR": str(data_dir), "ASSAY_INGEST_INTERVAL": "0.1"}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(n)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env, text=True) for _ in range(8)]
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        ids.append(out.strip().splitlines()[-1])
    store = LanceStore(data_dir)
    api = assay.Api(data_dir)
    assert api.runs(project="many").height == 8
    for rid in ids:
        counts = _raw_points(store, rid)
        assert len(counts) == 3 * n and max(counts.values()) == 1
        assert api.run(rid).status == "completed"
    assert not list((data_dir / "wal").glob("*/*.wal")), "finished runs left WAL segments"


EXIT_THREE_REMOTE = """
import atexit, sys, time
t = {}
atexit.register(lambda: print(f"EXIT {time.monotonic() - t['t0']:.2f}", flush=True))
import assay
# Port 9 on loopback refuses connections: the server never acknowledges.
runs = [assay.init(project="p", server="http://127.0.0.1:9", token="x", dir=sys.argv[1])
        for _ in range(3)]
for r in runs:
    r.log({"a": 1.0})
atexit.register(lambda: t.setdefault("t0", time.monotonic()))  # runs before assay's
"""


def test_runs_left_open_finish_at_exit_together_not_one_after_another(tmp_path):
    # Each remote run waits up to ASSAY_REMOTE_FINISH_TIMEOUT for its server at exit; three
    # of them must cost one wait, not three, and each keeps its records in the outbox.
    env = {**os.environ, "ASSAY_REMOTE_FINISH_TIMEOUT": "2"}
    out = subprocess.run([sys.executable, "-c", EXIT_THREE_REMOTE, str(tmp_path)], check=False, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    exit_s = float(out.stdout.split("EXIT ")[1])
    assert 1.9 < exit_s < 5.0, out.stdout  # one after another: at least 6 s
    assert out.stderr.count("did not acknowledge everything within 2.0 s") == 3
    assert len(list((tmp_path / "outbox").glob("*/*.wal"))) == 3


EXIT_CASES = {
    "exit 3": ("import sys\nsys.exit(3)", "failed", "sys.exit(3)"),
    "exit message": ("import sys\nsys.exit('CUDA out of memory')", "failed", "out of memory"),
    "exit 0": ("import sys\nsys.exit(0)", "completed", ""),
    # helper-63: the run said only "sys.exit(3)"; the why was in the script's stderr.
    "said, exit 3": (("import sys\nsys.stderr.write('epoch 1: 10%\\repoch 1: 90%\\n')\n"
                      "print('connecting with ASSAY_TOKEN=sk-SECRET-123456', file=sys.stderr)\n"
                      "print('boom: simulated CUDA OOM', file=sys.stderr)\nsys.exit(3)"),
                     "failed", ("sys.exit(3); the end of its stderr:\nepoch 1: 90%\n"
                                "connecting with ASSAY_TOKEN=***\nboom: simulated CUDA OOM")),
    "ends": ("pass", "completed", ""),
    "ctrl-c": ("raise KeyboardInterrupt", "stopped", "KeyboardInterrupt"),
    "error": ("raise ValueError('bad batch')", "failed", "bad batch"),
}


@pytest.mark.parametrize("case", list(EXIT_CASES))
def test_a_run_left_open_ends_with_the_status_the_script_exited_with(tmp_path, case):
    body, status, error = EXIT_CASES[case]
    script = ("import assay, sys\nr = assay.init(project='p', dir=sys.argv[1], capture=False,\n"
              "                 system_metrics_interval=0)\nprint(r.id, flush=True)\n"
              "r.log({'x': 1.0})\n" + body + "\n")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=False,
                         capture_output=True, text=True, timeout=120)
    run = assay.Api(tmp_path).run(out.stdout.split()[0])
    assert (run.status, error in run.error) == (status, True), (run.status, run.error)


FORK_CHILD = """
import multiprocessing as mp, sys, time, assay

def work():
    time.sleep(60)  # a pool task still running when the parent ends the pool

if __name__ == "__main__":
    r = assay.init(project="p", dir=sys.argv[1], capture=False, system_metrics_interval=0)
    for i in range(100):
        r.log({"x": float(i)})
    p = mp.get_context("fork").Process(target=work)
    p.start()
    time.sleep(0.5)
    p.terminate()  # SIGTERM to a child that inherited the parent's run
    p.join()
    import os
    pid = os.fork()
    if pid == 0:
        sys.exit(0)  # a plain forked child ends normally: its exit hooks run
    os.waitpid(pid, 0)
    for i in range(100, 200):
        r.log({"x": float(i)})
    r.finish()
    print(r.id, flush=True)
"""


def test_a_forked_child_never_finishes_or_unlocks_the_parents_run(tmp_path):
    # The child shares the WAL descriptor and its lock: finishing the run there would let
    # the ingester take the parent's live segment, losing everything logged after.
    out = subprocess.run([sys.executable, "-c", FORK_CHILD, str(tmp_path)], check=True,
                         capture_output=True, text=True, timeout=120)
    run_id = out.stdout.split()[0]
    run = assay.Api(tmp_path).run(run_id)
    assert run.status == "completed" and run.last_step == 199
    assert assay.Api(tmp_path).history(run_id, "x").height == 200


FORK_LOG = """
import multiprocessing as mp, sys, assay

r = None

def work(i):
    try:
        r.log({"worker": float(i)})
        r.flush()
        return "stored?"
    except assay.errors.ConflictError as e:
        return f"{e.message} | {e.hint}"

if __name__ == "__main__":
    r = assay.init(project="p", dir=sys.argv[1], capture=False, system_metrics_interval=0)
    r.log({"x": 1.0})
    with mp.get_context("fork").Pool(2) as pool:
        said = pool.map(work, range(4))
    r.log({"x": 2.0})
    r.finish()
    print(r.id, flush=True)
    for line in said:
        print(line, flush=True)
"""


def test_logging_from_a_forked_worker_is_refused_not_silently_dropped(tmp_path):
    """helper-64: a fork Pool's workers called the parent's run.log() and flush(); both
    returned, and nothing was stored (the run's writer thread does not exist in a child)."""
    out = subprocess.run([sys.executable, "-c", FORK_LOG, str(tmp_path)], check=True,
                         capture_output=True, text=True, timeout=120)
    run_id, *said = out.stdout.splitlines()
    assert len(said) == 4 and all("forked child" in x and "would store nothing" in x and
                                  "assay.init(project=..., group=...)" in x for x in said), said
    h = assay.Api(tmp_path).history(run_id)
    assert h["key"].to_list() == ["x", "x"] and assay.Api(tmp_path).run(run_id).status == \
        "completed"


INPROCESS_LEFT_OPEN = """
import sys, assay
r = assay.init(project="p", dir=sys.argv[1], capture=False, system_metrics_interval=0)
r.log({"x": 1.0})
print(r.id, flush=True)
"""


def test_an_in_process_run_left_to_the_exit_hook_becomes_queryable(tmp_path):
    env = {**os.environ, "ASSAY_INGEST": "inprocess"}
    out = subprocess.run([sys.executable, "-c", INPROCESS_LEFT_OPEN, str(tmp_path)], env=env,
                         check=True, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in out.stderr, out.stderr
    run_id, deadline = out.stdout.split()[0], time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if assay.Api(tmp_path).run(run_id).status == "completed":
                break
        except assay.errors.NotFoundError:
            pass
        time.sleep(0.2)
    assert assay.Api(tmp_path).run(run_id).status == "completed"
