"""Interactive timestep viewer: I0, the frame interpolated at time t, I1 and the true middle frame, with live controls.

    viewer = TimestepViewer.from_clip(load_rife(), "bikes", max_frames=13, stride=2)
    viewer.widgets()                       # slider for t, dropdowns for the triplet and the scale
    state = viewer.show(0, 0.25, 1.0)      # compute and display one view; drive it from code or tests
    fig = viewer.strip(0, [0.25, 0.5, 0.75], 1.0)

Live controls stay responsive while a frame is computed: the status line says "computing t = ..." at once,
frames are made in a background thread, and a request that a newer slider value overtook is dropped (its
frame is not drawn), so only the latest value is rendered. A scale whose frames are slow on this device
(scale 4 on a CPU) shows its estimated cost and waits for a click before running. Frames are cached per
(triplet, t, scale), so moving back is instant. `request` is what every control calls: a plain method,
so tests and scripts drive the same path the widgets do.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from rifelab.frames.clips import Triplet, clip_triplets, load_clip
from rifelab.frames.images import to_tensor, to_uint8
from rifelab.measure.metrics import psnr
from rifelab.publish.inline import figures_as_png
from rifelab.rife.network import VALID_SCALES, check_scale
from rifelab.rife.contract import Interpolator


log = logging.getLogger(__name__)

__all__ = ["ViewState", "TimestepViewer", "relative_cost", "SLOW_CPU_SCALES"]

SLOW_CPU_SCALES = (4.0,)  # scales that ask before running on a CPU (seconds per frame even on small clips)


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


def relative_cost(scale: float) -> float:
    """Work of the four flow blocks at `scale` relative to scale 1 (pixels each block sees, summed)."""
    return sum((scale / k) ** 2 for k in (8, 4, 2, 1)) / sum((1 / k) ** 2 for k in (8, 4, 2, 1))


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (a live front end can show widgets updated from another thread)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class TimestepViewer:
    """Interpolates a chosen triplet's outer frames at any timestep and scale; draws views, strips and live controls."""

    def __init__(self, model: Interpolator, triplets: Sequence[Triplet], ensemble: bool = False, cache_size: int = 128):
        if not triplets:
            raise ValueError("the viewer needs at least one triplet; use more frames or a smaller stride")
        self.model = model
        self.triplets = list(triplets)
        self.ensemble = ensemble
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[int, float, float], np.ndarray] = OrderedDict()
        self._seconds: dict[float, float] = {}  # last model time per scale (for cost estimates)
        self.model_calls = 0
        self.last: ViewState | None = None
        self.controls: dict[str, Any] = {}
        # live controls: the latest request, its generation, the worker thread, what was drawn and dropped
        self._lock = threading.Lock()
        self._generation = 0
        self._pending: tuple[int, tuple[int, float, float]] | None = None
        self._worker: threading.Thread | None = None
        self._background = False
        self._confirmed: set[float] = set()
        self._png: OrderedDict[tuple[int, float, float], bytes] = OrderedDict()  # drawn views: a cached value redraws
        self.rendered: list[tuple[int, float, float]] = []
        self.dropped = 0

    @classmethod
    def from_clip(
        cls,
        model: Interpolator,
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

    @property
    def device(self) -> torch.device:
        return torch.device(getattr(self.model, "device", "cpu"))

    def _check(self, triplet: int, timestep: float, scale: float) -> tuple[int, float, float]:
        if not 0 <= int(triplet) < len(self.triplets):
            raise ValueError(f"triplet must be in 0..{len(self.triplets) - 1}, got {triplet!r}")
        t = float(timestep)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"timestep must lie in [0, 1], got {timestep!r}")
        return int(triplet), round(t, 6), check_scale(scale)

    def is_slow(self, scale: float) -> bool:
        """Whether frames at `scale` are slow enough here to ask first (scale 4 on a CPU)."""
        return self.device.type == "cpu" and float(scale) in SLOW_CPU_SCALES

    def estimate_seconds(self, scale: float) -> float | None:
        """Expected model time of one frame at `scale`: measured if seen, else scaled from a measured scale."""
        scale = float(scale)
        if scale in self._seconds:
            return self._seconds[scale]
        if not self._seconds:
            return None
        known, secs = min(self._seconds.items(), key=lambda kv: abs(kv[0] - scale))
        return secs * relative_cost(scale) / relative_cost(known)

    def cost_warning(self, scale: float) -> str:
        """The sentence shown before a slow scale runs."""
        est = self.estimate_seconds(scale)
        when = f"about {est:.0f} s per frame here" if est is not None else "many seconds per frame"
        return (f"scale {scale:g} on a CPU: the flow network does {relative_cost(scale):.0f}x the work of scale 1, "
                f"{when} (estimated from the frames made so far)")

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
            if self.is_slow(s) and s not in self._confirmed:
                log.warning("%s", self.cost_warning(s))
            dev = self.device
            a, b = to_tensor(tri.frame0, dev), to_tensor(tri.frame2, dev)
            with torch.inference_mode():
                out = self.model.interpolate(a, b, t, s, self.ensemble)
            frame = to_uint8(out)[0]
            self.model_calls += 1
            self._seconds[s] = time.perf_counter() - t0
            self._cache[key] = frame
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        state = ViewState(i, t, s, frame, float(psnr(frame, tri.gt)[0]), 0.0 if cached else time.perf_counter() - t0,
                          cached)
        self.last = state
        return state

    # ------------------------------------------------------------------ drawing

    def figure(self, state: ViewState | None = None, width: float = 13.0) -> Figure:
        """I0 | frame at t | I1 | true middle frame, with titles; a matplotlib Figure (thread-safe, no pyplot)."""
        state = state or self.last or self.update()
        tri = self.triplets[state.triplet]
        panels = [
            (tri.frame0, "I0 (t = 0)"),
            (state.frame, f"RIFE at t = {state.timestep:.2f} (scale {state.scale:g})"),
            (tri.frame2, "I1 (t = 1)"),
            (tri.gt, f"true middle frame\nPSNR of the RIFE frame: {state.psnr_vs_truth:.2f} dB"),
        ]
        return self._panels(panels, tri.name, width)

    def strip(self, triplet: int, timesteps: Sequence[float], scale: float = 1.0, width: float = 16.0) -> Figure:
        """I0, the RIFE frames at each timestep, I1 and the true middle frame in one row; a Figure."""
        i, _, s = self._check(triplet, 0.5, scale)
        tri = self.triplets[i]
        states = [self.update(i, t, s) for t in timesteps]
        panels = [(tri.frame0, "I0")] + [(st.frame, f"t = {st.timestep:.3g}") for st in states]
        panels += [(tri.frame2, "I1"), (tri.gt, "true middle")]
        return self._panels(panels, f"{tri.name}: RIFE frames at several timesteps (scale {s:g})", width)

    def _panels(self, panels: list[tuple[np.ndarray, str]], title: str, width: float) -> Figure:
        h, w = panels[0][0].shape[:2]
        n = len(panels)
        fig = Figure(figsize=(width, width / n * h / w + 0.8))
        for ax, (img, label) in zip(np.atleast_1d(fig.subplots(1, n)), panels):
            ax.imshow(img)
            ax.set_title(label, fontsize=9)
            ax.axis("off")
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        return fig

    def show(self, triplet: int = 0, timestep: float = 0.5, scale: float = 1.0) -> ViewState:
        """Compute one view and display its figure (notebook output); returns the view."""
        from IPython.display import display

        figures_as_png()
        state = self.update(triplet, timestep, scale)
        display(self.figure(state))
        return state

    # ------------------------------------------------------------------ live controls

    def widgets(self, triplet: int = 0, timestep: float = 0.5, scale: float = 1.0, step: float = 0.05,
                background: bool | None = None) -> Any:
        """Slider (timestep), dropdowns (triplet, scale), a status line and the view; an ipywidgets VBox.

        `background` computes frames in a worker thread (default: inside a Jupyter kernel), so the status line
        updates at once and stale requests are dropped; without it every request is computed before returning.
        """
        import ipywidgets as W

        i, t, s = self._check(triplet, timestep, scale)
        self._background = _in_kernel() if background is None else bool(background)
        # the slider gets >= 24 px per step, so one drag of a step lands on the next value
        steps = max(1, round(1.0 / step))
        slider = W.FloatSlider(value=t, min=0.0, max=1.0, step=step, description="timestep",
                               continuous_update=False, readout_format=".2f",
                               layout=W.Layout(width=f"{max(420, 24 * steps + 120)}px"))
        trip = W.Dropdown(options=[(tr.name, k) for k, tr in enumerate(self.triplets)], value=i, description="triplet")
        sc = W.Dropdown(options=[(f"{v:g}", v) for v in VALID_SCALES], value=s, description="scale",
                        layout=W.Layout(width="160px"))
        status = W.HTML(value="")
        confirm = W.Button(description="compute anyway", button_style="warning",
                           layout=W.Layout(display="none", width="auto"))  # the label is never cut
        image = W.Image(format="png", layout=W.Layout(width="100%", border="3px solid transparent"))
        self.controls = {"timestep": slider, "triplet": trip, "scale": sc, "status": status, "confirm": confirm,
                         "image": image}

        def changed(_: Any) -> None:
            self.request(trip.value, slider.value, sc.value)

        for w in (slider, trip, sc):
            w.observe(changed, names="value")
        confirm.on_click(lambda _: self.request(trip.value, slider.value, sc.value, confirmed=True))
        self.request(i, t, s)
        return W.VBox([W.HBox([slider, trip, sc]), W.HBox([status, confirm]), image])

    def request(self, triplet: int, timestep: float, scale: float, confirmed: bool = False) -> None:
        """What every control calls: show the view for these values, newest request first.

        A cached view is drawn at once. Otherwise the status line says "computing t = ..." and the frame is made
        (in the worker thread with `background`); a request overtaken by a newer one is not drawn. A slow scale
        (scale 4 on a CPU) first shows its cost and a "compute anyway" button, and runs only when confirmed.
        """
        key = self._check(triplet, timestep, scale)
        i, t, s = key
        status, confirm = self.controls.get("status"), self.controls.get("confirm")
        with self._lock:
            self._generation += 1
            gen = self._generation
            self._pending = None  # anything waiting is stale now
        if confirm is not None:
            confirm.layout.display = "none"
        if key in self._cache:
            self._draw(self.update(*key))
            return
        if self.is_slow(s) and s not in self._confirmed:
            if not confirmed:
                if status is not None:
                    status.value = f"<b>⚠ {self.cost_warning(s)}.</b> Not computed yet: press the button to run it."
                if confirm is not None:
                    confirm.description = f"compute at scale {s:g}"
                    confirm.layout.display = None
                return
            self._confirmed.add(s)
        if status is not None:
            est = self.estimate_seconds(s)
            eta = f", about {est:.1f} s" if est is not None else ""
            status.value = (f"⏳ computing t = {t:.2f} ({self.triplets[i].name}, scale {s:g}{eta}) … "
                            "<i>the frame shown (dashed frame) is the previous one</i>")
        if "image" in self.controls:
            self.controls["image"].layout.border = "3px dashed #e69f00"  # the old view is stale while computing
        with self._lock:
            self._pending = (gen, key)
            if self._background and self._worker is None:
                self._worker = threading.Thread(target=self._work, name="rifelab-viewer", daemon=True)
                self._worker.start()
                return
            if self._background:
                return  # the running worker picks it up
        self._work()

    def _work(self) -> None:
        while True:
            with self._lock:
                job, self._pending = self._pending, None
                if job is None:
                    self._worker = None
                    return
            gen, key = job
            try:
                state = self.update(*key)
            except Exception as exc:  # noqa: BLE001 - shown in the status line, the controls stay usable
                if "status" in self.controls:
                    self.controls["status"].value = f"error: {type(exc).__name__}: {exc}"
                log.exception("viewer: computing %s failed", key)
                continue
            with self._lock:
                stale = gen != self._generation
            if stale:
                self.dropped += 1
                continue
            self._draw(state)

    def _draw(self, state: ViewState) -> None:
        key = (state.triplet, state.timestep, state.scale)
        self.rendered.append(key)
        if "image" in self.controls:
            png = self._png.get(key)
            if png is None:  # a new value: draw the figure once; a cached value only swaps the image's bytes
                buf = io.BytesIO()
                self.figure(state).savefig(buf, format="png", dpi=100)
                png = self._png[key] = buf.getvalue()
                while len(self._png) > self.cache_size:
                    self._png.popitem(last=False)
            self._png.move_to_end(key)
            self.controls["image"].value = png
            self.controls["image"].layout.border = "3px solid transparent"
        if "status" in self.controls:
            took = "cached" if state.cached else f"{state.seconds:.1f} s"
            self.controls["status"].value = (f"t = {state.timestep:.2f}, {self.triplets[state.triplet].name}, "
                                             f"scale {state.scale:g} ({took})")

    def wait(self, timeout: float = 60.0) -> bool:
        """Wait until the worker thread has no request left (tests, scripts); True when idle."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                worker = self._worker
            if worker is None:
                return True
            worker.join(timeout=0.05)
        return False
