"""Timing, memory, FLOPs and environment records for honest benchmarks.

Every timer synchronises the device it measures, runs warm-up iterations that are not
recorded, repeats the measurement and reports median, p10/p90 and a bootstrap 95% interval
of the median. Compare configurations as ratios measured side by side in one run, each configuration
in its own process: `rifelab.measure.harness`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

__all__ = [
    "resolve_device",
    "synchronize",
    "Timing",
    "time_callable",
    "speedup_ci",
    "PeakMemory",
    "count_flops",
    "count_parameters",
    "environment_record",
    "device_name",
    "gpu_utilisation",
]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn 'auto' | 'cpu' | 'cuda[:i]' | 'mps' into a torch.device, checking availability."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {str(device)!r} was requested but CUDA is not available in this torch build "
            f"({torch.__version__}); use device='cpu' or 'auto'."
        )
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError(f"device {str(device)!r} was requested but MPS is not available; use 'cpu' or 'auto'.")
    if dev.type not in {"cpu", "cuda", "mps"}:
        raise ValueError(f"unsupported device {str(device)!r}: expected auto, cpu, cuda or mps")
    return dev


def synchronize(device: str | torch.device) -> None:
    """Block until all queued work on `device` has finished (no-op on CPU)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


@dataclass
class Timing:
    """Summary of repeated wall-clock measurements, in seconds."""

    samples: list[float]
    median: float
    p10: float
    p90: float
    ci95_low: float
    ci95_high: float
    warmup: int
    repeats: int

    @property
    def fps(self) -> float:
        """Calls per second at the median latency."""
        return 1.0 / self.median if self.median > 0 else float("inf")

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat dict in milliseconds (plus fps), suitable for a table row."""
        return {
            f"{prefix}median_ms": self.median * 1e3,
            f"{prefix}p10_ms": self.p10 * 1e3,
            f"{prefix}p90_ms": self.p90 * 1e3,
            f"{prefix}ci95_low_ms": self.ci95_low * 1e3,
            f"{prefix}ci95_high_ms": self.ci95_high * 1e3,
            f"{prefix}fps": self.fps,
            f"{prefix}repeats": self.repeats,
        }

    @classmethod
    def from_samples(cls, samples: list[float], warmup: int = 0, seed: int = 0, n_boot: int = 2000) -> "Timing":
        """Summarise samples: median, p10/p90 and a bootstrap 95% interval of the median."""
        if not samples:
            raise ValueError("no timing samples: repeats must be >= 1")
        arr = np.asarray(samples, dtype=np.float64)
        rng = np.random.default_rng(seed)
        if arr.size > 1:
            boots = np.median(rng.choice(arr, size=(n_boot, arr.size), replace=True), axis=1)
            lo, hi = np.percentile(boots, [2.5, 97.5])
        else:
            lo = hi = float(arr[0])
        return cls(
            samples=[float(x) for x in arr],
            median=float(np.median(arr)),
            p10=float(np.percentile(arr, 10)),
            p90=float(np.percentile(arr, 90)),
            ci95_low=float(lo),
            ci95_high=float(hi),
            warmup=warmup,
            repeats=int(arr.size),
        )


def time_callable(
    fn: Callable[[], Any],
    device: str | torch.device = "cpu",
    warmup: int = 3,
    repeats: int = 10,
    min_time_s: float = 0.0,
) -> Timing:
    """Time `fn()` on `device`: `warmup` unrecorded calls, then `repeats` synchronised calls.

    If `min_time_s` > 0, keeps repeating until that much measured time has passed as well.
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"warmup must be >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    dev = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(dev)
    samples: list[float] = []
    total = 0.0
    while len(samples) < repeats or total < min_time_s:
        t0 = time.perf_counter()
        fn()
        synchronize(dev)
        dt = time.perf_counter() - t0
        samples.append(dt)
        total += dt
    return Timing.from_samples(samples, warmup=warmup)


def speedup_ci(base: Timing, other: Timing, n_boot: int = 2000, seed: int = 0,
               paired: bool = False) -> tuple[float, float, float]:
    """Speedup of `other` over `base` (ratio of medians) with a bootstrap 95% interval.

    With `paired=True` (samples of the harness's interleaved rounds, same rounds and repeats, so sample i of both was taken in
    the same round), the speedup is the median of the per-sample ratios and the bootstrap resamples those ratios:
    a change of machine load between rounds hits both sides of a ratio alike and drops out of the interval.
    """
    a, b = np.asarray(base.samples), np.asarray(other.samples)
    if paired and a.size == b.size and a.size >= 2:
        r = a / b
        rng = np.random.default_rng(seed)
        lo, hi = np.percentile(np.median(rng.choice(r, size=(n_boot, r.size)), axis=1), [2.5, 97.5])
        return float(np.median(r)), float(lo), float(hi)
    ratio = float(np.median(a) / np.median(b))
    if a.size < 2 or b.size < 2:
        return ratio, ratio, ratio
    rng = np.random.default_rng(seed)
    boots = (np.median(rng.choice(a, size=(n_boot, a.size)), axis=1)
             / np.median(rng.choice(b, size=(n_boot, b.size)), axis=1))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return ratio, float(lo), float(hi)


def _cpu_peak_rss_bytes() -> int:
    """Peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _cpu_reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False where unsupported (non-Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _cpu_vmhwm_bytes() is not None
    except OSError:
        return False


def _cpu_vmhwm_bytes() -> int | None:
    """Peak RSS since the last reset (Linux /proc/self/status VmHWM), or None where unavailable."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cpu_current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return _cpu_peak_rss_bytes()


