"""Interactive timestep viewer (notebook 00): I0, the frame interpolated at time t, I1 and the true middle frame.

    viewer = TimestepViewer.from_clip(load_rife(), "bikes", max_frames=13, stride=2)
    viewer.widgets()                       # slider for t, dropdowns for the triplet and the scale
    state = viewer.show(0, 0.25, 1.0)      # what a widget change calls; drive it from code or tests
    fig = viewer.strip(0, [0.25, 0.5, 0.75], 1.0)

The widget callback is `TimestepViewer.show` (compute with `update`, then draw): a plain method, so
papermill runs and tests set the same values the slider would. Frames are cached per
(triplet, t, scale), so moving the slider back is instant.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from .data import Triplet, clip_triplets, load_clip, to_tensor, to_uint8
from .models import VALID_SCALES, check_scale

log = logging.getLogger(__name__)

__all__ = ["ViewState", "TimestepViewer", "triplet_quality", "benchmark_figure"]


@dataclass
class ViewState:
    """One rendered view: the choices and the interpolated frame (uint8 H,W,3)."""

    triplet: int
    timestep: float
    scale: float
    frame: np.ndarray
    psnr_vs_truth: float  # PSNR (dB) of the frame against the true middle frame (meaningful at t = 0.5)
    seconds: float  # model time of this view (0 when cached)
    cached: bool


class TimestepViewer:
    """Interpolates a chosen triplet's outer frames at any timestep and scale; draws views and strips."""

    def __init__(self, model: Any, triplets: Sequence[Triplet], ensemble: bool = False, cache_size: int = 128):
        if not triplets:
            raise ValueError("the viewer needs at least one triplet; use more frames or a smaller stride")
        self.model = model
        self.triplets = list(triplets)
        self.ensemble = ensemble
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[int, float, float], np.ndarray] = OrderedDict()
        self.model_calls = 0
        self.last: ViewState | None = None
        self.controls: dict[str, Any] = {}

    @classmethod
    def from_clip(
        cls,
        model: Any,
        clip: str = "carphone",
        max_frames: int | None = None,
        stride: int = 1,
        count: int | None = None,
        start: int = 0,
        ensemble: bool = False,
    ) -> "TimestepViewer":
        """Triplets (frames i, i+stride, i+2*stride) of a bundled clip or a video path."""
        frames = load_clip(clip, max_frames=max_frames, start=start)
        triplets = list(clip_triplets(frames, stride=stride, count=count))
        for t in triplets:
            t.name = f"frames {start + int(t.name)}, {start + int(t.name) + stride}, {start + int(t.name) + 2 * stride}"
        return cls(model, triplets, ensemble=ensemble)

    # ------------------------------------------------------------------ computing

    def _check(self, triplet: int, timestep: float, scale: float) -> tuple[int, float, float]:
        if not 0 <= int(triplet) < len(self.triplets):
            raise ValueError(f"triplet must be in 0..{len(self.triplets) - 1}, got {triplet!r}")
        t = float(timestep)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"timestep must lie in [0, 1], got {timestep!r}")
        return int(triplet), round(t, 6), check_scale(scale)

    def frame(self, triplet: int, timestep: float, scale: float = 1.0) -> np.ndarray:
        """The interpolated frame (uint8 H,W,3) between the triplet's outer frames at `timestep`."""
        return self.update(triplet, timestep, scale).frame

    def update(self, triplet: int = 0, timestep: float = 0.5, scale: float = 1.0) -> ViewState:
        """Compute (or fetch from the cache) the view for these choices; sets `self.last`."""
        i, t, s = self._check(triplet, timestep, scale)
        key = (i, t, s)
        tri = self.triplets[i]
        t0 = time.perf_counter()
        cached = key in self._cache
        if cached:
            self._cache.move_to_end(key)
            frame = self._cache[key]
        else:
            dev = getattr(self.model, "device", "cpu")
            a, b = to_tensor(tri.frame0, dev), to_tensor(tri.frame2, dev)
            with torch.inference_mode():
                out = self.model.interpolate(a, b, t, s, self.ensemble)
            frame = to_uint8(out)[0]
            self.model_calls += 1
            self._cache[key] = frame
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        from .metrics import psnr

        state = ViewState(i, t, s, frame, float(psnr(frame, tri.gt)[0]), 0.0 if cached else time.perf_counter() - t0,
                          cached)
        self.last = state
        return state

    # ------------------------------------------------------------------ drawing

    def figure(self, state: ViewState | None = None, width: float = 13.0) -> Any:
        """I0 | frame at t | I1 | true middle frame, with titles; a matplotlib Figure."""
        import matplotlib.pyplot as plt

        state = state or self.last or self.update()
        tri = self.triplets[state.triplet]
        panels = [
            (tri.frame0, "I0 (t = 0)"),
            (state.frame, f"RIFE at t = {state.timestep:.2f} (scale {state.scale:g})"),
            (tri.frame2, "I1 (t = 1)"),
            (tri.gt, f"true middle frame\nPSNR of the RIFE frame: {state.psnr_vs_truth:.2f} dB"),
        ]
        h, w = tri.frame0.shape[:2]
        fig, axes = plt.subplots(1, 4, figsize=(width, width / 4 * h / w + 0.8))
        for ax, (img, title) in zip(axes, panels):
            ax.imshow(img)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        fig.suptitle(tri.name, fontsize=10)
        fig.tight_layout()
        return fig

    def show(self, triplet: int = 0, timestep: float = 0.5, scale: float = 1.0) -> ViewState:
        """The widget callback: compute the view and display its figure (in the widget's output area)."""
        import matplotlib.pyplot as plt

        state = self.update(triplet, timestep, scale)
        fig = self.figure(state)
        try:
            from IPython.display import display

            display(fig)
        finally:
            plt.close(fig)
        return state

    def strip(self, triplet: int, timesteps: Sequence[float], scale: float = 1.0, width: float = 16.0) -> Any:
        """I0, the RIFE frames at each timestep, I1 and the true middle frame in one row; a Figure."""
        import matplotlib.pyplot as plt

        i, _, s = self._check(triplet, 0.5, scale)
        tri = self.triplets[i]
        states = [self.update(i, t, s) for t in timesteps]
        panels = [(tri.frame0, "I0")]
        panels += [(st.frame, f"t = {st.timestep:.3g}") for st in states]
        panels += [(tri.frame2, "I1"), (tri.gt, "true middle")]
        h, w = tri.frame0.shape[:2]
        n = len(panels)
        fig, axes = plt.subplots(1, n, figsize=(width, width / n * h / w + 0.7))
        for ax, (img, title) in zip(np.atleast_1d(axes), panels):
            ax.imshow(img)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        fig.suptitle(f"{tri.name}: RIFE frames at several timesteps (scale {s:g})", fontsize=10)
        fig.tight_layout()
        return fig

    # ------------------------------------------------------------------ widgets

    def widgets(self, triplet: int = 0, timestep: float = 0.5, scale: float = 1.0, step: float = 0.05) -> Any:
        """Slider (timestep) and dropdowns (triplet, scale) wired to `show`; an ipywidgets VBox to display."""
        import ipywidgets as W

        i, t, s = self._check(triplet, timestep, scale)
        slider = W.FloatSlider(value=t, min=0.0, max=1.0, step=step, description="timestep",
                               continuous_update=False, readout_format=".2f")
        trip = W.Dropdown(options=[(tr.name, k) for k, tr in enumerate(self.triplets)], value=i, description="triplet")
        sc = W.Dropdown(options=[(f"{v:g}", v) for v in VALID_SCALES], value=s, description="scale")
        out = W.interactive_output(self.show, {"triplet": trip, "timestep": slider, "scale": sc})
        self.controls = {"timestep": slider, "triplet": trip, "scale": sc, "output": out}
        return W.VBox([W.HBox([slider, trip, sc]), out])


