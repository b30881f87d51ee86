"""Frame splits of the bundled clips: the frames a use reads (a `ClipRange`), samples spread over such ranges
(triplets, frame pairs), and the check that two uses never share a frame.

The one splits helper of rifelab: INT8 calibration (`rifelab.engines.backends`), the optimisation study's held-out
triplets, and the pruning study's fine-tuning, sensitivity and held-out triplets all read their frames through it.
It lives in `frames/`, not in `studies/`, because library code outside any study needs it too (OpenVINO INT8
calibrates on `CALIBRATION_RANGES` when `rifelab interpolate` asks for INT8), and library packages import no study.

    train = clip_ranges({"bikes": [0, 120]}, "train_ranges")        # validated [start, stop) ranges
    triplets = range_triplets(train, 12)                            # 12 cut-free triplets per clip, spread evenly
    check_disjoint({"fine-tuning": train, "held-out": clip_ranges(held, "eval_ranges")})   # SplitError if shared
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from rifelab.frames.clips import Triplet, clip_triplets, load_clip
from rifelab.frames.images import to_tensor, to_uint8
from rifelab.frames.scenes import decide_pair

log = logging.getLogger(__name__)

__all__ = [
    "SplitError", "ClipRange", "RangeSpec", "LAYOUTS", "clip_ranges", "range_frames", "spread", "exclude_scene_cuts",
    "range_triplets", "range_pairs", "overlapping_frames", "check_disjoint",
]

LAYOUTS = ("even", "apart")


class SplitError(ValueError):
    """A frame range that cannot be read as asked (malformed, too short), or two uses sharing frames."""


@dataclass(frozen=True)
class ClipRange:
    """Frames [start, stop) of one bundled clip (or video path)."""

    clip: str
    start: int
    stop: int

    @property
    def frames(self) -> range:
        return range(self.start, self.stop)

    def load(self, loader: Callable[..., np.ndarray] | None = None) -> np.ndarray:
        """The decoded frames (T, H, W, 3) uint8; `loader` has `load_clip`'s signature."""
        return (loader or load_clip)(self.clip, max_frames=self.stop - self.start, start=self.start)

    def __str__(self) -> str:
        return f"{self.clip} [{self.start}, {self.stop})"


RangeSpec = Union[Mapping[str, Sequence[int]], Iterable[ClipRange]]


def clip_ranges(ranges: RangeSpec, name: str = "frame range") -> list[ClipRange]:
    """`{clip: [start, stop)}` (as params files write it) as ClipRanges; `name` labels errors (e.g. a params key)."""
    if not isinstance(ranges, Mapping):
        out = list(ranges)
        if not all(isinstance(r, ClipRange) for r in out):
            raise SplitError(f"{name}: expected a mapping clip -> [start, stop) or ClipRanges, got {ranges!r}")
        return out
    out = []
    for clip, v in ranges.items():
        ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(
            isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in v)
        if not ok or not 0 <= v[0] < v[1]:
            raise SplitError(f"{name}[{clip!r}] = {v!r}: expected [start, stop) frame numbers, 0 <= start < stop")
        out.append(ClipRange(str(clip), int(v[0]), int(v[1])))
    return out


def range_frames(ranges: RangeSpec, name: str = "frame range") -> dict[str, range]:
    """Clip -> the frames its range covers (what a use of these ranges may read)."""
    return {r.clip: r.frames for r in clip_ranges(ranges, name)}


def spread(n: int, count: int) -> np.ndarray:
    """Up to `count` distinct indices into range(n), spread evenly from the first to the last."""
    return np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(int))


def exclude_scene_cuts(triplets: Sequence[Triplet]) -> list[Triplet]:
    """Drop triplets that straddle a scene cut (`decide_pair` on either half): across a cut no answer is right."""
    kept = []
    for tr in triplets:
        if "cut" in (decide_pair(tr.frame0, tr.gt).kind, decide_pair(tr.gt, tr.frame2).kind):
            log.info("triplet %s straddles a scene cut; skipped", getattr(tr, "name", "?"))
        else:
            kept.append(tr)
    return kept


