"""RIFE v4 flow network (IFNet, variants 4.0 and 4.6), checkpoint loading and `interpolate`.

Written from `spec/ifnet-v4.md`. The fast path (no refinement network) is what RIFE 4.x ships:

    model = load_rife()                                    # bundled RIFE 4.0 weights, CPU
    out = model.interpolate(img0, img1, timestep=0.5)      # (N,3,H,W) floats in [0, 1]
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .assets import fetch
from .data import DataError, to_tensor
from .profiling import resolve_device

log = logging.getLogger(__name__)

__all__ = [
    "VALID_SCALES",
    "CheckpointError",
    "IFBlock",
    "IFNet",
    "RIFE",
    "warp",
    "pad_to_multiple",
    "padding_multiple",
    "timestep_plane",
    "blend_warped",
    "load_state_dict",
    "load_rife",
]

VALID_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
BLOCK_WIDTHS = (192, 128, 96, 64)
BLOCK_INPUTS = (7, 12, 12, 12)
SKIPPED_GROUPS = ("contextnet", "unet", "block_tea")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or does not fit the network."""


# ----------------------------------------------------------------------------- warp

_GRID_CACHE: dict[tuple, torch.Tensor] = {}


def _axis(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """`size` evenly spaced values from -1 to 1 in `dtype`.

    Built from `arange` rather than `linspace`: the ONNX exporter folds a traced `linspace` into a
    float64 constant (ONNX Runtime's GridSample then refuses the float64 grid), while `arange` stays in
    `dtype` and keeps `size` symbolic for exports with dynamic height and width.
    """
    if torch.jit.is_tracing():  # `size` is symbolic here; max() would freeze it into a constant
        return torch.arange(size, device=device, dtype=dtype) * (2.0 / (size - 1)) - 1.0
    return torch.arange(size, device=device, dtype=dtype) * (2.0 / max(size - 1, 1)) - 1.0


def base_grid(n: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Identity sampling grid in [-1, 1], shape (n, 2, h, w), cached per shape/device/dtype.

    Not cached while traced or compiled (torch.jit, torch.compile, torch.export): the grid would be a symbolic or
    fake tensor, and a later eager call would find it in the cache.
    """
    tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
    key = (n, h, w, str(device), dtype)
    grid = None if tracing else _GRID_CACHE.get(key)
    if grid is None:
        xs = _axis(w, device, dtype).view(1, 1, 1, w).expand(n, 1, h, w)
        ys = _axis(h, device, dtype).view(1, 1, h, 1).expand(n, 1, h, w)
        grid = torch.cat([xs, ys], dim=1)
        if not tracing:
            if len(_GRID_CACHE) > 64:
                _GRID_CACHE.clear()
            _GRID_CACHE[key] = grid
    return grid


def grid_normaliser(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(1, 2, 1, 1) divisors turning a pixel flow (x, y) into grid units: (W-1)/2, (H-1)/2."""
    if torch.jit.is_tracing():  # symbolic sizes (dynamic export): built from them, not frozen into constants
        return torch.stack([(w - 1) / 2.0, (h - 1) / 2.0]).to(device=device, dtype=dtype).view(1, 2, 1, 1)
    return torch.tensor([max(w - 1, 1) / 2.0, max(h - 1, 1) / 2.0], device=device, dtype=dtype).view(1, 2, 1, 1)


def warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp `img` (N,C,H,W) by `flow` (N,2,H,W) in pixels (x, y).

    Bilinear, border padding, align_corners=True. Half-precision inputs are warped in float32
    and cast back: fp16 sampling coordinates lose sub-pixel accuracy on large frames.
    """
    out_dtype = img.dtype
    compute = torch.float32 if out_dtype in (torch.float16, torch.bfloat16) else out_dtype
    n, _, h, w = flow.shape
    flow = flow.to(compute)
    grid = (base_grid(n, h, w, flow.device, compute) + flow / grid_normaliser(h, w, flow.device, compute))
    grid = grid.permute(0, 2, 3, 1)
    out = F.grid_sample(img.to(compute), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.to(out_dtype)


# ----------------------------------------------------------------------------- blocks


def conv(cin: int, cout: int, k: int = 3, stride: int = 1, pad: int = 1, variant: str = "4.0") -> nn.Sequential:
    """Conv2d with bias followed by the variant's activation (4.0: PReLU, 4.6: LeakyReLU(0.2))."""
    act: nn.Module = nn.PReLU(cout) if variant == "4.0" else nn.LeakyReLU(0.2)
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, bias=True), act)


