"""The threaded interpolation pipeline: reader -> model -> writer, joined by bounded queues."""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from rifelab.frames.images import (
    DataError,
    rgb8_view,
    to_tensor,
    to_uint8,
)
from rifelab.frames.scenes import PairDecision, decide_pair
from rifelab.interpolate.schedule import (
    InterpolateConfig,
    InterpolationSummary,
    _as_fraction,
)
from rifelab.interpolate.sources import FrameSource, _is_video_path

log = logging.getLogger(__name__)


@dataclass
class _Pair:
    index: int
    frame0: np.ndarray
    frame1: np.ndarray
    decision: PairDecision


@dataclass
class _Out:
    index: int
    data: Any  # uint8 (H,W,3) array or a (1,3,H,W) float tensor from the model
    kind: str  # original | model | static | cut


class _Stopped(Exception):
    """Another stage failed; this one stops quietly."""


_END = object()


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue


def _drain(q: queue.Queue, stop: threading.Event) -> Iterator[Any]:
    while True:
        item = _get(q, stop)
        if item is _END:
            return
        yield item


def _model_device(model: Any) -> torch.device:
    dev = getattr(model, "device", None)
    if dev is None:
        try:
            dev = next(model.parameters()).device
        except (AttributeError, StopIteration):
            dev = "cpu"
    return torch.device(dev)


def _progress(total: int | None, desc: str, position: int, enabled: bool, unit: str):

    return tqdm(total=total, desc=desc, position=position, unit=unit, leave=position == 0, disable=not enabled,
                dynamic_ncols=True, file=sys.stderr)


