"""RIFE v4 flow network (any layout of 4.0-4.26): IFNet and its blocks, frame encoders, backward warping with cached grids, padding and scale rules."""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from rifelab.rife.layouts import Layout, get_layout

log = logging.getLogger(__name__)


VALID_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)


SKIPPED_GROUPS = ("contextnet", "unet", "block_tea")


_GRID_CACHE: dict[tuple, torch.Tensor] = {}


def _axis(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """`size` evenly spaced values from -1 to 1 in `dtype`.

    Eager: `torch.linspace`, the very values the official code's grid holds (RIFE 4.0 then matches it bit for bit;
    an `arange` grid differs in the last bit of about half its values, which moved outputs by up to 6e-5).
    Traced (ONNX export): `arange`, because the exporter folds a traced `linspace` into a float64 constant (ONNX
    Runtime's GridSample then refuses the float64 grid), while `arange` stays in `dtype` and keeps `size` symbolic
    for exports with dynamic height and width.
    """
    if torch.jit.is_tracing():  # `size` is symbolic here; max() would freeze it into a constant
        return torch.arange(size, device=device, dtype=dtype) * (2.0 / (size - 1)) - 1.0
    return torch.linspace(-1.0, 1.0, size, device=device, dtype=dtype)


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


def conv(cin: int, cout: int, k: int = 3, stride: int = 1, pad: int = 1, activation: str = "prelu") -> nn.Sequential:
    """Conv2d with bias followed by the layout's activation ("prelu": PReLU per channel, "leaky": LeakyReLU(0.2))."""
    act: nn.Module = nn.PReLU(cout) if activation == "prelu" else nn.LeakyReLU(0.2)
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, bias=True), act)


class ResConv(nn.Module):
    """Residual trunk unit (from 4.5 on): LeakyReLU(0.2)(conv3x3(x) * beta + x)."""

    def __init__(self, c: int, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1, groups=groups, bias=True)
        self.beta = nn.Parameter(torch.ones(1, c, 1, 1))
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x) * self.beta + x)