class ResConv(nn.Module):
    """v4.6 residual unit: LeakyReLU(0.2)(conv3x3(x) * beta + x)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1, bias=True)
        self.beta = nn.Parameter(torch.ones(1, c, 1, 1))
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x) * self.beta + x)


class IFBlock(nn.Module):
    """One coarse-to-fine flow block: estimates (flow, mask) at 1/scale of the frame."""

    def __init__(self, cin: int, c: int, variant: str = "4.0"):
        super().__init__()
        if variant not in ("4.0", "4.6"):
            raise ValueError(f"unknown IFNet variant {variant!r}; expected '4.0' or '4.6'")
        self.variant = variant
        self.conv0 = nn.Sequential(conv(cin, c // 2, 3, 2, 1, variant), conv(c // 2, c, 3, 2, 1, variant))
        if variant == "4.0":
            self.convblock = nn.Sequential(*[conv(c, c, variant=variant) for _ in range(8)])
            self.lastconv = nn.ConvTranspose2d(c, 5, 4, 2, 1)
        else:
            self.convblock = nn.Sequential(*[ResConv(c) for _ in range(8)])
            self.lastconv = nn.Sequential(nn.ConvTranspose2d(c, 24, 4, 2, 1), nn.PixelShuffle(2))

    def forward(
        self, x: torch.Tensor, flow: torch.Tensor | None = None, scale: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.interpolate(x, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
        if flow is not None:
            flow = F.interpolate(flow, scale_factor=1.0 / scale, mode="bilinear", align_corners=False) * (1.0 / scale)
            x = torch.cat((x, flow), 1)
        feat = self.conv0(x)
        if self.variant == "4.0":
            feat = self.convblock(feat) + feat
            up = scale * 2
        else:
            feat = self.convblock(feat)
            up = scale
        tmp = self.lastconv(feat)
        tmp = F.interpolate(tmp, scale_factor=up, mode="bilinear", align_corners=False)
        return tmp[:, :4] * up, tmp[:, 4:5]


def _swap_flow(flow: torch.Tensor) -> torch.Tensor:
    return torch.cat((flow[:, 2:4], flow[:, :2]), 1)


def _channel_cat(tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.cat(tensors, 1)


class IFNet(nn.Module):
    """Four IFBlocks, coarse to fine, then a mask-weighted blend of both warped frames."""

    def __init__(self, variant: str = "4.0", widths: Sequence[int] = BLOCK_WIDTHS):
        super().__init__()
        self.variant = variant
        self.block0 = IFBlock(BLOCK_INPUTS[0], widths[0], variant)
        self.block1 = IFBlock(BLOCK_INPUTS[1], widths[1], variant)
        self.block2 = IFBlock(BLOCK_INPUTS[2], widths[2], variant)
        self.block3 = IFBlock(BLOCK_INPUTS[3], widths[3], variant)

    @property
    def blocks(self) -> list[IFBlock]:
        return [self.block0, self.block1, self.block2, self.block3]

    def flow_and_mask(
        self,
        img0: torch.Tensor,
        img1: torch.Tensor,
        t: torch.Tensor,
        scale_list: Sequence[float] = (8, 4, 2, 1),
        ensemble: bool = False,
        warp_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        cat_fn: Callable[[tuple[torch.Tensor, ...]], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Bidirectional flow (N,4,H,W) and blend logits (N,1,H,W) for padded inputs and a t-plane.

        `warp_fn` / `cat_fn` replace the backward warp and the channel concat of each block's input
        (the inference engine passes a cached-grid warp and an NHWC-keeping concat); default: `warp`, `torch.cat`.
        """
        warp_fn = warp_fn or warp
        cat_fn = cat_fn or _channel_cat
        flow: torch.Tensor | None = None
        mask: torch.Tensor | None = None
        for i, block in enumerate(self.blocks):
            s = scale_list[i]
            if flow is None:
                f, m = block(cat_fn((img0, img1, t)), None, s)
                if ensemble:
                    f2, m2 = block(cat_fn((img1, img0, 1 - t)), None, s)
                    f, m = (f + _swap_flow(f2)) / 2, (m - m2) / 2
                flow, mask = f, m
            else:
                w0, w1 = warp_fn(img0, flow[:, :2]), warp_fn(img1, flow[:, 2:4])
                f, m = block(cat_fn((w0, w1, t, mask)), flow, s)
                if ensemble:
                    f2, m2 = block(cat_fn((w1, w0, 1 - t, -mask)), _swap_flow(flow), s)
                    f, m = (f + _swap_flow(f2)) / 2, (m - m2) / 2
                flow, mask = flow + f, mask + m
        assert flow is not None and mask is not None
        return flow, mask

    def forward(
        self,
        img0: torch.Tensor,
        img1: torch.Tensor,
        t: torch.Tensor,
        scale_list: Sequence[float] = (8, 4, 2, 1),
        ensemble: bool = False,
    ) -> torch.Tensor:
        """Interpolated frame for padded inputs (sizes a multiple of 64/scale) and a t-plane (N,1,H,W)."""
        frame, _, _ = self.forward_all(img0, img1, t, scale_list, ensemble)
        return frame

    def forward_all(
        self,
        img0: torch.Tensor,
        img1: torch.Tensor,
        t: torch.Tensor,
        scale_list: Sequence[float] = (8, 4, 2, 1),
        ensemble: bool = False,
        warp_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        cat_fn: Callable[[tuple[torch.Tensor, ...]], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(frame, flow, mask logits) for padded inputs (`warp_fn`, `cat_fn` as in `flow_and_mask`)."""
        flow, mask = self.flow_and_mask(img0, img1, t, scale_list, ensemble, warp_fn, cat_fn)
        warp_fn = warp_fn or warp
        w0, w1 = warp_fn(img0, flow[:, :2]), warp_fn(img1, flow[:, 2:4])
        m = torch.sigmoid(mask)
        return w0 * m + w1 * (1 - m), flow, mask


# ----------------------------------------------------------------------------- padding / timestep


def padding_multiple(scale: float) -> int:
    """Spatial multiple the network needs at `scale`: 64 / scale (at least 1)."""
    return max(1, int(round(64 / scale)))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (N,C,H,W) on the right and bottom up to a multiple of `multiple` (zeros, as the official code)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph))


def check_scale(scale: float) -> float:
    """Validate the user's scale (0.25, 0.5, 1, 2 or 4)."""
    try:
        s = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be one of {VALID_SCALES}, got {scale!r}") from None
    if s not in VALID_SCALES:
        raise ValueError(
            f"scale must be one of {VALID_SCALES}, got {scale!r}; use 0.5 for 4K input, 1.0 otherwise, "
            "2 or 4 for small frames with small motion"
        )
    return s


def timestep_plane(timestep: float | torch.Tensor, n: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a float or per-sample tensor of timesteps in [0, 1] to an (N,1,H,W) plane."""
    if isinstance(timestep, torch.Tensor):
        t = timestep.to(device=like.device, dtype=like.dtype)
        if t.numel() == 1:
            t = t.reshape(1, 1, 1, 1).expand(n, 1, 1, 1)
        elif t.numel() == n:
            t = t.reshape(n, 1, 1, 1)
        else:
            raise ValueError(f"timestep tensor has {t.numel()} values for a batch of {n}; give 1 or N values")
        if not torch.isfinite(t).all() or (t < 0).any() or (t > 1).any():
            raise ValueError("timestep values must lie in [0, 1]")
        return t.expand(n, 1, h, w)
    tf = float(timestep)
    if not 0.0 <= tf <= 1.0:
        raise ValueError(f"timestep must lie in [0, 1], got {timestep!r}")
    return torch.full((n, 1, h, w), tf, device=like.device, dtype=like.dtype)


# ----------------------------------------------------------------------------- wrapper


@dataclass
class CheckpointInfo:
    """What a checkpoint held and what was used."""

    path: str
    variant: str
    loaded_keys: int
    skipped_groups: dict[str, int] = field(default_factory=dict)


# Float frames may overshoot [0, 1] by rounding (bf16 outputs fed back in recursive mode); more is a wrong range.
RANGE_TOLERANCE = 0.02


def _as_frame_tensor(img: Any, name: str) -> torch.Tensor:
    """A tensor from a frame argument: tensors as given, uint8 numpy frames (H,W,3)/(N,H,W,3) to (N,3,H,W)."""
    if isinstance(img, torch.Tensor):
        return img
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8:
            raise TypeError(
                f"{name} is a numpy array of dtype {img.dtype}; numpy frames must be uint8 (H,W,3) or (N,H,W,3) "
                "as read from files, float frames must be torch tensors (N,3,H,W) in [0, 1]"
            )
        try:
            return to_tensor(img)
        except DataError as exc:
            raise ValueError(f"{name}: {exc}") from None
    raise TypeError(
        f"{name} is a {type(img).__name__}; give torch tensors (N,3,H,W) (float in [0, 1] or uint8 0-255) or "
        "uint8 numpy frames (H,W,3)/(N,H,W,3)"
    )


def _output_dtype(img0: Any) -> torch.dtype:
    """The dtype of interpolated frames: that of float input frames; float32 for uint8 tensors or arrays."""
    return img0.dtype if isinstance(img0, torch.Tensor) and img0.is_floating_point() else torch.float32


def check_pair(img0: Any, img1: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a frame pair and return it as float tensors (N,3,H,W) in [0, 1] of one shape.

    Accepted: float tensors (N,3,H,W) or (3,H,W) with values in [0, 1]; uint8 tensors of the same layout
    (0-255, divided by 255 here); uint8 numpy frames (H,W,3) or (N,H,W,3) as the readers return them.
    Float frames outside [0, 1] (e.g. 0-255 floats) and non-finite values are refused.
    """
    img0, img1 = _as_frame_tensor(img0, "img0"), _as_frame_tensor(img1, "img1")
    if img0.dim() == 3:
        img0 = img0.unsqueeze(0)
    if img1.dim() == 3:
        img1 = img1.unsqueeze(0)
    if img0.dim() != 4 or img0.shape[1] != 3:
        raise ValueError(f"expected frames of shape (N,3,H,W), got {tuple(img0.shape)}")
    if img0.shape != img1.shape:
        raise ValueError(
            f"img0 and img1 differ in shape: {tuple(img0.shape)} vs {tuple(img1.shape)}; "
            "both frames of a pair must have the same size (resize or crop one of them)"
        )
    if img0.dtype != img1.dtype:
        raise TypeError(f"img0 and img1 differ in dtype: {img0.dtype} vs {img1.dtype}; give both in one dtype")
    if img0.dtype == torch.uint8:
        return img0.float().div_(255.0), img1.float().div_(255.0)
    if not img0.is_floating_point():
        raise TypeError(
            f"expected float frames in [0, 1] or uint8 frames, got dtype {img0.dtype}; divide 0-255 frames by 255"
        )
    bounds = torch.stack([img0.amin(), img1.amin(), img0.amax(), img1.amax()]).float().tolist()
    if not all(np.isfinite(bounds)):
        raise ValueError("the frames hold NaN or infinite values; give finite float frames in [0, 1]")
    lo, hi = min(bounds[:2]), max(bounds[2:])
    if not (lo >= -RANGE_TOLERANCE and hi <= 1.0 + RANGE_TOLERANCE):
        hint = (
            "they look like 0-255 values: divide by 255 (or pass uint8 frames, which are converted)"
            if hi > 2.0 and lo >= -RANGE_TOLERANCE
            else "clamp or rescale them to [0, 1]"
        )
        raise ValueError(f"float frames must lie in [0, 1], got values from {lo:g} to {hi:g}; {hint}")
    return img0, img1


class RIFE(nn.Module):
    """IFNet plus the user-facing `interpolate` (padding, validation, crop)."""

    def __init__(self, net: IFNet, info: CheckpointInfo | None = None):
        super().__init__()
        self.net = net
        self.info = info

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    @property
    def variant(self) -> str:
        return self.net.variant

    def prepare(
        self, img0: torch.Tensor, img1: torch.Tensor, timestep: float | torch.Tensor, scale: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[float], tuple[int, int]]:
        """Validate and pad inputs; returns (img0, img1, t-plane, scale_list, (H, W))."""
        scale = check_scale(scale)
        img0, img1 = check_pair(img0, img1)
        n, _, h, w = img0.shape
        dev, dt = self.device, self.dtype
        img0 = img0.to(device=dev, dtype=dt)
        img1 = img1.to(device=dev, dtype=dt)
        mult = padding_multiple(scale)
        img0, img1 = pad_to_multiple(img0, mult), pad_to_multiple(img1, mult)
        t = timestep_plane(timestep, n, img0.shape[2], img0.shape[3], img0)
        scale_list = [8 / scale, 4 / scale, 2 / scale, 1 / scale]
        return img0, img1, t, scale_list, (h, w)

    def forward(
        self,
        img0: torch.Tensor,
        img1: torch.Tensor,
        timestep: float | torch.Tensor = 0.5,
        scale: float = 1.0,
        ensemble: bool = False,
    ) -> torch.Tensor:
        in_dtype = _output_dtype(img0)
        p0, p1, t, scale_list, (h, w) = self.prepare(img0, img1, timestep, scale)
        out = self.net(p0, p1, t, scale_list, ensemble)
        return out[:, :, :h, :w].to(in_dtype)

    @torch.inference_mode()
    def interpolate(
        self,
        img0: torch.Tensor,
        img1: torch.Tensor,
        timestep: float | torch.Tensor = 0.5,
        scale: float = 1.0,
        ensemble: bool = False,
    ) -> torch.Tensor:
        """Frame at `timestep` between img0 (t=0) and img1 (t=1); (N,3,H,W) float in [0, 1], any H, W.

        Frames: float tensors in [0, 1] (the output keeps their dtype), uint8 tensors (N,3,H,W) or uint8 numpy
        frames (H,W,3)/(N,H,W,3) (output float32); see `check_pair`.
        """
        return self.forward(img0, img1, timestep, scale, ensemble)

    @torch.inference_mode()
    def interpolate_flow(
        self,
        img0: torch.Tensor,
        img1: torch.Tensor,
        timestep: float | torch.Tensor = 0.5,
        scale: float = 1.0,
        ensemble: bool = False,
        extra0: torch.Tensor | None = None,
        extra1: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(frame, flow, mask logits, extra) of one pass, cropped to (H, W); `frame` is what `interpolate` returns.

        `flow` (N,4,H,W) holds the backward flows to img0 and img1 in pixels, `mask` (N,1,H,W) the blend logits
        (weight of warped img0 = sigmoid(mask)). `extra0`/`extra1` (N,C,H,W), e.g. alpha, are padded as the
        frames, warped with the same flow and blended with the same mask (`blend_warped`).
        """
        in_dtype = _output_dtype(img0)
        p0, p1, t, scale_list, (h, w) = self.prepare(img0, img1, timestep, scale)
        frame, flow, mask = self.net.forward_all(p0, p1, t, scale_list, ensemble)
        extra = None
        if extra0 is not None and extra1 is not None:
            if extra0.shape != extra1.shape or extra0.shape[0] != img0.shape[0] or extra0.shape[-2:] != (h, w):
                raise ValueError(f"extra channels {tuple(extra0.shape)} / {tuple(extra1.shape)} do not match the "
                                 f"frames {tuple(img0.shape)}; give (N,C,H,W) tensors of the frames' size")
            mult = padding_multiple(scale)
            e0 = pad_to_multiple(extra0.to(device=p0.device, dtype=p0.dtype), mult)
            e1 = pad_to_multiple(extra1.to(device=p0.device, dtype=p0.dtype), mult)
            extra = blend_warped(e0, e1, flow, mask)[:, :, :h, :w].to(in_dtype)
        crop = (slice(None), slice(None), slice(0, h), slice(0, w))
        return frame[crop].to(in_dtype), flow[crop], mask[crop], extra

    def interpolate_rgba(
        self,
        img0: torch.Tensor,
        img1: torch.Tensor,
        timestep: float | torch.Tensor = 0.5,
        scale: float = 1.0,
        ensemble: bool = False,
    ) -> torch.Tensor:
        """(N,4,H,W) RGBA frames: colour exactly as `interpolate` on the RGB planes, alpha with the same flow and mask."""
        if img0.dim() == 3:
            img0, img1 = img0.unsqueeze(0), img1.unsqueeze(0)
        if img0.dim() != 4 or img0.shape[1] != 4 or img0.shape != img1.shape:
            raise ValueError(f"expected two RGBA frames of shape (N,4,H,W), got {tuple(img0.shape)} and "
                             f"{tuple(img1.shape)}")
        frame, _, _, alpha = self.interpolate_flow(img0[:, :3], img1[:, :3], timestep, scale, ensemble,
                                                   img0[:, 3:], img1[:, 3:])
        return torch.cat([frame, alpha], 1)


def blend_warped(x0: torch.Tensor, x1: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x0 warped by flow[:, :2] and x1 by flow[:, 2:4], blended with sigmoid(mask): IFNet's final step, any channels."""
    m = torch.sigmoid(mask)
    return warp(x0, flow[:, :2]) * m + warp(x1, flow[:, 2:4]) * (1 - m)


# ----------------------------------------------------------------------------- checkpoints


OFFICIAL_HINT = "an official RIFE 4.x flow checkpoint (flownet.pkl / rife46.pth, a state_dict of tensors)"


def _describe_file(path: Path) -> str:
    """What a file looks like from its first bytes (for checkpoint error messages)."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if not head:
        return "an empty file (0 bytes)"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (the torch.save format)"
    if head.startswith(b"\x80"):
        return "a Python pickle"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the weights themselves (run `git lfs pull`)"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml")):
        return "an HTML/XML page (a download that saved an error or login page instead of the file)"
    try:
        sample = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"binary data of an unknown format (starts with {head[:8].hex(' ')})"
    first = sample.strip().splitlines()[0][:60] if sample.strip() else ""
    return f"a text file (starting {first!r})"


def _names_module_class(name: str) -> bool:
    """Whether a pickle GLOBAL names an nn.Module subclass (looked up only among modules already imported)."""
    mod, _, attr = name.rpartition(".")
    obj = getattr(sys.modules.get(mod), attr, None)
    return name.startswith("torch.nn.modules.") or (isinstance(obj, type) and issubclass(obj, nn.Module))


def _unpickling_refusal(path: Path, exc: BaseException) -> CheckpointError:
    """The CheckpointError for a file that weights_only=True loading refuses (pickled objects, code)."""
    msg = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", msg)
    warning = re.search(r"Re-running `torch\.load`[^\n]*?arbitrary code execution\.(?:\s*Do it only[^\n]*?source\.)?",
                        msg)
    torch_warning = warning.group(0).strip() if warning else (
        "Re-running `torch.load` with `weights_only` set to `False` can result in arbitrary code execution.")
    malicious = bool(found) and found.group(1).split(".")[0] in ("posix", "nt", "os", "subprocess", "builtins", "sys")
    if found and _names_module_class(found.group(1)):
        what = (f"a whole pickled network object ({found.group(1)}), saved with torch.save(model) instead of "
                "torch.save(model.state_dict())")
    elif malicious:
        what = f"a pickle that calls {found.group(1)} when loaded, which is how malicious files run code"
    elif found:
        what = f"pickled Python objects ({found.group(1)}), not only tensors"
    else:
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", msg)
        what = "pickled Python objects, not only tensors" + (
            f" (torch: {detail.group(1).strip()})" if detail else "")
    todo = (
        "Do not load it with weights_only=False anywhere; delete it and download the official file"
        if malicious
        else "If you trust the file, re-save its weights once as a state_dict "
        "(torch.save(torch.load(PATH, weights_only=False).state_dict(), NEW.pth)), else download the official file"
    )
    return CheckpointError(
        f"checkpoint {path} holds {what}; expected {OFFICIAL_HINT}. rifelab loads checkpoints with "
        f"weights_only=True, which refused it. torch warns: {torch_warning} {todo}"
    )


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise CheckpointError(
            f"checkpoint not found: {path}. Pass the path of an official RIFE 4.x file (flownet.pkl, rife46.pth) "
            "or call load_rife() with no argument for the bundled RIFE 4.0 weights"
        )
    if path.is_dir():
        raise CheckpointError(f"checkpoint path {path} is a folder; pass the .pkl/.pth file inside it")
    try:
        size = path.stat().st_size
        kind = _describe_file(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}; check its permissions") from exc
    if size == 0:
        raise CheckpointError(
            f"checkpoint {path} is empty (0 bytes): a download or copy that did not complete. "
            f"Expected {OFFICIAL_HINT}; download it again"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc) and kind.startswith(("a zip", "a Python pickle")):
            raise _unpickling_refusal(path, exc) from exc
        raise CheckpointError(
            f"cannot read checkpoint {path} ({kind}, {size} bytes): it is corrupt, truncated or not a torch file "
            f"(unpickling failed: {_first_line(exc)}). Expected {OFFICIAL_HINT}; download it again"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - torch.load raises KeyError, EOFError, RuntimeError... on bad files
        raise CheckpointError(
            f"cannot read checkpoint {path} ({kind}, {size} bytes): it is corrupt, truncated or not a torch file "
            f"(torch.load: {type(exc).__name__}: {_first_line(exc)}). Expected {OFFICIAL_HINT}; download it again"
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(obj).__name__}, not a state_dict of tensors; expected {OFFICIAL_HINT}"
        )
    return obj


def _first_line(exc: BaseException) -> str:
    """First non-empty line of an exception's message, whole (or '(no message)')."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else "(no message)"


def _detect_variant(sd: dict[str, torch.Tensor], path: Path) -> str:
    w = sd.get("block0.lastconv.weight")
    if w is None:
        w = sd.get("block0.lastconv.0.weight")
    if w is None:
        present = ", ".join(sorted(sd)[:5]) or "(none)"
        raise CheckpointError(
            f"{path}: no 'block0.lastconv' weight, so this is not a RIFE 4.x flow network checkpoint; "
            f"first keys: {present}"
        )
    if w.dim() == 4 and w.shape[1] == 5:
        return "4.0"
    if w.dim() == 4 and w.shape[1] == 24:
        return "4.6"
    raise CheckpointError(f"{path}: block0.lastconv weight has shape {tuple(w.shape)}; expected (c,5,4,4) or (c,24,4,4)")


def load_state_dict(
    net: IFNet, path: str | os.PathLike, raw: dict[str, torch.Tensor] | None = None
) -> CheckpointInfo:
    """Load an official checkpoint into `net`, strictly on the flow blocks; returns what was used/skipped."""
    path = Path(path)
    sd = raw if raw is not None else _read_checkpoint(path)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    skipped: dict[str, int] = {}
    flow_sd: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for k, v in sd.items():
        group = k.split(".", 1)[0]
        if group in SKIPPED_GROUPS:
            skipped[group] = skipped.get(group, 0) + 1
        elif group in ("block0", "block1", "block2", "block3"):
            flow_sd[k] = v
        else:
            unknown.append(k)
    expected = net.state_dict()
    missing = [k for k in expected if k not in flow_sd]
    unexpected = [k for k in flow_sd if k not in expected] + unknown
    mismatched = [
        f"{k} {tuple(flow_sd[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected
        if k in flow_sd and flow_sd[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:5])}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {'; '.join(mismatched[:5])}")
        raise CheckpointError(
            f"checkpoint {path} does not fit the RIFE {net.variant} flow network: " + " | ".join(parts)
            + ". Use an official RIFE 4.0 or 4.6 flow checkpoint (flownet.pkl / rife46.pth)"
        )
    bad = [k for k, v in flow_sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(
            f"checkpoint {path} has non-finite weights (NaN or inf) in {len(bad)} of {len(flow_sd)} tensors "
            f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}): it would produce black or garbage frames. "
            "The file is damaged or comes from a diverged training run; use an official RIFE 4.x checkpoint"
        )
    net.load_state_dict(flow_sd, strict=True)
    if skipped:
        log.info("%s: skipped groups not used by the fast path: %s", path.name, skipped)
    return CheckpointInfo(str(path), net.variant, len(flow_sd), skipped)


def load_rife(
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> RIFE:
    """RIFE v4 model in eval mode; `checkpoint=None` uses the bundled RIFE 4.0 weights (fetched once)."""
    if checkpoint is None:
        checkpoint = fetch("rife40")
    path = Path(checkpoint).expanduser()
    raw = _read_checkpoint(path)
    stripped = {k[len("module."):] if k.startswith("module.") else k: v for k, v in raw.items()}
    net = IFNet(_detect_variant(stripped, path))
    info = load_state_dict(net, path, raw=raw)
    model = RIFE(net, info).eval()
    return model.to(device=resolve_device(device), dtype=dtype)