class _Pipeline:
    def __init__(self, model: Any, config: InterpolateConfig, summary: InterpolationSummary,
                 has: Callable[[int], bool] = lambda i: False, pair_count: int | None = None):
        self.model = model
        self.config = config
        self.schedule = config.schedule
        self.summary = summary
        self.has = has
        n = config.multi
        first_level = len(self.schedule.levels[0]) if self.schedule.levels else 1
        # fixed groups of pairs per model batch: the same calls whether or not a run is resumed
        self.group_size = max(1, config.batch_size // max(1, first_level))
        self.stride = n - 1
        self.device = _model_device(model)
        self.pair_count = pair_count

    def group_indices(self, pair: int) -> list[int]:
        """Output indices of the fixed group of pairs that holds `pair` (pairs past a known end left out)."""
        g0 = pair // self.group_size * self.group_size
        g1 = g0 + self.group_size
        if self.pair_count is not None:
            g1 = min(g1, self.pair_count)
        return [p * self.stride + k for p in range(g0, g1) for k in range(self.stride)]

    def group_done(self, pair: int) -> bool:
        return all(self.has(i) for i in self.group_indices(pair))

    # reader stage -------------------------------------------------------------
    def pairs(self, source: Iterable[np.ndarray], bar: Any = None) -> Iterator[_Pair]:
        prev: np.ndarray | None = None
        count = 0
        copy_only = self.config.multi == 2
        for frame in source:
            count += 1
            if bar is not None:
                bar.update(1)
            if prev is not None:
                p = count - 2
                if copy_only:
                    decision = PairDecision("copy")
                elif self.group_done(p):
                    decision = PairDecision("done")
                else:
                    decision = decide_pair(rgb8_view(prev), rgb8_view(frame), self.config.thresholds)
                yield _Pair(p, prev, frame, decision)
            prev = frame
        if count < 2:
            raise DataError(f"the input has {count} frame{'s' if count != 1 else ''}; interpolation needs at least 2")
        self.summary.input_frames = count

    # model stage --------------------------------------------------------------
    def outputs(self, pairs: Iterable[_Pair], bar: Any = None) -> Iterator[_Out]:
        group: list[_Pair] = []
        last: _Pair | None = None
        for pr in pairs:
            group.append(pr)
            last = pr
            if (pr.index + 1) % self.group_size == 0:
                yield from self._group(group, bar)
                group = []
        if group:
            yield from self._group(group, bar)
        if last is not None:
            yield from self._closing_frame(last)

    def _closing_frame(self, last: _Pair) -> Iterator[_Out]:
        """The last input frame as the last output frame; sets the output frame count."""
        final = (last.index + 1) * self.stride
        self.summary.output_frames = final + 1
        yield from self._original(final, last)

    def _original(self, index: int, last: _Pair) -> Iterator[_Out]:
        if self.has(index):
            self.summary.kept_frames += 1
        else:
            self.summary.original_frames += 1
            yield _Out(index, last.frame1, "original")

    def _count_pairs(self, group: list[_Pair], inserts: bool) -> None:
        """Add a group's pairs to the summary; `inserts`: whether an interpolated pair makes new frames."""
        s = self.summary
        for pr in group:
            s.pairs += 1
            kind = pr.decision.kind
            s.static_pairs += kind == "static"
            s.cut_pairs += kind == "cut"
            s.kept_pairs += kind == "done"
            s.interpolated_pairs += kind == "interpolate" and inserts

    def _group(self, group: list[_Pair], bar: Any) -> Iterator[_Out]:
        s = self.summary
        self._count_pairs(group, self.config.multi > 2)
        indices = [pr.index * self.stride + k for pr in group for k in range(self.stride)]
        if all(pr.decision.kind == "done" for pr in group):
            s.kept_frames += len(indices)
            if bar is not None:
                bar.update(len(group))
            return
        todo = [pr for pr in group if pr.decision.kind == "interpolate"] if self.config.multi > 2 else []
        made = self.compute(todo)
        times = self.schedule.times
        for pr in group:
            for k in range(self.stride):
                idx = pr.index * self.stride + k
                if self.has(idx):
                    s.kept_frames += 1
                    continue
                if k == 0:
                    s.original_frames += 1
                    yield _Out(idx, pr.frame0, "original")
                elif pr.index in made:
                    s.model_frames += 1
                    yield _Out(idx, made[pr.index][k], "model")
                else:
                    s.duplicated_frames += 1
                    yield _Out(idx, pr.frame0 if times[k] < 0.5 else pr.frame1, pr.decision.kind)
            if bar is not None:
                bar.update(1)

    def compute(self, pairs: list[_Pair]) -> dict[int, dict[int, torch.Tensor]]:
        """Run the schedule for `pairs`: slot -> (1,3,H,W) float tensor for each pair index."""
        if not pairs:
            return {}
        cache: dict[int, torch.Tensor] = {}

        def tensor(frame: np.ndarray) -> torch.Tensor:
            key = id(frame)
            if key not in cache:
                cache[key] = _frame_tensor(frame, self.device)
            return cache[key]

        last = self.config.multi - 1
        slots = {pr.index: {0: tensor(pr.frame0), last: tensor(pr.frame1)} for pr in pairs}
        bs = self.config.batch_size
        for level in self.schedule.levels:
            jobs = [(slots[pr.index], step) for pr in pairs for step in level]
            for start in range(0, len(jobs), bs):
                chunk = jobs[start : start + bs]
                left = torch.cat([sl[st.left] for sl, st in chunk])
                right = torch.cat([sl[st.right] for sl, st in chunk])
                t = torch.tensor([st.t for _, st in chunk], dtype=torch.float32, device=self.device)
                out = _call_model(self.model, left, right, t, self.config)
                self.summary.model_calls += 1
                for k, (sl, st) in enumerate(chunk):
                    sl[st.target] = out[k : k + 1]
        return slots


def _to_frame(data: Any) -> np.ndarray:
    return to_uint8(data)[0] if isinstance(data, torch.Tensor) else data


def _run_stages(
    pipe: _Pipeline,
    source: FrameSource,
    write: Callable[[_Out], None],
    config: InterpolateConfig,
) -> None:
    """Reader -> model -> writer, threaded with bounded queues (or inline when config.threaded is False)."""
    prog = config.progress
    pairs_total = source.count - 1 if source.count else None
    read_bar = _progress(source.count, "read", 1, prog, "frame")
    model_bar = _progress(pairs_total, "interpolate", 0, prog, "pair")
    try:
        if not config.threaded:
            for out in pipe.outputs(pipe.pairs(source, read_bar), model_bar):
                write(out)
            return
        stop = threading.Event()
        errors: list[BaseException] = []
        q_in: queue.Queue = queue.Queue(maxsize=config.queue_size)
        q_out: queue.Queue = queue.Queue(maxsize=config.queue_size * max(1, config.multi - 1))

        def fail(exc: BaseException) -> None:
            errors.append(exc)
            stop.set()

        def reader() -> None:
            gen = pipe.pairs(source, read_bar)
            try:
                with contextlib.closing(gen):
                    for item in gen:
                        _put(q_in, item, stop)
                _put(q_in, _END, stop)
            except _Stopped:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                fail(exc)

        def writer() -> None:
            try:
                while True:
                    item = _get(q_out, stop)
                    if item is _END:
                        return
                    write(item)
            except _Stopped:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                fail(exc)

        threads = [threading.Thread(target=reader, name="rifelab-reader", daemon=True),
                   threading.Thread(target=writer, name="rifelab-writer", daemon=True)]
        for th in threads:
            th.start()
        try:
            for out in pipe.outputs(_drain(q_in, stop), model_bar):
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
    finally:
        read_bar.close()
        model_bar.close()


def _frame_tensor(frame: np.ndarray, device: torch.device) -> torch.Tensor:
    """(1,C,H,W) float tensor of an RGB or RGBA uint8 frame; the RGB planes exactly as `to_tensor` makes them."""
    if frame.shape[-1] != 4:
        return to_tensor(frame, device)
    alpha = torch.from_numpy(np.ascontiguousarray(frame[..., 3])).to(device).float().div_(255.0)
    return torch.cat([to_tensor(frame[..., :3], device), alpha[None, None]], 1)


def _alpha_model(model: Any) -> Any:
    """The object whose `interpolate_rgba` makes RGBA frames: the model, or the RIFE an Engine wraps."""
    for m in (model, getattr(model, "model", None)):
        if m is not None and hasattr(m, "interpolate_rgba"):
            return m
    raise DataError(f"{type(model).__name__} cannot interpolate alpha (no interpolate_rgba); use rifelab.models.RIFE "
                    "or flatten the frames onto a background")


def _call_model(model: Any, left: torch.Tensor, right: torch.Tensor, t: torch.Tensor,
                config: InterpolateConfig) -> torch.Tensor:
    """One batched model call; RGBA batches go through `interpolate_rgba` (alpha with the colour's flow and mask)."""
    if left.shape[1] == 4:
        return _alpha_model(model).interpolate_rgba(left, right, t, config.scale, config.ensemble)
    return model.interpolate(left, right, t, config.scale, config.ensemble)


def _check_alpha_output(src: FrameSource, out: Path, config: InterpolateConfig) -> None:
    if not src.alpha:
        return
    if _is_video_path(out):
        raise DataError(f"{src.path or 'the input'} has an alpha channel; write RGBA frames to a folder "
                        "(--ext png, tif or webp) instead of a video")
    if config.ext == "jpg":
        raise DataError("the input has an alpha channel, which jpg cannot store; use --ext png, tif or webp")


def _extra_settings(src: FrameSource, ratio: Fraction | None) -> dict[str, Any]:
    """Manifest entries of retimed or RGBA runs (absent otherwise, so older manifests still resume)."""
    extra: dict[str, Any] = {}
    if ratio is not None:
        extra["retime"] = {"ratio": str(ratio), "input_fps": str(_as_fraction(src.fps))}
    if src.alpha:
        extra["alpha"] = True
    return extra


class _RetimePipeline(_Pipeline):
    """Output frame k at input position k / ratio: copied on an input frame, else interpolated at its own t."""

    def __init__(self, model: Any, config: InterpolateConfig, summary: InterpolationSummary, ratio: Fraction,
                 has: Callable[[int], bool] = lambda i: False, pair_count: int | None = None,
                 times: list[Fraction] | None = None):
        super().__init__(model, config, summary, has, pair_count)
        self.ratio = ratio
        self.times = times  # a variable-rate input's frame times in input-frame units (constant rate: frame i at i)
        per_pair = max(1, -(-ratio // 1))
        self.group_size = max(1, config.batch_size // per_pair)  # fixed groups: same model batches on resume

    def position(self, frame: int) -> Fraction:
        """Where input frame `frame` lies on the input's time axis, in input frames."""
        if self.times is None:
            return Fraction(frame)
        if frame >= len(self.times):
            raise DataError(f"the input decoded more frames than its {len(self.times)} timestamps; re-export it at a "
                            "constant frame rate, or pass --input-fps to treat it as one")
        return self.times[frame]

    def slots(self, pair: int) -> list[tuple[int, Fraction]]:
        """(output index, local t in [0, 1)) of the output frames between input frames `pair` and `pair`+1."""
        r = self.ratio
        a, b = self.position(pair), self.position(pair + 1)
        first, end = -(-(a * r) // 1), -(-(b * r) // 1)  # ceil, exact on fractions
        return [(k, (Fraction(k) / r - a) / (b - a)) for k in range(first, end)]

    def group_indices(self, pair: int) -> list[int]:
        g0 = pair // self.group_size * self.group_size
        g1 = g0 + self.group_size
        if self.pair_count is not None:
            g1 = min(g1, self.pair_count)
        return [k for p in range(g0, g1) for k, _ in self.slots(p)]

    def _closing_frame(self, last: _Pair) -> Iterator[_Out]:
        end = self.position(last.index + 1) * self.ratio
        self.summary.output_frames = int(end) + 1
        if end.denominator == 1:  # the last output frame falls on the last input frame
            yield from self._original(int(end), last)

    def _group(self, group: list[_Pair], bar: Any) -> Iterator[_Out]:
        s = self.summary
        self._count_pairs(group, True)
        if all(pr.decision.kind == "done" for pr in group):
            s.kept_frames += sum(len(self.slots(pr.index)) for pr in group)
            if bar is not None:
                bar.update(len(group))
            return
        made = self.compute([pr for pr in group if pr.decision.kind == "interpolate"])
        for pr in group:
            for k, t in self.slots(pr.index):
                if self.has(k):
                    s.kept_frames += 1
                elif t == 0:
                    s.original_frames += 1
                    yield _Out(k, pr.frame0, "original")
                elif k in made.get(pr.index, {}):
                    s.model_frames += 1
                    yield _Out(k, made[pr.index][k], "model")
                else:
                    s.duplicated_frames += 1
                    yield _Out(k, pr.frame0 if t < 0.5 else pr.frame1, pr.decision.kind)
            if bar is not None:
                bar.update(1)

    def compute(self, pairs: list[_Pair]) -> dict[int, dict[int, torch.Tensor]]:
        """Output index -> (1,C,H,W) tensor for every non-original frame of `pairs`, in batches of batch_size."""
        jobs = [(pr, k, t) for pr in pairs for k, t in self.slots(pr.index) if t != 0]
        made: dict[int, dict[int, torch.Tensor]] = {pr.index: {} for pr in pairs}
        cache: dict[int, torch.Tensor] = {}

        def tensor(frame: np.ndarray) -> torch.Tensor:
            if id(frame) not in cache:
                cache[id(frame)] = _frame_tensor(frame, self.device)
            return cache[id(frame)]

        bs = self.config.batch_size
        for start in range(0, len(jobs), bs):
            chunk = jobs[start : start + bs]
            left = torch.cat([tensor(pr.frame0) for pr, _, _ in chunk])
            right = torch.cat([tensor(pr.frame1) for pr, _, _ in chunk])
            t = torch.tensor([float(t) for _, _, t in chunk], dtype=torch.float32, device=self.device)
            out = _call_model(self.model, left, right, t, self.config)
            self.summary.model_calls += 1
            for j, (pr, k, _) in enumerate(chunk):
                made[pr.index][k] = out[j : j + 1]
        return made