class IFBlock(nn.Module):
    """One coarse-to-fine flow block: estimates (flow, mask[, carried features]) at 1/scale of the frame."""

    def __init__(self, cin: int, c: int, layout: Layout | str = "4.0"):
        super().__init__()
        layout = get_layout(layout)
        self.variant = layout.key
        self.trunk_residual = layout.trunk_residual
        self.pixel_shuffle = layout.pixel_shuffle
        self.carry = layout.carry_channels
        act = layout.activation
        self.conv0 = nn.Sequential(conv(cin, c // 2, 3, 2, 1, act), conv(c // 2, c, 3, 2, 1, act))
        if layout.trunk == "conv":
            self.convblock = nn.Sequential(*[conv(c, c, activation=act) for _ in range(8)])
        else:
            self.convblock = nn.Sequential(*[ResConv(c, layout.groups) for _ in range(8)])
        if layout.pixel_shuffle:
            self.lastconv: nn.Module = nn.Sequential(
                nn.ConvTranspose2d(c, 4 * layout.out_channels, 4, 2, 1), nn.PixelShuffle(2))
        else:
            self.lastconv = nn.ConvTranspose2d(c, layout.out_channels, 4, 2, 1)

    def forward(self, x: torch.Tensor, flow: torch.Tensor | None = None, scale: float = 1.0) -> tuple[torch.Tensor, ...]:
        """(flow, mask) at the input's size; layouts that carry features return (flow, mask, features)."""
        x = F.interpolate(x, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
        if flow is not None:
            flow = F.interpolate(flow, scale_factor=1.0 / scale, mode="bilinear", align_corners=False) * (1.0 / scale)
            x = torch.cat((x, flow), 1)
        feat = self.conv0(x)
        feat = self.convblock(feat) + feat if self.trunk_residual else self.convblock(feat)
        up = scale if self.pixel_shuffle else scale * 2
        tmp = F.interpolate(self.lastconv(feat), scale_factor=up, mode="bilinear", align_corners=False)
        if self.carry:
            return tmp[:, :4] * up, tmp[:, 4:5], tmp[:, 5:5 + self.carry]
        return tmp[:, :4] * up, tmp[:, 4:5]


class FrameEncoder(nn.Module):
    """The per-frame feature encoder of 4.13+ ("Head"): conv/2, conv, conv, transposed conv x2, LeakyReLU between.

    Its input is clamped to [0, 1] as in the reference; the Sequential encoders of 4.7-4.13.lite are not.
    """

    def __init__(self, width: int, channels: int):
        super().__init__()
        self.cnn0 = nn.Conv2d(3, width, 3, 2, 1)
        self.cnn1 = nn.Conv2d(width, width, 3, 1, 1)
        self.cnn2 = nn.Conv2d(width, width, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(width, channels, 4, 2, 1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.cnn0(x.clamp(0.0, 1.0)))
        x = self.act(self.cnn1(x))
        x = self.act(self.cnn2(x))
        return self.cnn3(x)


def make_encoder(layout: Layout) -> nn.Module | None:
    """The layout's frame encoder (`encode.*` keys), or None before 4.7."""
    w, c = layout.encoder_width, layout.encoder_channels
    if layout.encoder == "pair":
        return nn.Sequential(nn.Conv2d(3, w, 3, 2, 1), nn.ConvTranspose2d(w, c, 4, 2, 1))
    if layout.encoder == "seq":
        return nn.Sequential(
            nn.Conv2d(3, w, 3, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(w, w, 3, 1, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, w, 3, 1, 1), nn.LeakyReLU(0.2), nn.ConvTranspose2d(w, c, 4, 2, 1))
    if layout.encoder == "head":
        return FrameEncoder(w, c)
    return None


def _large_motion(f: torch.Tensor) -> bool:
    """RIFE 4.0/4.1's retry test: block 1 asks for more than 32 px in both directions (over the whole batch).

    A data-dependent branch: it is skipped while traced, compiled or captured in a CUDA graph (exported graphs,
    `compile`, `cuda_graphs`), which then follow the plain path.
    """
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    if f.is_cuda and torch.cuda.is_current_stream_capturing():
        return False
    return bool(f[:, :2].abs().max() > 32) and bool(f[:, 2:4].abs().max() > 32)


def _swap_flow(flow: torch.Tensor) -> torch.Tensor:
    return torch.cat((flow[:, 2:4], flow[:, :2]), 1)


def _channel_cat(tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.cat(tensors, 1)


class EnsembleUnsupported(ValueError):
    """The layout's reference network has no ensemble mode (4.21 on)."""


class IFNet(nn.Module):
    """Any RIFE v4 flow network (4.0-4.26): 4 or 5 IFBlocks coarse to fine, optional frame encoder, then a
    mask-weighted blend of both warped frames. `layout`: a `Layout` or a version it covers ("4.0", "4.25.lite")."""

    def __init__(self, layout: Layout | str = "4.0", widths: Sequence[int] | None = None):
        super().__init__()
        self.layout = get_layout(layout)
        widths = tuple(widths) if widths is not None else self.layout.widths
        if len(widths) != len(self.layout.widths):
            raise ValueError(f"RIFE {self.layout.name} has {len(self.layout.widths)} blocks, got {len(widths)} widths")
        for i, (cin, c) in enumerate(zip(self.layout.block_inputs, widths)):
            self.add_module(f"block{i}", IFBlock(cin, c, self.layout))
        encoder = make_encoder(self.layout)
        if encoder is not None:
            self.encode = encoder

    @property
    def variant(self) -> str:
        """The layout's key (its first version: "4.0", "4.6", "4.13", ...)."""
        return self.layout.key

    @property
    def blocks(self) -> list[IFBlock]:
        return [getattr(self, f"block{i}") for i in range(len(self.layout.widths))]

    def scale_list(self, scale: float = 1.0) -> tuple[float, ...]:
        """Each block's down-scaling at the user's `scale`."""
        return self.layout.scale_list(scale)

    def padding_multiple(self, scale: float = 1.0) -> int:
        """Input frames must be padded to a multiple of this at `scale`."""
        return self.layout.padding_multiple(scale)

    def check_ensemble(self, ensemble: bool) -> None:
        """Refuse ensemble on layouts whose reference code has none (4.21 on)."""
        if ensemble and not self.layout.ensemble:
            raise EnsembleUnsupported(
                f"ensemble is not supported by RIFE {self.layout.name} (its reference network has no ensemble "
                "mode, like every version from 4.21 on); run without ensemble or use a checkpoint of 4.0-4.20")

    def _run_block(self, i: int, parts: tuple[torch.Tensor, ...], flow: torch.Tensor | None, s: float,
                   cat_fn: Callable) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        out = self.blocks[i](cat_fn(parts), flow, s)
        return out[0], out[1], (out[2] if len(out) > 2 else None)

    def flow_and_mask(
        self,
        img0: torch.Tensor,
        img1: torch.Tensor,
        t: torch.Tensor,
        scale_list: Sequence[float] | None = None,
        ensemble: bool = False,
        warp_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        cat_fn: Callable[[tuple[torch.Tensor, ...]], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Bidirectional flow (N,4,H,W) and blend logits (N,1,H,W) for padded inputs and a t-plane.

        `scale_list` defaults to the layout's at scale 1. `warp_fn` / `cat_fn` replace the backward warp and the
        channel concat of each block's input (the inference engine passes a cached-grid warp and an NHWC-keeping
        concat); default: `warp`, `torch.cat`.
        """
        self.check_ensemble(ensemble)
        lay = self.layout
        scale_list = self.scale_list() if scale_list is None else scale_list
        if len(scale_list) != len(lay.widths):
            raise ValueError(f"RIFE {lay.name} needs {len(lay.widths)} block scales, got {list(scale_list)}")
        warp_fn = warp_fn or warp
        cat_fn = cat_fn or _channel_cat
        enc = getattr(self, "encode", None)
        f0, f1 = (enc(img0), enc(img1)) if enc is not None else (None, None)
        flow: torch.Tensor | None = None
        mask: torch.Tensor | None = None
        carried: torch.Tensor | None = None
        scales = list(scale_list)
        for i in range(len(scales)):
            s = scales[i]
            if flow is None or mask is None:
                feats = (f0, f1) if f0 is not None else ()
                flow, mask, carried = self._run_block(i, (img0, img1, *feats, t), None, s, cat_fn)
                if ensemble:
                    feats_r = (f1, f0) if f0 is not None else ()
                    f2, m2, _ = self._run_block(i, (img1, img0, *feats_r, 1 - t), None, s, cat_fn)
                    flow, mask = (flow + _swap_flow(f2)) / 2, (mask - m2) / 2
                continue
            w0, w1 = warp_fn(img0, flow[:, :2]), warp_fn(img1, flow[:, 2:4])
            wf = (warp_fn(f0, flow[:, :2]), warp_fn(f1, flow[:, 2:4])) if f0 is not None and f1 is not None else ()
            extra = (carried,) if carried is not None else ()
            f, m, carried = self._run_block(i, (w0, w1, *wf, t, mask, *extra), flow, s, cat_fn)
            if i == 1 and lay.large_motion_retry and not self.training and _large_motion(f):
                scales = [x * 2 for x in scales]  # the official 4.0/4.1 code: restart coarser (no ensemble there)
                s = scales[i]
                flow, mask, _ = self._run_block(0, (img0, img1, t), None, scales[0], cat_fn)
                w0, w1 = warp_fn(img0, flow[:, :2]), warp_fn(img1, flow[:, 2:4])
                f, m, carried = self._run_block(i, (w0, w1, t, mask), flow, s, cat_fn)
            if ensemble:
                f2, m2, _ = self._run_block(i, (w1, w0, *wf[::-1], 1 - t, -mask), _swap_flow(flow), s, cat_fn)
                f, m = (f + _swap_flow(f2)) / 2, (m - m2) / 2
            flow = flow + f
            mask = mask + m if lay.mask_residual else m
        assert flow is not None and mask is not None
        return flow, mask

    def forward(
        self,
        img0: torch.Tensor,
        img1: torch.Tensor,
        t: torch.Tensor,
        scale_list: Sequence[float] | None = None,
        ensemble: bool = False,
    ) -> torch.Tensor:
        """Interpolated frame for padded inputs (sizes a multiple of `padding_multiple(scale)`) and a t-plane."""
        frame, _, _ = self.forward_all(img0, img1, t, scale_list, ensemble)
        return frame

    def forward_all(
        self,
        img0: torch.Tensor,
        img1: torch.Tensor,
        t: torch.Tensor,
        scale_list: Sequence[float] | None = None,
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


def padding_multiple(scale: float, layout: Layout | str = "4.0") -> int:
    """Spatial multiple the `layout` (default RIFE 4.0) needs at `scale`: 64 / scale for 4.0-4.24 (at least 1)."""
    return get_layout(layout).padding_multiple(scale)


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