@dataclass
class PeakMemory:
    """Context manager measuring peak memory on a device while the block runs.

    cuda: torch.cuda.max_memory_allocated (reset on entry); mps: driver allocated memory
    at exit (MPS has no peak counter); cpu on Linux: peak RSS of the process while the block ran
    (the kernel's VmHWM counter is reset on entry); cpu elsewhere: process peak RSS so far, which
    is monotonic over the process life (`kind` says which), and `delta_bytes` the growth since entry.
    """

    device: str | torch.device = "cpu"
    peak_bytes: int = 0
    start_bytes: int = 0
    kind: str = field(default="", init=False)

    def __enter__(self) -> "PeakMemory":
        dev = torch.device(self.device)
        synchronize(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            self.start_bytes = torch.cuda.memory_allocated(dev)
            self.kind = "cuda_max_allocated"
        elif dev.type == "mps":
            self.start_bytes = torch.mps.driver_allocated_memory()
            self.kind = "mps_driver_allocated"
        else:
            self.start_bytes = _cpu_current_rss_bytes()
            self.kind = "cpu_peak_rss_block" if _cpu_reset_peak_rss() else "cpu_peak_rss_process"
        return self

    def __exit__(self, *exc: object) -> None:
        dev = torch.device(self.device)
        synchronize(dev)
        if dev.type == "cuda":
            self.peak_bytes = int(torch.cuda.max_memory_allocated(dev))
        elif dev.type == "mps":
            self.peak_bytes = int(torch.mps.driver_allocated_memory())
        elif self.kind == "cpu_peak_rss_block":
            self.peak_bytes = _cpu_vmhwm_bytes() or _cpu_peak_rss_bytes()
        else:
            self.peak_bytes = _cpu_peak_rss_bytes()

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20

    @property
    def delta_bytes(self) -> int:
        return max(0, self.peak_bytes - self.start_bytes)


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in module.parameters())


def count_flops(
    module: torch.nn.Module,
    input_constructor: Callable[[tuple], dict[str, Any]],
    input_shape: tuple = (1,),
) -> tuple[float, int]:
    """(MACs, params) of one forward pass through ptflops' pytorch backend.

    `input_constructor(input_shape)` returns the keyword arguments of `module.forward`.
    Functional ops (grid_sample, interpolate) are counted by ptflops' functional hooks.
    """
    from ptflops import get_model_complexity_info  # optional: absent on lent GPU machines (scripts/device_run.sh)

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        macs, params = get_model_complexity_info(
            module,
            input_shape,
            input_constructor=input_constructor,
            as_strings=False,
            print_per_layer_stat=False,
            verbose=False,
            backend="pytorch",
        )
    return float(macs), int(params)


def device_name(device: str | torch.device = "cpu") -> str:
    """Human-readable name of the device (GPU model, or the CPU model)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if dev.type == "mps":
        return f"Apple MPS ({_cpu_model()})"
    return _cpu_model()


def device_key(device: str | torch.device = "cpu") -> str:
    """Filesystem-safe key for results keyed by device, e.g. 'cpu-amd-epyc-7b13-2t' or 'cuda-nvidia-h100'."""
    dev = torch.device(device)
    name = device_name(dev).lower()
    safe = "".join(c if c.isalnum() else "-" for c in name)
    while "--" in safe:
        safe = safe.replace("--", "-")
    safe = safe.strip("-")[:48]
    if dev.type == "cpu":
        return f"cpu-{safe}-{torch.get_num_threads()}t"
    return f"{dev.type}-{safe}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.check_output(["sysctl", "-n", "machdep.cpu.brand_string"], text=True).strip()
        except (OSError, subprocess.CalledProcessError):
            pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _git_commit() -> str:
    """Commit of the working tree (suffix '-dirty' if tracked files changed), or 'unknown'."""
    root = Path(__file__).resolve().parents[2]  # the project root (this file is rifelab/measure/profiling.py)
    try:
        commit = subprocess.check_output(
            ["git", "rev-parse", "HEAD"], cwd=root, text=True, stderr=subprocess.DEVNULL
        ).strip()
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", "rifelab"], cwd=root, stderr=subprocess.DEVNULL
        ).returncode
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("RIFELAB_GIT_COMMIT", "unknown")


def gpu_utilisation(device: str | torch.device = "cuda") -> dict[str, float] | None:
    """GPU and memory utilisation in percent through nvidia-ml-py, or None when unavailable."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    try:
        import pynvml  # provided by nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(dev.index or 0)
        util = pynvml.nvmlDeviceGetUtilizationRates(handle)
        return {"gpu_util_pct": float(util.gpu), "mem_util_pct": float(util.memory)}
    except Exception:  # noqa: BLE001 - NVML errors vary by driver; absence is the honest answer
        return None


def environment_record(device: str | torch.device = "cpu") -> dict[str, Any]:
    """Everything a result file must carry: device, versions, CPU, threads, git commit, time."""
    dev = torch.device(device)
    rec: dict[str, Any] = {
        "device": str(dev),
        "device_name": device_name(dev),
        "device_key": device_key(dev),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "git_commit": _git_commit(),
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    util = gpu_utilisation(dev)
    if util is not None:
        rec.update(util)
    return rec
