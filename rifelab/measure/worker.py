"""A timing worker: one configuration in its own long-lived process (`python -m rifelab.measure.worker`).

The coordinator (`rifelab.measure.harness`) starts one worker per configuration and talks to it over the worker's
stdin/stdout with length-prefixed pickles. The worker keeps its configuration loaded (built, compiled, calibrated
once) and only computes when asked, so the engines of other configurations never share its process, its thread
pools or its allocator. Anything a library prints goes to stderr: stdout carries only the messages.

A workload is any picklable object with these methods (run inside the worker):

    setup() -> dict            build the model, compile, calibrate; returns facts to record (optional keys)
    prepare(inputs) -> None    take the inputs of the next timings (e.g. the frame pair of one resolution)
    call() -> None             one timed call; must block until the device has finished
    outputs() -> (obj, dict)   what the coordinator scores (numpy arrays, ...), and facts to record
    close() -> None            optional: remove what setup() wrote (temporary folders)

`Sleep` and `Slowed` are workloads for checking that a run notices disturbance, without any timing luck.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
import time
import traceback
from dataclasses import dataclass
from typing import IO, Any

__all__ = ["send", "recv", "Sleep", "Slowed", "main"]

_HEADER = struct.Struct("<Q")


def send(fh: IO[bytes], obj: Any) -> None:
    """Write one message (a pickle with its length in front)."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    fh.write(_HEADER.pack(len(data)))
    fh.write(data)
    fh.flush()


def recv(fh: IO[bytes]) -> Any:
    """Read one message; EOFError when the other side has gone."""
    head = fh.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError("the other side closed the channel")
    size = _HEADER.unpack(head)[0]
    data = fh.read(size)
    if len(data) < size:
        raise EOFError("the other side closed the channel mid-message")
    return pickle.loads(data)


@dataclass
class Sleep:
    """A workload that sleeps `seconds` per call and returns `value` as its output (tests, deliberate slowdowns)."""

    seconds: float
    value: Any = None
    fail: str | None = None  # raise RuntimeError(fail) in setup

    def setup(self) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError(self.fail)
        return {}

    def prepare(self, inputs: Any) -> None:
        pass

    def call(self) -> None:
        time.sleep(self.seconds)

    def outputs(self) -> tuple[Any, dict[str, Any]]:
        return self.value, {}


@dataclass
class Slowed:
    """`inner` slowed on purpose: every `every`-th call sleeps `extra_s` seconds plus (`factor` - 1) times the
    call's own duration (so `factor` holds on a fast or a loaded machine alike).

    Used to check that a run flags a disturbance (every=1: a steady slowdown; every=2: repeats that spread); the
    sleep leaves the outputs untouched.
    """

    inner: Any
    extra_s: float = 0.0
    every: int = 1
    factor: float = 1.0
    _calls: int = 0

    def setup(self) -> dict[str, Any]:
        return self.inner.setup() or {}

    def prepare(self, inputs: Any) -> None:
        self.inner.prepare(inputs)

    def call(self) -> None:
        t0 = time.perf_counter()
        self.inner.call()
        self._calls += 1
        if self._calls % self.every == 0:
            time.sleep(self.extra_s + (self.factor - 1.0) * (time.perf_counter() - t0))

    def outputs(self) -> tuple[Any, dict[str, Any]]:
        return self.inner.outputs()


def _handle(workload: Any, msg: tuple) -> tuple[Any, Any]:
    """Run one command; returns (new workload, reply payload)."""
    cmd = msg[0]
    if cmd == "setup":
        t0 = time.perf_counter()
        facts = msg[1].setup() or {}
        return msg[1], {**facts, "setup_s": time.perf_counter() - t0}
    if workload is None:
        raise RuntimeError(f"command {cmd!r} before setup")
    if cmd == "prepare":
        workload.prepare(msg[1])
        return workload, None
    if cmd == "call":
        samples = []
        for _ in range(int(msg[1])):
            t0 = time.perf_counter()
            workload.call()
            samples.append(time.perf_counter() - t0)
        return workload, samples
    if cmd == "outputs":
        return workload, workload.outputs()
    raise ValueError(f"unknown worker command {cmd!r}")


def main() -> int:
    """The worker loop: read a command, run it, answer ('ok', payload) or ('error', text); stop on 'close'/EOF."""
    channel_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # library prints must not corrupt the channel
    channel_in = sys.stdin.buffer
    workload = None
    while True:
        try:
            msg = recv(channel_in)
        except EOFError:
            return 0
        if msg[0] == "close":
            if workload is not None and hasattr(workload, "close"):
                workload.close()
            send(channel_out, ("ok", None))
            return 0
        try:
            workload, payload = _handle(workload, msg)
            send(channel_out, ("ok", payload))
        except Exception as exc:  # noqa: BLE001 - reported to the coordinator, which stops this configuration
            send(channel_out, ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=8)))


if __name__ == "__main__":
    sys.exit(main())
