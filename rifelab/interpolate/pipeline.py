"""The one interpolation pipeline: input pairs in, output frames out, for `--multi`, recursive mode and retiming.

`InterpolationPipeline` reads pairs of consecutive input frames (deciding static pairs and scene cuts),
groups them in fixed groups, and fills every output slot of their `OutputSchedule`: a copy of an input
frame, a model frame (batched model calls, level by level), or a duplicate for a static pair or a cut.
How the reader, model and writer stages run together is rifelab.interpolate.stages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

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
    OutputSchedule,
    Slot,
)
from rifelab.rife.contract import AlphaUnsupported, Interpolator

log = logging.getLogger(__name__)


@dataclass
class InputPair:
    """Input frames `index` and `index`+1 (uint8 H,W,C) and what to do with them."""

    index: int
    frame0: np.ndarray
    frame1: np.ndarray
    decision: PairDecision


@dataclass
class OutputFrame:
    """Output frame `index`, ready for the writer."""

    index: int
    data: Any  # uint8 (H,W,C) array or a (1,C,H,W) float tensor from the model
    kind: str  # original | model | static | cut

    def to_array(self) -> np.ndarray:
        """The frame as a uint8 (H,W,C) array (model tensors converted)."""
        return to_uint8(self.data)[0] if isinstance(self.data, torch.Tensor) else self.data


def _model_device(model: Interpolator | None) -> torch.device:
    """Where `model` computes: the frames are made into tensors there (CPU when a copy-only run has no model)."""
    return torch.device("cpu") if model is None else torch.device(model.device)


class InterpolationPipeline:
    """Fills the output slots of every input pair: copies, model frames, or duplicates of static pairs and cuts.

    `has(index)`: whether output frame `index` already exists (resume), so it is neither made nor written.
    Pairs go to the model in fixed groups (`group_size` pairs), so a resumed run makes the same model calls
    as an uninterrupted one. `pair_count` (when known) keeps the last group inside the input.
    """

    def __init__(self, model: Interpolator | None, config: InterpolateConfig, summary: InterpolationSummary,
                 plan: OutputSchedule | None = None, has: Callable[[int], bool] = lambda i: False,
                 pair_count: int | None = None):
        self.model = model
        self.config = config
        self.plan = plan if plan is not None else config.output_schedule()
        self.summary = summary
        self.has = has
        self.group_size = self.plan.pairs_per_group(config.batch_size)
        self.device = _model_device(model)
        self.pair_count = pair_count

    def group_indices(self, pair: int) -> list[int]:
        """Output indices of the fixed group of pairs that holds `pair` (pairs past a known end left out)."""
        g0 = pair // self.group_size * self.group_size
        g1 = g0 + self.group_size
        if self.pair_count is not None:
            g1 = min(g1, self.pair_count)
        return [s.index for p in range(g0, g1) for s in self.plan.slots(p)]

    def group_done(self, pair: int) -> bool:
        """Whether every output frame of `pair`'s group exists already (resume): the pair is not decided again."""
        return all(self.has(i) for i in self.group_indices(pair))

    # reader stage -------------------------------------------------------------
    def pairs(self, source: Iterable[np.ndarray], bar: Any = None) -> Iterator[InputPair]:
        """Consecutive input frames as pairs, each with its decision (interpolate, static, cut, copy or done)."""
        prev: np.ndarray | None = None
        count = 0
        copy_only = not self.plan.makes_frames
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
                yield InputPair(p, prev, frame, decision)
            prev = frame
        if count < 2:
            raise DataError(f"the input has {count} frame{'s' if count != 1 else ''}; interpolation needs at least 2")
        self.summary.input_frames = count

    # model stage --------------------------------------------------------------
    def outputs(self, pairs: Iterable[InputPair], bar: Any = None) -> Iterator[OutputFrame]:
        """Every output frame of `pairs`, in order, ending with the last input frame when an output falls on it."""
        group: list[InputPair] = []
        last: InputPair | None = None
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

    def _closing_frame(self, last: InputPair) -> Iterator[OutputFrame]:
        """The last input frame as the last output frame (when one falls on it); sets the output frame count."""
        pairs = last.index + 1
        self.summary.output_frames = self.plan.output_count(pairs + 1)
        final = self.plan.closing_index(pairs)
        if final is None:
            return
        if self.has(final):
            self.summary.kept_frames += 1
        else:
            self.summary.original_frames += 1
            yield OutputFrame(final, last.frame1, "original")

    def _count_pairs(self, group: list[InputPair]) -> None:
        """Add a group's pairs to the summary (an interpolated pair counts only when the plan makes frames)."""
        s = self.summary
        for pr in group:
            s.pairs += 1
            kind = pr.decision.kind
            s.static_pairs += kind == "static"
            s.cut_pairs += kind == "cut"
            s.kept_pairs += kind == "done"
            s.interpolated_pairs += kind == "interpolate" and self.plan.makes_frames

    def _group(self, group: list[InputPair], bar: Any) -> Iterator[OutputFrame]:
        """The output frames of one group of pairs: model frames computed together, the rest copied or kept."""
        s = self.summary
        self._count_pairs(group)
        if all(pr.decision.kind == "done" for pr in group):
            s.kept_frames += sum(len(self.plan.slots(pr.index)) for pr in group)
            if bar is not None:
                bar.update(len(group))
            return
        made = self.compute([pr for pr in group if pr.decision.kind == "interpolate"])
        for pr in group:
            for slot in self.plan.slots(pr.index):
                if self.has(slot.index):
                    s.kept_frames += 1
                else:
                    yield self._fill(pr, slot, made.get(pr.index, {}))
            if bar is not None:
                bar.update(1)

    def _fill(self, pr: InputPair, slot: Slot, made: dict[Any, torch.Tensor]) -> OutputFrame:
        """One output frame: the original, the model's frame, or the input frame nearest in time."""
        s = self.summary
        if slot.is_original:
            s.original_frames += 1
            return OutputFrame(slot.index, pr.frame0, "original")
        if slot.at in made:
            s.model_frames += 1
            return OutputFrame(slot.index, made[slot.at], "model")
        s.duplicated_frames += 1
        return OutputFrame(slot.index, pr.frame0 if slot.at < 0.5 else pr.frame1, pr.decision.kind)

    def compute(self, pairs: list[InputPair]) -> dict[int, dict[Any, torch.Tensor]]:
        """Model frames of `pairs`: pair index -> {slot position: (1,C,H,W) tensor}, in batches of batch_size.

        Levels run in order (a level's frames are inputs of the next); within a level the frames of all
        `pairs` are batched together, each from its own left and right frame at its own timestep.
        """
        made: dict[int, dict[Any, torch.Tensor]] = {pr.index: {} for pr in pairs}
        cache: dict[int, torch.Tensor] = {}

        def frame_at(pr: InputPair, at: Any) -> torch.Tensor:
            if 0 < at < 1:
                return made[pr.index][at]
            frame = pr.frame0 if at == 0 else pr.frame1
            if id(frame) not in cache:
                cache[id(frame)] = _frame_tensor(frame, self.device)
            return cache[id(frame)]

        bs = self.config.batch_size
        for level in range(1, self.plan.levels + 1):
            jobs = [(pr, s) for pr in pairs for s in self.plan.slots(pr.index) if s.level == level]
            for start in range(0, len(jobs), bs):
                chunk = jobs[start : start + bs]
                left = torch.cat([frame_at(pr, s.left) for pr, s in chunk])
                right = torch.cat([frame_at(pr, s.right) for pr, s in chunk])
                t = torch.tensor([s.t for _, s in chunk], dtype=torch.float32, device=self.device)
                out = _call_model(self.model, left, right, t, self.config)
                self.summary.model_calls += 1
                for j, (pr, s) in enumerate(chunk):
                    made[pr.index][s.at] = out[j : j + 1]
        return made


