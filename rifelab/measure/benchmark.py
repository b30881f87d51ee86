"""Model benchmarks on real frames: latency (median and spread), FPS, peak memory, GMAC, parameters."""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from rifelab.frames.clips import load_clip
from rifelab.frames.images import resize, to_tensor
from rifelab.measure.metrics import agreement
from rifelab.measure.profiling import (
    PeakMemory,
    Timing,
    count_flops,
    count_parameters,
    time_callable,
)
from rifelab.rife.model import RIFE


log = logging.getLogger(__name__)

__all__ = ["parse_resolution", "pixel_count", "real_frame_pair", "model_macs", "benchmark_interpolate", "agreement", "bench_row"]


def parse_resolution(text: str | tuple[int, int] | list[int]) -> tuple[int, int]:
    """'1280x720' (W x H) or (W, H) -> (W, H), with a clear error otherwise."""
    if isinstance(text, (tuple, list)):
        if len(text) != 2:
            raise ValueError(f"resolution must be (width, height), got {text!r}")
        w, h = int(text[0]), int(text[1])
    else:
        parts = str(text).lower().replace("×", "x").split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"resolution must look like 1280x720 (width x height), got {text!r}")
        w, h = int(parts[0]), int(parts[1])
    if not (16 <= w <= 16384 and 16 <= h <= 16384):
        raise ValueError(f"resolution {w}x{h} is out of range: each side must be within 16..16384 pixels")
    return w, h


def pixel_count(resolution: str | tuple[int, int] | list[int]) -> int:
    """Pixels per frame of a resolution ('1280x720' -> 921600): the order tables and plots list resolutions in."""
    w, h = parse_resolution(resolution)
    return w * h


def real_frame_pair(
    width: int, height: int, clip: str = "bigbuckbunny", index: int = 0, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two consecutive real clip frames resized (bicubic) to width x height, (1,3,H,W) float in [0, 1]."""
    frames = load_clip(clip, max_frames=index + 2)
    pair = resize(to_tensor(frames[index : index + 2]), width, height)
    return pair[0:1].to(device), pair[1:2].to(device)


def model_macs(model: RIFE, width: int, height: int, scale: float = 1.0) -> tuple[float, int]:
    """(MACs, params) of one interpolated frame at width x height (padded as `interpolate` pads)."""
    img0 = torch.zeros(1, 3, height, width, device=model.device, dtype=model.dtype)
    p0, p1, t, scale_list, _ = model.prepare(img0, img0, 0.5, scale)

    def inputs(_shape: tuple) -> dict[str, Any]:
        return {"img0": p0, "img1": p1, "t": t, "scale_list": scale_list}

    with torch.inference_mode():
        macs, params = count_flops(model.net, inputs)
    return macs, params


def benchmark_interpolate(
    interpolate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    img0: torch.Tensor,
    img1: torch.Tensor,
    device: str | torch.device,
    warmup: int = 3,
    repeats: int = 10,
) -> tuple[Timing, PeakMemory]:
    """Time `interpolate(img0, img1)` on `device` and measure its peak memory."""
    with torch.inference_mode():
        with PeakMemory(device) as mem:
            timing = time_callable(lambda: interpolate(img0, img1), device=device, warmup=warmup, repeats=repeats)
    return timing, mem


def bench_row(
    model: RIFE,
    resolution: str | tuple[int, int],
    device: str | torch.device,
    scale: float = 1.0,
    warmup: int = 3,
    repeats: int = 10,
    with_macs: bool = True,
    interpolate: Callable[..., torch.Tensor] | None = None,
) -> dict[str, Any]:
    """One benchmark row: resolution, latency stats, FPS, peak memory, GMAC and parameters.

    With `interpolate` (another engine or backend), the row also holds its agreement with `model`'s
    FP32 output on the same frames (`psnr_vs_fp32_db`, ...).
    """
    w, h = parse_resolution(resolution)
    img0, img1 = real_frame_pair(w, h, device=device)
    fn = interpolate or model.interpolate
    timing, mem = benchmark_interpolate(lambda a, b: fn(a, b, 0.5, scale), img0, img1, device, warmup, repeats)
    row: dict[str, Any] = {"resolution": f"{w}x{h}", "width": w, "height": h, "scale": scale}
    row.update(timing.as_dict())
    row["peak_mem_mib"] = mem.peak_mib
    row["peak_mem_kind"] = mem.kind
    if with_macs:
        macs, _ = model_macs(model, w, h, scale)
        row["gmac"] = macs / 1e9
    row["params_m"] = count_parameters(model.net) / 1e6
    if interpolate is not None:
        with torch.inference_mode():
            ref = model.interpolate(img0, img1, 0.5, scale)
            row.update(agreement(fn(img0, img1, 0.5, scale).float().cpu(), ref.float().cpu()))
    return row
