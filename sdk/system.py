"""System metrics: a sampler thread logging ``sys/...`` keys through the run's buffer.

CPU, memory, disk and network come from psutil; GPUs from NVML (``nvidia-ml-py``, imported
as ``pynvml``). Only NVML calls that take microseconds are on this path: PCIe throughput
(~20 ms) and total energy (~4 ms) block the NVML lock and are never sampled here. Without an
NVML driver no GPU keys are logged and nothing is raised.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import psutil

__all__ = ["GpuProbe", "SystemSampler"]

log = logging.getLogger(__name__)


class GpuProbe:
    """Reads fast NVML fields of every GPU; ``available`` is False without NVML.

    Every GPU of the machine is read (the fleet view shows hosts whole). Which of them this
    run uses shows as ``sys/gpu.N.process_memory_used_mb``: the GPU memory held by this
    process and its children (data-loader workers, a launcher's trainers), logged for GPUs
    where they hold some, and once as 0 when they let a GPU go (so the run's last value does
    not keep it on that GPU). NVML names processes by the host's pids, so inside a container
    with its own pid namespace the key is absent.
    """

    def __init__(self, nvml: Any | None = None) -> None:
        self.available = False
        self._held: set[int] = set()  # GPUs this process family held memory on last sample
        self._handles: list[Any] = []
        self._nvml: Any = None
        try:
            nv: Any = nvml
            if nv is None:
                import pynvml as nv  # type: ignore[no-redef]
            nv.nvmlInit()
            self._nvml = nv
            self._handles = [nv.nvmlDeviceGetHandleByIndex(i)
                             for i in range(nv.nvmlDeviceGetCount())]
            self.available = True
        except Exception as exc:  # noqa: BLE001 - NVMLError (no driver / no GPU) or ImportError
            log.debug("NVML unavailable: %s", exc)

    def sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if not self.available:
            return out
        nv = self._nvml
        ours = _Family()  # per sample: which GPU processes descend from this one
        held: set[int] = set()
        for i, h in enumerate(self._handles):
            p = f"sys/gpu.{i}."
            try:
                util = nv.nvmlDeviceGetUtilizationRates(h)
                out[p + "utilization_percent"] = float(util.gpu)
                out[p + "memory_utilization_percent"] = float(util.memory)
            except nv.NVMLError as e:  # a field this GPU does not support
                log.debug("NVML utilization: %s", e)
            for name, read, args, scale in (
                ("temperature_c", nv.nvmlDeviceGetTemperature, (h, nv.NVML_TEMPERATURE_GPU), 1.0),
                ("power_w", nv.nvmlDeviceGetPowerUsage, (h,), 1e-3),  # milliwatts
                ("sm_clock_mhz", nv.nvmlDeviceGetClockInfo, (h, nv.NVML_CLOCK_SM), 1.0),
            ):
                try:
                    out[p + name] = float(read(*args)) * scale
                except nv.NVMLError as e:
                    log.debug("NVML %s: %s", name, e)
            try:
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                out[p + "memory_used_mb"] = mem.used / 2**20
                out[p + "memory_total_mb"] = mem.total / 2**20
            except nv.NVMLError as e:
                log.debug("NVML memory: %s", e)
            used = self._process_memory(h, ours)
            if used is not None:
                out[p + "process_memory_used_mb"] = used / 2**20
                held.add(i)
            elif i in self._held:
                out[p + "process_memory_used_mb"] = 0.0  # let go since the last sample
        self._held = held
        return out

    def _process_memory(self, handle: Any, pids: _Family) -> int | None:
        """Bytes of this GPU's memory held by this process's family (compute processes),
        or None when none of them is on it or NVML cannot say."""
        nv = self._nvml
        try:
            procs = nv.nvmlDeviceGetComputeRunningProcesses(handle)
        except (nv.NVMLError, AttributeError) as e:  # an old driver, MIG, a binding without it
            log.debug("NVML processes: %s", e)
            return None
        ours = [getattr(q, "usedGpuMemory", None) for q in procs if getattr(q, "pid", None) in pids]
        if not ours:
            return None
        # usedGpuMemory is None where the driver hides it (WDDM): on the GPU, amount unknown.
        return sum(int(b) for b in ours if isinstance(b, int))


class _Family:
    """``pid in family``: whether a pid NVML reports is this process or a descendant. Walks
    that pid's parents (a few reads of /proc), never the whole process table: the cost
    follows the GPUs' processes, not the host's."""

    def __init__(self) -> None:
        self.me = os.getpid()
        self._known: dict[int, bool] = {self.me: True}

    def __contains__(self, pid: object) -> bool:
        if not isinstance(pid, int):
            return False
        if pid not in self._known:
            try:
                self._known[pid] = any(p.pid == self.me for p in psutil.Process(pid).parents())
            except psutil.Error:  # gone, or another pid namespace's number
                self._known[pid] = False
        return self._known[pid]


class SystemSampler(threading.Thread):
    """Calls ``emit(metrics)`` every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, emit: Callable[[dict[str, float]], None], interval: float,
                 gpu: GpuProbe | None = None) -> None:
        super().__init__(name="assay-system", daemon=True)
        self._emit = emit
        self._interval = interval
        self._stop_evt = threading.Event()
        self._proc = psutil.Process(os.getpid())
        self._gpu = gpu
        self._last_io: tuple[Any, Any, float] | None = None
        self._proc.cpu_percent(None)  # prime the counters: the first reading is meaningless
        psutil.cpu_percent(None)

    def run(self) -> None:
        if self._gpu is None:
            self._gpu = GpuProbe()
        while not self._stop_evt.wait(self._interval):
            try:
                self._emit(self.sample())
            except Exception:
                log.debug("system sample failed", exc_info=True)

    def stop(self) -> None:
        self._stop_evt.set()

    def sample(self) -> dict[str, float]:
        import time

        p = self._proc
        with p.oneshot():
            rss = p.memory_info().rss
            proc_cpu = p.cpu_percent(None)
            threads = p.num_threads()
        vm = psutil.virtual_memory()
        out = {
            "sys/cpu.process_percent": proc_cpu,
            "sys/cpu.system_percent": psutil.cpu_percent(None),
            "sys/memory.process_rss_mb": rss / 2**20,
            "sys/memory.system_used_percent": vm.percent,
            "sys/memory.system_available_mb": vm.available / 2**20,
            "sys/proc.threads": float(threads),
        }
        now = time.monotonic()
        disk = psutil.disk_io_counters()
        net = psutil.net_io_counters()
        if self._last_io is not None and disk is not None and net is not None:
            d0, n0, t0 = self._last_io
            dt = max(now - t0, 1e-6)
            out["sys/disk.read_mb_s"] = (disk.read_bytes - d0.read_bytes) / dt / 2**20
            out["sys/disk.write_mb_s"] = (disk.write_bytes - d0.write_bytes) / dt / 2**20
            out["sys/network.recv_mb_s"] = (net.bytes_recv - n0.bytes_recv) / dt / 2**20
            out["sys/network.sent_mb_s"] = (net.bytes_sent - n0.bytes_sent) / dt / 2**20
        self._last_io = (disk, net, now)
        if self._gpu is not None:
            out.update(self._gpu.sample())
        return out