def _frame_tensor(frame: np.ndarray, device: torch.device) -> torch.Tensor:
    """(1,C,H,W) float tensor of an RGB or RGBA uint8 frame; the RGB planes exactly as `to_tensor` makes them."""
    if frame.shape[-1] != 4:
        return to_tensor(frame, device)
    alpha = torch.from_numpy(np.ascontiguousarray(frame[..., 3])).to(device).float().div_(255.0)
    return torch.cat([to_tensor(frame[..., :3], device), alpha[None, None]], 1)


def _alpha_model(model: Interpolator) -> Interpolator:
    """The model itself when it interpolates RGBA frames (never another copy of it: the backend asked for runs).

    Every rifelab backend does; a model without `interpolate_rgba` is refused with AlphaUnsupported.
    """
    if not callable(getattr(model, "interpolate_rgba", None)):
        raise AlphaUnsupported(f"{type(model).__name__} cannot interpolate an alpha channel (no interpolate_rgba); "
                               "use a rifelab model (load_rife, or rifelab.engines.spec.load_model) or flatten the "
                               "frames onto a background")
    return model


def _call_model(model: Interpolator, left: torch.Tensor, right: torch.Tensor, t: torch.Tensor,
                config: InterpolateConfig) -> torch.Tensor:
    """One batched model call; RGBA batches go through `interpolate_rgba` (alpha with the colour's flow and mask)."""
    if left.shape[1] == 4:
        return _alpha_model(model).interpolate_rgba(left, right, t, config.scale, config.ensemble)
    return model.interpolate(left, right, t, config.scale, config.ensemble)
