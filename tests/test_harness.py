"""The timing harness: one process per configuration, interleaved rounds, load record, checks and the noisy flag.

No test here depends on how fast anything runs: disturbances are injected (`Slowed`, sleeping workloads), and the
assertions are on what the harness records and flags.
"""

from __future__ import annotations

import os

import pytest

from rifelab.measure.harness import Harness, NoiseLimits, noise_problems, time_interleaved
from rifelab.measure.load import LoadProbe, LoadRecord
from rifelab.measure.worker import Sleep, Slowed

QUIET = NoiseLimits(max_spread=1.5, max_other_cpu=None, max_steal=None, attempts=3)  # the shared CI box is busy


def test_each_configuration_runs_in_its_own_worker_and_returns_outputs():
    with Harness.isolated({"a": Sleep(0.01, value=[1, 2]), "b": Sleep(0.01, value="out-b")}) as h:
        t = h.measure(warmup=1, rounds=3, baseline="a")
        pids = set(t.workers.values())
        assert set(t.workers) == {"a", "b"} and len(pids) == 2 and os.getpid() not in pids
        assert all(t.timings[n].repeats == 3 for n in "ab")
        assert set(t.first_call_s) == {"a", "b"}
        assert isinstance(t.load, LoadRecord) and t.load.seconds > 0
        assert h.outputs("a")[0] == [1, 2] and h.outputs("b")[0] == "out-b"
        procs = [h.runners[n].proc for n in "ab"]
    assert all(p.poll() is not None for p in procs), "workers must end when the harness closes"


def test_a_failing_configuration_is_stopped_with_its_reason_and_the_others_go_on():
    with Harness.isolated({"ok": Sleep(0.005), "bad": Sleep(0.005, fail="no such engine here")}) as h:
        assert h.errors["bad"].kind == "RuntimeError"
        t = h.measure(warmup=0, rounds=2)
    assert set(t.timings) == {"ok"}
    assert t.stopped["bad"].startswith("failed: RuntimeError: no such engine here")


def test_clean_run_carries_no_flag():
    with Harness.isolated({"a": Sleep(0.02), "b": Sleep(0.03)}) as h:
        t = h.measure_checked(QUIET, warmup=1, rounds=5)
    assert not t.noisy and t.problems == [] and t.attempts == 1


def test_injected_slowdown_is_re_measured_a_bounded_number_of_times_then_flagged():
    disturbed = Slowed(Sleep(0.01), extra_s=0.1, every=2)  # every other call disturbed: the repeats spread
    with Harness.isolated({"base": Sleep(0.01), "disturbed": disturbed}) as h:
        t = h.measure_checked(QUIET, warmup=0, rounds=4, baseline="base")
    assert t.noisy and t.attempts == QUIET.attempts == len(t.history)
    assert any(p.startswith("disturbed: repeats spread") for p in t.problems)
    assert not any(p.startswith("base:") for p in t.problems)


def test_caller_checks_join_the_noise_checks():
    def pipeline_no_faster_than_model(t):
        return ["pipeline faster than the model inside it"] if t.timings["pipeline"].median < t.timings["model"].median else []

    with Harness.isolated({"model": Slowed(Sleep(0.0), 0.05), "pipeline": Sleep(0.01)}) as h:
        t = h.measure_checked(QUIET, pipeline_no_faster_than_model, warmup=0, rounds=3)
    assert t.problems == ["pipeline faster than the model inside it"] and t.attempts == 3


def test_outside_load_fails_the_load_check():
    from rifelab.measure.harness import InterleavedTiming

    busy = LoadRecord(10.0, 2, 1.9, 0.3, other_cpu=1.4, own_cpu=1.0, steal_share=0.12)
    problems = noise_problems(InterleavedTiming(timings={}, load=busy), NoiseLimits(max_other_cpu=0.5, max_steal=0.05))
    assert len(problems) == 2 and "1.40 cores" in problems[0] and "steal" in problems[1]
    assert noise_problems(InterleavedTiming(timings={}, load=busy), QUIET) == []


def test_load_probe_records_the_window():
    rec = LoadProbe().start().stop()
    assert rec.seconds >= 0 and rec.cpu_count >= 1
    if os.path.exists("/proc/stat"):
        assert rec.other_cpu is not None and rec.other_cpu >= 0 and rec.steal_share is not None
    assert "CPUs" in rec.describe()


def test_in_process_rounds_stop_a_raising_callable_and_a_too_slow_one():
    import time

    def boom():
        raise ValueError("broken")

    t = time_interleaved({"base": lambda: None, "boom": boom, "slow": lambda: time.sleep(0.05)},
                         warmup=1, rounds=2, baseline="base", max_slowdown=3.0)
    assert set(t.timings) == {"base"} and t.workers == {"base": os.getpid()}
    assert t.stopped["boom"] == "failed: ValueError: broken"
    assert t.stopped["slow"].startswith("too slow")


def test_noise_limits_are_validated():
    with pytest.raises(ValueError, match="max_spread"):
        NoiseLimits(max_spread=1.0)
