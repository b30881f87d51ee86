"""A local Ray that `rifelab batch` starts dies with its driver, even when the driver is killed with SIGKILL.

Ray's own shutdown runs only when the driver exits normally; after `kill -9` its raylet, GCS and agents
(DashboardAgent, RuntimeEnvAgent) outlive it for minutes. `watch_descendants` starts a small watchdog
process that notes the driver's descendants every half second and, when the driver goes away (its pipe
closes), stops the ones still running: SIGTERM, then SIGKILL. It also keeps a record of them, so that if
the watchdog itself was killed, the next batch run stops what the dead driver left (`reap_orphans`).

    python rifelab/interpolate/raywatch.py DRIVER_PID RECORD    (what watch_descendants runs)
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

import psutil

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
GRACE_SECONDS = 3.0


def record_dir() -> Path:
    """Where the watchdogs keep their records (one JSON file per driver)."""
    return Path(tempfile.gettempdir()) / f"rifelab-ray-{os.getuid()}"


def _descendants(pid: int) -> dict[int, float]:
    """pid -> create time of every descendant of `pid` (empty when it is gone)."""
    try:
        return {c.pid: c.create_time() for c in psutil.Process(pid).children(recursive=True)}
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return {}


def stop_processes(procs: dict[int, float], grace: float = GRACE_SECONDS) -> list[int]:
    """SIGTERM the listed processes still running (same pid and create time), SIGKILL those left after `grace`."""
    alive = []
    for pid, created in procs.items():
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - created) < 0.01 and pid != os.getpid():
                alive.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for p in alive:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, left = psutil.wait_procs(alive, timeout=grace)
    for p in left:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return [p.pid for p in alive]


def _save(record: Path, driver: int, procs: dict[int, float]) -> None:
    tmp = record.with_name(record.name + ".tmp")
    tmp.write_text(json.dumps({"driver": driver, "processes": {str(k): v for k, v in procs.items()}}))
    os.replace(tmp, record)


def _watch(driver: int, record: Path, pipe: IO[bytes]) -> None:
    """Poll the driver's descendants until `pipe` closes (the driver exited or died), then stop them."""
    seen: dict[int, float] = {}
    before = _descendants(driver)  # the driver's children from before Ray started are not Ray's
    sel = selectors.DefaultSelector()
    sel.register(pipe, selectors.EVENT_READ)
    while True:
        now = {k: v for k, v in _descendants(driver).items() if before.get(k) != v and k != os.getpid()}
        if any(seen.get(k) != v for k, v in now.items()):
            seen.update(now)
            _save(record, driver, seen)
        if sel.select(timeout=POLL_SECONDS) and not pipe.read(1):
            break
    stop_processes(seen)
    record.unlink(missing_ok=True)


def watch_descendants(driver: int | None = None) -> subprocess.Popen:
    """Start the watchdog of `driver` (default: this process) before starting Ray: the processes the driver starts
    from then on are stopped when it closes the watchdog's stdin (`release`) or dies."""
    driver = driver or os.getpid()
    folder = record_dir()
    folder.mkdir(mode=0o700, exist_ok=True)
    record = folder / f"{driver}.json"
    # run as a script, not `-m rifelab...`: the package's imports (torch) would cost the watchdog seconds and memory
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(driver), str(record)],
                            stdin=subprocess.PIPE, start_new_session=True)


def release(watchdog: subprocess.Popen | None, timeout: float = 2 * GRACE_SECONDS + 5) -> None:
    """Tell the watchdog the driver is done (it stops what is left, e.g. Ray's agents) and wait for it."""
    if watchdog is None:
        return
    try:
        watchdog.stdin.close()
        watchdog.wait(timeout)
    except (OSError, subprocess.TimeoutExpired):
        log.warning("the Ray watchdog (pid %d) did not finish; it stops Ray's processes by itself", watchdog.pid)


def reap_orphans() -> list[int]:
    """Stop the processes recorded for drivers that are gone (a killed driver whose watchdog died too)."""
    stopped: list[int] = []
    folder = record_dir()
    if not folder.is_dir():
        return stopped
    for rec in folder.glob("*.json"):
        try:
            data = json.loads(rec.read_text())
            driver = int(data["driver"])
            procs = {int(k): float(v) for k, v in data["processes"].items()}
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if psutil.pid_exists(driver):
            continue
        stopped += stop_processes(procs)
        rec.unlink(missing_ok=True)
    if stopped:
        log.warning("stopped %d Ray processes left by an earlier batch run that was killed", len(stopped))
    return stopped


if __name__ == "__main__":  # pragma: no cover - the watchdog process
    _watch(int(sys.argv[1]), Path(sys.argv[2]), sys.stdin.buffer)
