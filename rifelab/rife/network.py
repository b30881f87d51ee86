"""RIFE v4 flow network: IFNet and its blocks, backward warping with cached grids, padding and scale rules."""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)


VALID_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)


BLOCK_WIDTHS = (192, 128, 96, 64)


BLOCK_INPUTS = (7, 12, 12, 12)


SKIPPED_GROUPS = ("contextnet", "unet", "block_tea")


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
