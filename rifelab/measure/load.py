"""What else the machine was doing while we timed: load average, other processes' CPU time, steal time.

`LoadProbe(own_pids)` reads the machine-wide CPU counters (Linux `/proc/stat`) and the CPU time of our own processes
(`/proc/<pid>/stat`: the coordinator and its timing workers); the difference is the CPU time of every other process.
`probe.start()` ... `probe.stop()` gives a `LoadRecord` over that window. Elsewhere (macOS) only the load average
is read and the other fields are None: absent, never a made-up zero.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable

__all__ = ["LoadRecord", "LoadProbe", "cpu_counters", "process_cpu_seconds"]

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") and "SC_CLK_TCK" in os.sysconf_names else 100


def cpu_counters() -> tuple[float, float, float] | None:
    """(busy, steal, total) CPU seconds of the whole machine since boot (Linux /proc/stat), or None elsewhere.

    busy counts user, nice, system, irq and softirq time (not idle, iowait or steal); guest time is already
    inside user and nice.
    """
    try:
        with open("/proc/stat") as fh:
            parts = fh.readline().split()
    except OSError:
        return None
    if not parts or parts[0] != "cpu":
        return None
    v = [int(x) for x in parts[1:]] + [0] * 8
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    busy = user + nice + system + irq + softirq
    return busy / _TICK, steal / _TICK, (busy + idle + iowait + steal) / _TICK


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads, and its waited-for children), or None."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name may hold spaces; skip past it
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / _TICK


def _load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except (OSError, AttributeError):
        return None


@dataclass
class LoadRecord:
    """The machine's load over one timing window.

    `other_cpu` is the CPU time other processes used, in cores (1.0: one core busy all the time); `steal_share` the
    share of CPU time the hypervisor gave to other guests; `load_avg_1m` the 1-minute load average at the end.
    """

    seconds: float
    cpu_count: int
    load_avg_1m: float | None
    load_avg_start_1m: float | None
    other_cpu: float | None
    own_cpu: float | None
    steal_share: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for a table caption or a sentence."""
        parts = [f"{self.seconds:.1f} s on {self.cpu_count} CPUs"]
        if self.load_avg_1m is not None:
            parts.append(f"load average {self.load_avg_start_1m:.2f} -> {self.load_avg_1m:.2f}")
        if self.other_cpu is not None:
            parts.append(f"other processes used {self.other_cpu:.2f} cores")
        if self.steal_share is not None:
            parts.append(f"steal {self.steal_share:.1%}")
        if self.other_cpu is None and sys.platform != "linux":
            parts.append("other processes' CPU time not readable here (Linux /proc only)")
        return ", ".join(parts)

    @staticmethod
    def combine(records: Iterable["LoadRecord"]) -> "LoadRecord":
        """One record over several consecutive windows (time-weighted)."""
        recs = list(records)
        if not recs:
            raise ValueError("no load records to combine")
        total = sum(r.seconds for r in recs) or 1e-12

        def mean(key: str) -> float | None:
            vals = [(getattr(r, key), r.seconds) for r in recs]
            if any(v is None for v, _ in vals):
                return None
            return sum(v * s for v, s in vals) / total

        return LoadRecord(total, recs[0].cpu_count, recs[-1].load_avg_1m, recs[0].load_avg_start_1m,
                          mean("other_cpu"), mean("own_cpu"), mean("steal_share"))


class LoadProbe:
    """Measures a window: `start()`, time something, `stop()` -> LoadRecord. `own` are the pids that are ours."""

    def __init__(self, own: Iterable[int] = ()):
        self.own = sorted({os.getpid(), *own})
        self._start: tuple[float, tuple | None, float | None, tuple | None] | None = None

    def _own_cpu(self) -> float | None:
        vals = [process_cpu_seconds(p) for p in self.own]
        return None if any(v is None for v in vals) else sum(vals)  # type: ignore[arg-type]

    def start(self) -> "LoadProbe":
        self._start = (time.perf_counter(), cpu_counters(), self._own_cpu(), _load_average())
        return self

    def stop(self) -> LoadRecord:
        if self._start is None:
            raise RuntimeError("LoadProbe.stop() before start()")
        t0, c0, own0, la0 = self._start
        t1, c1, own1, la1 = time.perf_counter(), cpu_counters(), self._own_cpu(), _load_average()
        dt = max(t1 - t0, 1e-9)
        other = own = steal = None
        if c0 is not None and c1 is not None:
            busy = c1[0] - c0[0]
            total = c1[2] - c0[2]
            steal = (c1[1] - c0[1]) / total if total > 0 else 0.0
            if own0 is not None and own1 is not None:
                own = (own1 - own0) / dt
                other = max(0.0, busy - (own1 - own0)) / dt
        return LoadRecord(dt, os.cpu_count() or 1, la1[0] if la1 else None, la0[0] if la0 else None, other, own, steal)
