"""How a run's three stages run together: reader -> model -> writer, joined by bounded queues, with progress bars.

The reader thread decodes input frames and decides each pair, the model runs in the calling thread, and
the writer thread encodes and writes output frames; bounded queues keep memory flat on long inputs, and
the first error in any stage stops all three. The bars are closed (innermost first) before the run
returns, and console logging goes through tqdm's writer while they are shown, so neither a log line nor
the caller's summary lands inside a bar.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
from typing import Any, Callable, Iterator

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from rifelab.interpolate.pipeline import InterpolationPipeline, OutputFrame
from rifelab.interpolate.schedule import InterpolateConfig
from rifelab.interpolate.sources import FrameSource

log = logging.getLogger(__name__)


def progress_bar(total: int | None, desc: str, position: int = 0, enabled: bool = True, unit: str = "frame",
                 leave: bool | None = None) -> tqdm:
    """A tqdm bar on stderr; only the bar at position 0 stays on screen after closing (unless `leave`)."""
    return tqdm(total=total, desc=desc, position=position, unit=unit,
                leave=position == 0 if leave is None else leave, disable=not enabled, dynamic_ncols=True,
                file=sys.stderr)


@contextlib.contextmanager
def logging_through_tqdm(enabled: bool = True) -> Iterator[None]:
    """While live bars are shown, send the root logger's console output through `tqdm.write` (above the bars).

    Does nothing when disabled or when no console handler is configured (a library caller's logging stays
    as it was).
    """
    console = any(isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.stderr)
                  for h in logging.root.handlers)
    if not (enabled and console):
        yield
        return
    with logging_redirect_tqdm():
        yield


class ProgressBars(contextlib.AbstractContextManager):
    """The read, interpolate and write bars of a run; closed write, read, then interpolate, on leaving.

    Only the interpolate bar stays on screen; closing the inner bars first leaves the cursor on a fresh
    line below it, where the caller's summary goes.
    """

    def __init__(self, input_frames: int | None, output_frames: int | None, enabled: bool = True):
        pairs = input_frames - 1 if input_frames else None
        self._logging = logging_through_tqdm(enabled)
        self.model = progress_bar(pairs, "interpolate", 0, enabled, "pair")
        self.read = progress_bar(input_frames, "read", 1, enabled, "frame")
        self.write = progress_bar(output_frames, "write", 2, enabled, "frame")

    def __enter__(self) -> ProgressBars:
        self._logging.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            for bar in (self.write, self.read, self.model):
                bar.close()
        finally:
            self._logging.__exit__(*exc)


class _Stopped(Exception):
    """Another stage failed; this one stops quietly."""


_END = object()


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    """Put `item` into a bounded queue, waiting; raise _Stopped once another stage failed."""
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    """The next item of a queue, waiting; raise _Stopped once another stage failed."""
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue


def _drain(q: queue.Queue, stop: threading.Event) -> Iterator[Any]:
    """The items of a queue up to the end marker."""
    while True:
        item = _get(q, stop)
        if item is _END:
            return
        yield item


def run_stages(pipe: InterpolationPipeline, source: FrameSource, write: Callable[[OutputFrame], None],
               config: InterpolateConfig, bars: ProgressBars) -> None:
    """Reader -> model -> writer, threaded with bounded queues (or inline when config.threaded is False)."""
    if not config.threaded:
        for out in pipe.outputs(pipe.pairs(source, bars.read), bars.model):
            write(out)
        return
    stop = threading.Event()
    errors: list[BaseException] = []
    q_in: queue.Queue = queue.Queue(maxsize=config.queue_size)
    q_out: queue.Queue = queue.Queue(maxsize=config.queue_size * max(1, config.multi - 1))

    def guarded(stage: Callable[[], None]) -> Callable[[], None]:
        """`stage` as a thread body: its error is handed to the main thread and stops the others."""

        def run() -> None:
            try:
                stage()
            except _Stopped:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                errors.append(exc)
                stop.set()
        return run

    def reader() -> None:
        with contextlib.closing(pipe.pairs(source, bars.read)) as gen:
            for item in gen:
                _put(q_in, item, stop)
        _put(q_in, _END, stop)

    def writer() -> None:
        for item in _drain(q_out, stop):
            write(item)

    threads = [threading.Thread(target=guarded(reader), name="rifelab-reader", daemon=True),
               threading.Thread(target=guarded(writer), name="rifelab-writer", daemon=True)]
    for th in threads:
        th.start()
    try:
        for out in pipe.outputs(_drain(q_in, stop), bars.model):
            _put(q_out, out, stop)
        _put(q_out, _END, stop)
        while threads[1].is_alive():
            threads[1].join(timeout=0.1)
    except _Stopped:
        pass
    except BaseException as exc:  # noqa: BLE001 - includes KeyboardInterrupt: stop the threads, then re-raise
        errors.insert(0, exc)
        stop.set()
    finally:
        if errors:
            stop.set()
        for th in threads:
            th.join()
    if errors:
        raise errors[0]
