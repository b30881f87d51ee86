"""Profiling: timing statistics, call counts, memory, environment record, device checks."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from rifelab.measure.profiling import PeakMemory, Timing, environment_record, resolve_device, time_callable


def test_timing_statistics():
    t = Timing.from_samples([0.1, 0.2, 0.3, 0.4, 10.0], warmup=1)
    assert t.median == 0.3 and t.p10 == pytest.approx(0.14) and t.p90 == pytest.approx(6.16)
    assert t.ci95_low <= t.median <= t.ci95_high and t.fps == pytest.approx(1 / 0.3)
    with pytest.raises(ValueError, match="no timing samples"):
        Timing.from_samples([])


def test_time_callable_counts_warmup_and_repeats():
    calls = []
    t = time_callable(lambda: calls.append(1), warmup=2, repeats=5)
    assert len(calls) == 7 and t.repeats == 5 and len(t.samples) == 5
    with pytest.raises(ValueError, match="repeats >= 1"):
        time_callable(lambda: None, repeats=0)


def test_peak_memory_cpu_sees_allocation():
    with PeakMemory("cpu") as mem:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB
        block.sum()
    assert mem.kind.startswith("cpu_peak_rss") and mem.peak_bytes >= 64 * 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-block peak RSS needs Linux /proc")
def test_peak_memory_cpu_is_per_block_on_linux():
    with PeakMemory("cpu") as big:
        block = np.ones(256 * 2**20 // 8)  # 256 MiB, then freed
        block.sum()
    del block
    with PeakMemory("cpu") as small:
        np.ones(16 * 2**20 // 8).sum()
    assert big.kind == small.kind == "cpu_peak_rss_block"
    # a process-wide high-water mark would report the 256 MiB block again
    assert small.peak_bytes < big.peak_bytes - 128 * 2**20


def test_environment_record_fields():
    rec = environment_record("cpu")
    for key in ("device_name", "device_key", "torch_version", "cpu_model", "cpu_threads", "git_commit"):
        assert rec[key] not in (None, "")
    assert rec["torch_version"] == torch.__version__ and rec["device_key"].startswith("cpu-")


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises((ValueError, RuntimeError)):
        resolve_device("tpu")
