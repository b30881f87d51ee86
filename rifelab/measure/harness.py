"""The timing harness: configurations timed side by side, each in its own process, one computing at a time.

    with Harness.isolated({"fp32": InterpolateWorkload(spec_a), "int8": InterpolateWorkload(spec_b)}) as h:
        h.prepare({"fp32": inputs, "int8": inputs})
        timing = h.measure_checked(NoiseLimits(), baseline="fp32", warmup=1, rounds=5)
        out, facts = h.outputs("int8")

Why separate processes: timed in one process, the engines' thread pools (OpenVINO's, ONNX Runtime's) stay alive
and compete with PyTorch's for the same cores, which slowed PyTorch FP32 eager by 11-14% on a 2-core CPU and
overstated every speedup. Each worker (`rifelab.measure.worker`) loads, compiles or calibrates its configuration
once; the coordinator warms every worker up, then runs interleaved rounds (one call of every configuration per
round, in turn, the others idle), so a change of machine load hits all alike and their ratios stay honest.
Quality is scored by the caller from the outputs the workers return.

Every timing carries a `LoadRecord` (load average, other processes' CPU time, steal) and the worker id (pid) of
each configuration. `measure_checked` checks the run (spread of the repeats, outside load, and the caller's own
checks), re-measures a bounded number of times and, if a check still fails, returns the timing with its
`problems`: the caller publishes it flagged `noisy`, never as a clean result.

`time_interleaved` runs the same rounds on in-process callables (`LocalRunner`): for steps that share one engine
and its data (layer-level profiles, co-alignment solvers), where no other engine's thread pool is alive.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol

import torch
from tqdm.auto import tqdm

from rifelab.measure.load import LoadProbe, LoadRecord
from rifelab.measure.profiling import Timing, synchronize
from rifelab.measure.worker import recv, send

log = logging.getLogger(__name__)

__all__ = ["Runner", "LocalRunner", "WorkerRunner", "WorkerError", "InterleavedTiming", "NoiseLimits",
           "Harness", "noise_limits", "noise_problems", "time_interleaved"]


class WorkerError(RuntimeError):
    """A worker's command failed; `kind` is the exception type name raised in the worker."""

    def __init__(self, kind: str, message: str, trace: str = ""):
        super().__init__(f"{kind}: {message}" if not message.startswith(kind) else message)
        self.kind, self.trace = kind, trace


class Runner(Protocol):
    """Where a configuration runs: `pid` is recorded per result row."""

    pid: int

    def setup(self) -> dict[str, Any]: ...
    def prepare(self, inputs: Any) -> None: ...
    def call(self, n: int) -> list[float]: ...
    def outputs(self) -> tuple[Any, dict[str, Any]]: ...
    def close(self) -> None: ...


class LocalRunner:
    """An in-process callable, timed with the device synchronised after each call."""

    def __init__(self, fn: Callable[[], Any], device: str | torch.device = "cpu"):
        self.fn, self.device, self.pid = fn, torch.device(device), os.getpid()

    def setup(self) -> dict[str, Any]:
        return {}

    def prepare(self, inputs: Any) -> None:
        pass

    def call(self, n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.fn()
            synchronize(self.device)
            out.append(time.perf_counter() - t0)
        return out

    def outputs(self) -> tuple[Any, dict[str, Any]]:
        return None, {}

    def close(self) -> None:
        pass


def _worker_env() -> dict[str, str]:
    """The coordinator's environment, with this rifelab first on the path (the worker imports the same code)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return env


class WorkerRunner:
    """A workload in its own process (`python -m rifelab.measure.worker`); see that module for the protocol."""

    def __init__(self, workload: Any):
        self.workload = workload
        self.proc = subprocess.Popen([sys.executable, "-m", "rifelab.measure.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=_worker_env())
        self.pid = self.proc.pid

    def _ask(self, *msg: Any) -> Any:
        try:
            send(self.proc.stdin, msg)
            reply = recv(self.proc.stdout)
        except (EOFError, BrokenPipeError, OSError) as exc:
            code = self.proc.poll()
            raise WorkerError("WorkerDied", f"worker {self.pid} ended (exit code {code}) during {msg[0]!r}: "
                              f"{exc}; its stderr above says why") from None
        if reply[0] == "error":
            kind = reply[1].split(":", 1)[0]
            raise WorkerError(kind, reply[1], reply[2])
        return reply[1]

    def setup(self) -> dict[str, Any]:
        return self._ask("setup", self.workload)

    def prepare(self, inputs: Any) -> None:
        self._ask("prepare", inputs)

    def call(self, n: int) -> list[float]:
        return self._ask("call", n)

    def outputs(self) -> tuple[Any, dict[str, Any]]:
        return self._ask("outputs")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._ask("close")
                self.proc.wait(timeout=30)
            except (WorkerError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for fh in (self.proc.stdin, self.proc.stdout):
            if fh:
                fh.close()


@dataclass
class InterleavedTiming:
    """Timings of the configurations that ran, reasons for those that did not, who ran them, and the load."""

    timings: dict[str, Timing]
    stopped: dict[str, str] = field(default_factory=dict)
    first_call_s: dict[str, float] = field(default_factory=dict)
    workers: dict[str, int] = field(default_factory=dict)  # configuration -> pid of the process that ran it
    load: LoadRecord | None = None
    problems: list[str] = field(default_factory=list)  # failed checks of the attempt published
    attempts: int = 1
    history: list[dict[str, Any]] = field(default_factory=list)  # every attempt: its problems and load

    @property
    def noisy(self) -> bool:
        """True when a consistency check still failed after the re-measurements: publish flagged, not clean."""
        return bool(self.problems)


@dataclass(frozen=True)
class NoiseLimits:
    """When a timing counts as disturbed, and how often to re-measure before publishing it flagged.

    max_spread: p90/p10 of one configuration's repeats; max_other_cpu: cores other processes used on average while
    we timed (None: not checked); max_steal: share of CPU time stolen by the hypervisor; attempts: timings in all
    (the first and the re-measurements).
    """

    max_spread: float = 1.5
    max_other_cpu: float | None = 0.5
    max_steal: float | None = 0.05
    attempts: int = 3

    def __post_init__(self) -> None:
        if self.max_spread <= 1.0 or self.attempts < 1:
            raise ValueError(f"max_spread must be > 1 and attempts >= 1; got {self.max_spread}, {self.attempts}")


def noise_limits(values: Mapping[str, Any] | None) -> NoiseLimits:
    """NoiseLimits from a study's `noise` mapping (unknown keys are an error that lists the known ones)."""
    known = {f for f in NoiseLimits.__dataclass_fields__}
    values = dict(values or {})
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"noise: unknown key(s) {unknown}; known: {sorted(known)}")
    try:
        return NoiseLimits(**values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"noise: {exc}") from None


