"""`RIFE`: the flow network wrapped with frame checks, padding and `interpolate` / `interpolate_flow`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from rifelab.frames.images import DataError, to_tensor
from rifelab.rife.layouts import Layout
from rifelab.rife.network import (
    IFNet,
    check_scale,
    pad_to_multiple,
    timestep_plane,
    warp,
)

log = logging.getLogger(__name__)


@dataclass
class CheckpointInfo:
    """What a checkpoint held and what was used."""

    path: str
    variant: str
    loaded_keys: int
    skipped_groups: dict[str, int] = field(default_factory=dict)
    layout: str = ""  # the layout's version range, e.g. "4.13-4.24 (7 versions)"


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
    if lo < 0.0 or hi > 1.0:  # within the tolerance (rounding of a resize, say): clamped, so the output stays in [0, 1]
        log.warning("float frames range from %g to %g, slightly outside [0, 1]; clamped to [0, 1]", lo, hi)
        img0, img1 = img0.clamp(0.0, 1.0), img1.clamp(0.0, 1.0)
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
        """The layout's key: its first version ("4.0", "4.13", "4.25.lite")."""
        return self.net.variant

    @property
    def layout(self) -> Layout:
        """The network layout (blocks, widths, encoder, scales, padding, ensemble support)."""
        return self.net.layout

    def padding_multiple(self, scale: float = 1.0) -> int:
        """Frames are padded (right/bottom) to a multiple of this at `scale`; depends on the layout."""
        return self.net.padding_multiple(check_scale(scale))

    def prepare(
        self, img0: torch.Tensor, img1: torch.Tensor, timestep: float | torch.Tensor, scale: float,
        ensemble: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[float], tuple[int, int]]:
        """Validate and pad inputs; returns (img0, img1, t-plane, scale_list, (H, W))."""
        scale = check_scale(scale)
        self.net.check_ensemble(ensemble)
        img0, img1 = check_pair(img0, img1)
        n, _, h, w = img0.shape
        dev, dt = self.device, self.dtype
        img0 = img0.to(device=dev, dtype=dt)
        img1 = img1.to(device=dev, dtype=dt)
        mult = self.padding_multiple(scale)
        img0, img1 = pad_to_multiple(img0, mult), pad_to_multiple(img1, mult)
        t = timestep_plane(timestep, n, img0.shape[2], img0.shape[3], img0)
        return img0, img1, t, list(self.net.scale_list(scale)), (h, w)

    def forward(
        self,
        img0: torch.Tensor,
        img1: torch.Tensor,
        timestep: float | torch.Tensor = 0.5,
        scale: float = 1.0,
        ensemble: bool = False,
    ) -> torch.Tensor:
        in_dtype = _output_dtype(img0)
        p0, p1, t, scale_list, (h, w) = self.prepare(img0, img1, timestep, scale, ensemble)
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
        p0, p1, t, scale_list, (h, w) = self.prepare(img0, img1, timestep, scale, ensemble)
        frame, flow, mask = self.net.forward_all(p0, p1, t, scale_list, ensemble)
        extra = None
        if extra0 is not None and extra1 is not None:
            if extra0.shape != extra1.shape or extra0.shape[0] != img0.shape[0] or extra0.shape[-2:] != (h, w):
                raise ValueError(f"extra channels {tuple(extra0.shape)} / {tuple(extra1.shape)} do not match the "
                                 f"frames {tuple(img0.shape)}; give (N,C,H,W) tensors of the frames' size")
            mult = self.padding_multiple(scale)
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