def _pick(candidates: list[Triplet], count: int, layout: str) -> list[Triplet]:
    if layout == "even":
        return [candidates[i] for i in spread(len(candidates), count)]
    # apart: no two triplets share a frame; `(n - 2) // count` frames apart (at least 3) from the first frame
    step = max(3, len(candidates) // count)
    return candidates[::step][:count]


def _resized(tr: Triplet, size: tuple[int, int] | None) -> Triplet:
    if size is None or tr.frame0.shape[:2] == (size[1], size[0]):
        return tr
    x = F.interpolate(to_tensor([tr.frame0, tr.gt, tr.frame2]), size=(size[1], size[0]), mode="bicubic",
                      align_corners=False)
    a, gt, b = to_uint8(x)
    return Triplet(tr.name, a, gt, b)


def range_triplets(
    ranges: RangeSpec,
    count: int,
    *,
    layout: str = "even",
    skip_cuts: bool = True,
    size: tuple[int, int] | None = None,
    loader: Callable[..., np.ndarray] | None = None,
    name: str = "frame range",
) -> list[Triplet]:
    """Up to `count` triplets (frames i, i+1, i+2) per clip range, named '<clip>:<i>'.

    layout "even": spread evenly over the range, first to last (neighbours may share a frame); "apart": no two
    share a frame, `(frames - 2) // count` apart (at least 3) from the range's first frame. `skip_cuts` drops
    triplets across a scene cut first. `size` (width, height): frames resized (bicubic, uint8) after the choice.
    """
    if layout not in LAYOUTS:
        raise SplitError(f"layout {layout!r}: expected one of {list(LAYOUTS)}")
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise SplitError(f"triplet count must be an integer >= 1, got {count!r}")
    out: list[Triplet] = []
    for r in clip_ranges(ranges, name):
        frames = r.load(loader)
        if len(frames) < 3:
            raise SplitError(f"clip {r.clip!r} has fewer than 3 frames in [{r.start}, {r.stop})")
        candidates = [Triplet(f"{r.clip}:{r.start + int(t.name)}", t.frame0, t.gt, t.frame2)
                      for t in clip_triplets(frames, step=1)]
        if skip_cuts:
            candidates = exclude_scene_cuts(candidates)
        if not candidates:
            raise SplitError(f"clip {r.clip!r} has no cut-free triplet in frames [{r.start}, {r.stop})")
        out += [_resized(t, size) for t in _pick(candidates, int(count), layout)]
    return out


def range_pairs(
    ranges: RangeSpec, count: int, size: tuple[int, int], name: str = "frame range"
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` consecutive frame pairs in all, shared out over the ranges and spread evenly over each, resized
    (bicubic) to `size` (width, height): two (count, 3, H, W) float tensors in [0, 1]."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise SplitError(f"count must be >= 1, got {count}")
    width, height = size
    items = clip_ranges(ranges, name)
    per_range = [count // len(items) + (1 if i < count % len(items) else 0) for i in range(len(items))]
    firsts: list[torch.Tensor] = []
    seconds: list[torch.Tensor] = []
    for r, k in zip(items, per_range):
        if k == 0:
            continue
        if r.stop - r.start < 2:
            raise SplitError(f"{name} {r} holds no frame pair")
        frames = to_tensor(r.load())
        idx = spread(len(frames) - 1, k)
        if len(idx) < k:
            raise SplitError(f"{name} {r} has too few frames for {k} pairs")
        a, b = frames[idx], frames[idx + 1]
        if a.shape[-2:] != (height, width):
            a = F.interpolate(a, size=(height, width), mode="bicubic", align_corners=False).clamp_(0, 1)
            b = F.interpolate(b, size=(height, width), mode="bicubic", align_corners=False).clamp_(0, 1)
        firsts.append(a)
        seconds.append(b)
    return torch.cat(firsts), torch.cat(seconds)


def overlapping_frames(first: Mapping[str, Iterable[int]], second: Mapping[str, Iterable[int]]) -> dict[str, list[int]]:
    """Frames of each clip used by both `first` and `second` (clip -> frame indices, e.g. a `range`); empty when
    the two uses are disjoint."""
    out = {}
    for clip in sorted(set(first) & set(second)):
        both = {int(i) for i in first[clip]} & {int(i) for i in second[clip]}
        if both:
            out[clip] = sorted(both)
    return out


def check_disjoint(uses: Mapping[str, Mapping[str, Iterable[int]]]) -> None:
    """Raise SplitError naming the first two uses (name -> clip -> frames) that share a frame."""
    names = list(uses)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = overlapping_frames(uses[a], uses[b])
            if both:
                where = "; ".join(f"{c} frames {v[0]}..{v[-1]}" for c, v in both.items())
                raise SplitError(f"{a} and {b} share frames ({where}): their ranges overlap; make them disjoint")