def noise_problems(t: InterleavedTiming, limits: NoiseLimits) -> list[str]:
    """The checks every timing gets: spread of the repeats and the outside load."""
    out = []
    for name, tm in t.timings.items():
        if tm.repeats >= 3 and tm.p10 > 0 and tm.p90 / tm.p10 > limits.max_spread:
            out.append(f"{name}: repeats spread p90/p10 = {tm.p90 / tm.p10:.2f} (> {limits.max_spread:g}; "
                       f"p10 {tm.p10 * 1e3:.1f} ms, p90 {tm.p90 * 1e3:.1f} ms)")
    ld = t.load
    if ld is not None and limits.max_other_cpu is not None and ld.other_cpu is not None \
            and ld.other_cpu > limits.max_other_cpu:
        out.append(f"other processes used {ld.other_cpu:.2f} cores while timing (> {limits.max_other_cpu:g})")
    if ld is not None and limits.max_steal is not None and ld.steal_share is not None \
            and ld.steal_share > limits.max_steal:
        out.append(f"steal time {ld.steal_share:.1%} while timing (> {limits.max_steal:.0%})")
    return out


class Harness:
    """Coordinator of one runner per configuration; use as a context manager (closes the workers)."""

    def __init__(self, runners: Mapping[str, Runner], progress: bool = False):
        self.runners = dict(runners)
        self.progress = progress
        self.stopped: dict[str, str] = {}
        self.errors: dict[str, WorkerError] = {}
        self.facts: dict[str, dict[str, Any]] = {}

    @classmethod
    def isolated(cls, workloads: Mapping[str, Any], progress: bool = False) -> "Harness":
        """One worker process per workload, started together, then set up one after another."""
        h = cls({}, progress)
        try:
            for name, w in workloads.items():
                h.runners[name] = WorkerRunner(w)
            for name in tqdm(list(h.runners), desc="load configurations", disable=not progress, leave=False):
                h._try(name, lambda r: h.facts.__setitem__(name, h.runners[name].setup()))
        except BaseException:
            h.close()
            raise
        return h

    def _try(self, name: str, fn: Callable[[Runner], Any]) -> bool:
        """Run fn(runner); a failure stops the configuration (reason kept), never the others."""
        try:
            fn(self.runners[name])
            return True
        except WorkerError as exc:
            self.errors[name] = exc
            self.stopped[name] = f"failed: {exc}"
            log.warning("configuration %s stopped: %s", name, exc)
            return False

    @property
    def active(self) -> list[str]:
        return [n for n in self.runners if n not in self.stopped]

    def __enter__(self) -> "Harness":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for r in self.runners.values():
            r.close()

    def prepare(self, inputs: Mapping[str, Any]) -> None:
        """Give each named configuration its inputs for the next timings (e.g. the frames of one resolution)."""
        for name, x in inputs.items():
            if name in self.active:
                self._try(name, lambda r: r.prepare(x))

    def outputs(self, name: str) -> tuple[Any, dict[str, Any]]:
        """What configuration `name` computes on its prepared inputs, and facts (memory, applied switches...)."""
        return self.runners[name].outputs()

    def measure(
        self,
        names: Iterable[str] | None = None,
        warmup: int = 1,
        rounds: int = 5,
        repeats: int = 1,
        baseline: str | None = None,
        max_slowdown: float | None = None,
    ) -> InterleavedTiming:
        """Warm every configuration up, then time `rounds` interleaved rounds of `repeats` calls each.

        Each configuration first gets one untimed first call (compilation, graph capture) and `warmup` more.
        Too-slow guard: with `baseline` and `max_slowdown`, a configuration whose last warm-up call takes more than
        `max_slowdown` times the baseline's is stopped before the timed rounds, with the measured ratio; one that
        fails is stopped with its error. Nothing is dropped silently.
        """
        if warmup < 0 or rounds < 1 or repeats < 1:
            raise ValueError(f"warmup must be >= 0, rounds and repeats >= 1; got {warmup}, {rounds}, {repeats}")
        wanted = list(names) if names is not None else list(self.runners)
        if baseline is not None and baseline not in wanted:
            raise ValueError(f"baseline {baseline!r} is not one of the timed configurations: {sorted(wanted)}")
        order = ([baseline] if baseline else []) + [n for n in wanted if n != baseline]
        result = InterleavedTiming(timings={}, stopped={n: self.stopped[n] for n in order if n in self.stopped})
        warm: dict[str, float] = {}
        for name in tqdm([n for n in order if n not in self.stopped], desc="warm-up", disable=not self.progress,
                         leave=False):
            try:
                times = self.runners[name].call(1 + warmup)
            except WorkerError as exc:
                result.stopped[name] = f"failed: {exc}"
                continue
            result.first_call_s[name], warm[name] = times[0], times[-1]
            if baseline and max_slowdown and name != baseline and baseline in warm:
                ratio = warm[name] / max(warm[baseline], 1e-12)
                if ratio > max_slowdown:
                    result.stopped[name] = (f"too slow: a warm call took {warm[name]:.3g} s, {ratio:.1f}x the "
                                            f"baseline's {warm[baseline]:.3g} s (limit {max_slowdown:g}x)")
        active = [n for n in order if n in warm and n not in result.stopped]
        samples: dict[str, list[float]] = {n: [] for n in active}
        probe = LoadProbe(self.runners[n].pid for n in active).start()
        for _ in tqdm(range(rounds), desc="timed rounds", disable=not self.progress, leave=False):
            for name in [n for n in active if n in samples]:
                try:
                    samples[name] += self.runners[name].call(repeats)
                except WorkerError as exc:
                    result.stopped[name] = f"failed: {exc}"
                    del samples[name]
        result.load = probe.stop()
        result.timings = {n: Timing.from_samples(s, warmup=warmup) for n, s in samples.items()}
        result.workers = {n: self.runners[n].pid for n in result.timings}
        return result

    def measure_checked(
        self,
        limits: NoiseLimits,
        check: Callable[[InterleavedTiming], list[str]] | None = None,
        **kwargs: Any,
    ) -> InterleavedTiming:
        """`measure`, checked; while a check fails, measure again (at most `limits.attempts` timings in all).

        Checks: `noise_problems` (spread, outside load) and the caller's `check` (e.g. a pipeline no faster than the
        model inside it, ratios inside physical bounds). Returns the attempt with the fewest failed checks (the
        latest on a tie) with its `problems`; `history` keeps every attempt's problems and load.
        """
        best: InterleavedTiming | None = None
        history: list[dict[str, Any]] = []
        first_calls: dict[str, float] = {}
        for attempt in range(1, limits.attempts + 1):
            t = self.measure(**kwargs)
            first_calls = first_calls or dict(t.first_call_s)  # the real first calls are in the first attempt
            t.problems = noise_problems(t, limits) + (check(t) if check is not None and t.timings else [])
            history.append({"attempt": attempt, "problems": list(t.problems),
                            "load": t.load.as_dict() if t.load else None})
            if best is None or len(t.problems) <= len(best.problems):
                best = t
            if not t.problems:
                break
            log.warning("timing attempt %d of %d failed its checks: %s", attempt, limits.attempts,
                        "; ".join(t.problems))
        assert best is not None
        best.first_call_s = {**best.first_call_s, **first_calls}
        best.attempts, best.history = len(history), history
        return best


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    device: str | torch.device = "cpu",
    warmup: int = 1,
    rounds: int = 5,
    repeats: int = 1,
    baseline: str | None = None,
    max_slowdown: float | None = None,
    progress: bool = False,
) -> InterleavedTiming:
    """The harness's rounds on in-process callables (steps sharing one engine and its data; see the module doc).

    A callable that raises is stopped with its error, like a failing worker.
    """
    def guarded(fn: Callable[[], Any]) -> Callable[[], Any]:
        def go() -> Any:
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - reported per configuration, the others go on
                raise WorkerError(type(exc).__name__, str(exc)) from exc
        return go

    h = Harness({n: LocalRunner(guarded(f), device) for n, f in fns.items()}, progress)
    return h.measure(warmup=warmup, rounds=rounds, repeats=repeats, baseline=baseline, max_slowdown=max_slowdown)
