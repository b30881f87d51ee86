"""The one scene-cut and static-pair detector: `rifelab interpolate` duplicates such pairs, studies drop them.

A pair whose SSIM is at least `static_ssim` is static; a pair whose SSIM is below `cut_ssim` or whose colour
histograms differ by more than `cut_hist` (total variation distance) is a scene cut. SSIM is the official-protocol
SSIM (Gaussian window, rifelab.measure.metrics.ssim_skimage) on copies shrunk by area averaging to at most 256 pixels on the
long side, so the test costs little even on 4K frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rifelab.frames.images import to_tensor
from rifelab.measure.metrics import ssim_skimage

__all__ = ["SceneThresholds", "PairDecision", "histogram_distance", "pair_similarity", "decide_pair"]

SIMILARITY_MAX_SIDE = 256
HIST_BINS = 32


@dataclass(frozen=True)
class SceneThresholds:
    """Static-frame and scene-cut thresholds; None switches a test off."""

    static_ssim: float | None = 0.996  # SSIM >= this: static pair, duplicate (Practical-RIFE's value)
    cut_ssim: float | None = 0.2  # SSIM < this: scene cut, duplicate
    cut_hist: float | None = 0.4  # colour-histogram distance (0..1) > this: scene cut, duplicate

    def validate(self) -> None:
        for name in ("static_ssim", "cut_ssim", "cut_hist"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and 0.0 <= float(v) <= 1.0):
                raise ValueError(f"--{name.replace('_', '-')} must be a number in [0, 1] or 'off', got {v!r}")
        if self.static_ssim is not None and self.cut_ssim is not None and self.cut_ssim >= self.static_ssim:
            raise ValueError(
                f"--cut-ssim ({self.cut_ssim}) must be below --static-ssim ({self.static_ssim}): a pair cannot be "
                "both a scene cut and static"
            )

    @property
    def enabled(self) -> bool:
        return any(v is not None for v in (self.static_ssim, self.cut_ssim, self.cut_hist))


@dataclass(frozen=True)
class PairDecision:
    """What to do with a pair: 'interpolate', 'static' or 'cut' (duplicate), or 'copy' (multi 2); with the measures."""

    kind: str
    ssim: float | None = None
    hist: float | None = None


def _shrink(frame: np.ndarray, max_side: int) -> torch.Tensor:
    x = to_tensor(frame)
    h, w = x.shape[-2:]
    f = max_side / max(h, w)
    if f < 1.0:
        x = F.interpolate(x, size=(max(1, round(h * f)), max(1, round(w * f))), mode="area")
    return x


def histogram_distance(a: np.ndarray, b: np.ndarray, bins: int = HIST_BINS) -> float:
    """Mean over R, G, B of the total variation distance between the two frames' normalised histograms (0..1)."""
    shift = 8 - int(np.log2(bins))
    d = 0.0
    for c in range(3):
        ha = np.bincount((a[..., c] >> shift).ravel(), minlength=bins) / a[..., c].size
        hb = np.bincount((b[..., c] >> shift).ravel(), minlength=bins) / b[..., c].size
        d += 0.5 * float(np.abs(ha - hb).sum())
    return d / 3.0


def pair_similarity(a: np.ndarray, b: np.ndarray, max_side: int = SIMILARITY_MAX_SIDE) -> tuple[float | None, float]:
    """(SSIM on shrunk copies, colour-histogram distance) of two uint8 (H,W,3) frames; SSIM None below 11 px."""
    sa, sb = _shrink(a, max_side), _shrink(b, max_side)
    s = float(ssim_skimage(sa, sb)[0]) if min(sa.shape[-2:]) >= 11 else None
    return s, histogram_distance(a, b)


def decide_pair(a: np.ndarray, b: np.ndarray, thresholds: SceneThresholds = SceneThresholds()) -> PairDecision:
    """Static (SSIM >= static_ssim), cut (SSIM < cut_ssim or histogram distance > cut_hist) or interpolate."""
    if not thresholds.enabled:
        return PairDecision("interpolate")
    s, h = pair_similarity(a, b)
    if s is not None and thresholds.static_ssim is not None and s >= thresholds.static_ssim:
        return PairDecision("static", s, h)
    if (s is not None and thresholds.cut_ssim is not None and s < thresholds.cut_ssim) or (
        thresholds.cut_hist is not None and h > thresholds.cut_hist
    ):
        return PairDecision("cut", s, h)
    return PairDecision("interpolate", s, h)
