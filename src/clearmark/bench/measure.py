"""Measuring helpers shared by the benchmarks: scratch buckets, peak RSS, latency statistics, the machine's record."""

from __future__ import annotations

import os
import platform
import re
import statistics
import threading
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from clearmark.settings import Settings


@contextmanager
def scratch_buckets(settings: Settings, *roles: str) -> Iterator[Settings]:
    """``settings`` whose ``<role>_bucket`` fields name new buckets, deleted with all objects afterwards.

    The benchmarks never write to the configured buckets (a running ``clearmark_inbox`` DAG
    watches the real inbox) and never delete a bucket they did not create.
    """
    from clearmark.storage import ObjectStore

    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    scratch = settings.model_copy(update={f"{role}_bucket": f"{prefix}-{role}" for role in roles})
    buckets = [getattr(scratch, f"{role}_bucket") for role in roles]
    store = ObjectStore(scratch)
    if taken := {b["Name"] for b in store.client.list_buckets().get("Buckets", [])} & set(buckets):
        raise RuntimeError(f"Scratch bucket(s) {', '.join(sorted(taken))} already exist; run the benchmark again (it picks new names).")
    try:
        store.ensure_buckets(buckets)
        yield scratch
    finally:
        for bucket in buckets:
            store.delete_bucket(bucket)


class PeakRss:
    """Highest RSS of this process while :meth:`sampling` is open (sampled every 20 ms)."""

    def __init__(self) -> None:
        self.peak = 0

    @contextmanager
    def sampling(self) -> Iterator[PeakRss]:
        import psutil

        process, stop = psutil.Process(), threading.Event()

        def sample() -> None:
            while not stop.wait(0.02):
                self.peak = max(self.peak, process.memory_info().rss)

        thread = threading.Thread(target=sample, daemon=True)
        self.peak = process.memory_info().rss
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()

    @property
    def mib(self) -> float:
        return round(self.peak / 2**20, 1)


def latency_ms(seconds: list[float]) -> dict[str, float]:
    """Mean, median and 95th percentile of ``seconds``, in milliseconds."""
    if not seconds:
        raise ValueError("no timings to summarise")
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(p95 * 1000, 2),
    }


def gpu_name() -> str | None:
    """The CUDA device's name, or ``None`` without one."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Environment switches that make a runtime use fewer vector instructions than the CPU has:
# torch's ATen kernels, oneDNN (inside torch and inside OpenVINO's CPU plugin), OpenVINO's own
# CPU kernels.  Figures measured under one emulate a lesser CPU; they are not that CPU's.
ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OV_CPU_MAX_ISA")
# /proc/cpuinfo flags, best first, and the instruction set each one names.
CPU_ISA_FLAGS = (("amx_tile", "AMX"), ("avx512_bf16", "AVX512 BF16"), ("avx512f", "AVX512"), ("avx2", "AVX2"))


def cpu_isa() -> str:
    """The best vector instruction set of the CPU itself, whatever the environment caps (``DEFAULT``: below AVX2 or unknown)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((set(line.split(":", 1)[1].split()) for line in cpuinfo if line.startswith("flags")), set())
    except OSError:
        flags = set()
    return next((name for flag, name in CPU_ISA_FLAGS if flag in flags), "DEFAULT")


def isa_caps() -> dict[str, str]:
    """The instruction-set caps this process's environment sets (:data:`ISA_CAPS`), by variable."""
    return {name: os.environ[name] for name in ISA_CAPS if os.environ.get(name)}


def machine_slug() -> str:
    """A file-name-safe description of this machine, e.g. ``2cpu-amd-epyc`` or ``16cpu-nvidia-h100-80gb-hbm3``."""
    parts = [f"{os.cpu_count()}cpu", gpu_name() or cpu_name()]
    return re.sub(r"[^a-z0-9]+", "-", " ".join(parts).lower()).strip("-")[:60]


def machine_record() -> dict[str, Any]:
    """What every results file records about the machine: CPU model, torch's CPU capability
    (the vector instructions its kernels use: speed figures depend on it), the CPU's own best
    instruction set and any caps the environment put below it, cores and GPU."""
    import torch

    from clearmark.model.inference import usable_cores

    return {
        "slug": machine_slug(), "cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_isa": cpu_isa(), "isa_caps": isa_caps(),
        "cpu_count": os.cpu_count(), "usable_cores": usable_cores(), "gpu": gpu_name(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__,
    }  # fmt: skip