def triplet_quality(viewer: TimestepViewer, scale: float = 1.0) -> pd.DataFrame:
    """Per triplet: PSNR/SSIM of RIFE at t = 0.5 against the true middle frame, beside two naive baselines.

    Baselines: repeating I0 (what a duplicate-frame rate converter shows) and the pixel average of I0 and I1.
    """
    from .metrics import psnr, ssim

    rows = []
    for k, tri in enumerate(viewer.triplets):
        rife = viewer.frame(k, 0.5, scale)
        blend = ((tri.frame0.astype(np.float64) + tri.frame2.astype(np.float64)) / 2).round().astype(np.uint8)
        for method, pred in (("RIFE t=0.5", rife), ("repeat I0", tri.frame0), ("average of I0 and I1", blend)):
            rows.append({"triplet": tri.name, "method": method, "psnr_db": float(psnr(pred, tri.gt)[0]),
                         "ssim": float(ssim(pred, tri.gt)[0])})
    return pd.DataFrame(rows)


def benchmark_figure(df: pd.DataFrame, title: str | None = None) -> Any:
    """Bar chart of output frames per second per mode (median, p10-p90 whiskers) from `benchmark_pipeline`."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    y = np.arange(len(df))
    err = np.vstack([df["output_fps"] - df["output_fps_p10"], df["output_fps_p90"] - df["output_fps"]]).clip(min=0)
    colors = ["#4c72b0" if m == "model only" else "#55a868" if "threads" in m else "#c44e52" for m in df["mode"]]
    ax.barh(y, df["output_fps"], xerr=err, color=colors, capsize=4)
    ax.set_yticks(y, [f"{m}\n{s:.0%} of model-only rate" for m, s in zip(df["mode"], df["model_share"])])
    ax.invert_yaxis()
    ax.set_xlabel("output frames per second (median; whiskers p10-p90)")
    r = df.iloc[0]
    ax.set_title(title or f"rifelab interpolate, {r['resolution']}, {int(r['input_frames'])} -> "
                 f"{int(r['output_frames'])} frames", fontsize=10)
    fig.tight_layout()
    return fig
