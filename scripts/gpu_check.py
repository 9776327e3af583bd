"""GPU check for a machine with NVIDIA GPUs (run on the lent device when a task has one).

1. NVML through assay's GpuProbe: every fast field of every GPU, and its cost per sample.
2. A real GPU training run (the digits MLP on CUDA), tracked with system metrics every
   0.5 s; prints the sys/gpu.* keys that reached the store and their last values, and
   which GPUs the run's process held memory on (``process_memory_used_mb``).

    .venv/bin/python scripts/gpu_check.py        (exit 1 if anything is missing)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time


def main() -> int:
    from assay.sdk.system import GpuProbe

    probe = GpuProbe()
    if not probe.available:
        print("NVML not available: no NVIDIA driver or GPU here")
        return 1
    costs = []
    for _ in range(50):
        t0 = time.perf_counter()
        sample = probe.sample()
        costs.append(time.perf_counter() - t0)
    print(f"GpuProbe.sample(): {len(sample)} fields, median {statistics.median(costs) * 1e3:.3f} ms")
    for k, v in sorted(sample.items()):
        print(f"  {k} = {v:.1f}")

    import assay
    import torch
    from assay.examples import digits

    if not torch.cuda.is_available():
        print("torch sees no CUDA device")
        return 1
    with tempfile.TemporaryDirectory() as d:
        run = assay.init(project="gpu-check", dir=d, system_metrics_interval=0.5,
                         config={"lr": 0.05, "hidden": 1024, "epochs": 40, "device": "cuda"})
        t0 = time.perf_counter()
        res = digits.train(dict(run.config), run)
        print(f"trained on {torch.cuda.get_device_name(0)} in {time.perf_counter() - t0:.1f} s: {res}")
        run.finish()
        h = assay.Api(d).history(run.id)
        gpu = h.filter(h["key"].str.starts_with("sys/gpu."))
        last = gpu.group_by("key").agg(h["value"].last(), h["step"].count().alias("n")).sort("key")
        print(last)
        mine = [k for k in last["key"].to_list() if k.endswith(".process_memory_used_mb")]
        print(f"GPUs this run used (process memory): {mine or 'none reported'}")
        return 0 if gpu.height else 1


if __name__ == "__main__":
    sys.exit(main())
