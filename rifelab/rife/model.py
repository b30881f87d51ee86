"""`RIFE`: the flow network wrapped with frame checks, padding and `interpolate` / `interpolate_flow`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from rifelab.rife.contract import (
    Frames,
    PreparedPair,
    Timestep,
    alpha_planes,
    blend_warped,
    check_pair,  # noqa: F401 - re-exported: rifelab.rife.model.check_pair
    check_rgba_pair,
    prepare_pair,
    rgba_output,
)
from rifelab.rife.layouts import Layout
from rifelab.rife.network import IFNet, check_scale

log = logging.getLogger(__name__)


@dataclass
class CheckpointInfo:
    """What a checkpoint held and what was used."""

    path: str
    variant: str
    loaded_keys: int
    skipped_groups: dict[str, int] = field(default_factory=dict)
    layout: str = ""  # the layout's version range, e.g. "4.13-4.24 (7 versions)"


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

    def prepare_pair(self, img0: Frames, img1: Frames, timestep: Timestep, scale: float,
                     ensemble: bool = False) -> PreparedPair:
        """`prepare_pair` on this model's device and dtype, with its layout's padding multiple and block scales
        (ensemble refused here for layouts without it)."""
        self.net.check_ensemble(ensemble)
        return prepare_pair(img0, img1, timestep, scale, multiple=self.net.padding_multiple,
                            scales=self.net.scale_list, device=self.device, dtype=self.dtype)

    def prepare(
        self, img0: Frames, img1: Frames, timestep: Timestep, scale: float, ensemble: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[float], tuple[int, int]]:
        """Validate and pad inputs; returns (img0, img1, t-plane, scale_list, (H, W)) (see `prepare_pair`)."""
        p = self.prepare_pair(img0, img1, timestep, scale, ensemble)
        return p.img0, p.img1, p.t, list(p.scale_list), p.size

    def forward(
        self,
        img0: Frames,
        img1: Frames,
        timestep: Timestep = 0.5,
        scale: float = 1.0,
        ensemble: bool = False,
    ) -> torch.Tensor:
        p = self.prepare_pair(img0, img1, timestep, scale, ensemble)
        return p.output(self.net(p.img0, p.img1, p.t, p.scale_list, ensemble))

    @torch.inference_mode()
    def interpolate(
        self,
        img0: Frames,
        img1: Frames,
        timestep: Timestep = 0.5,
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
        img0: Frames,
        img1: Frames,
        timestep: Timestep = 0.5,
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
        p = self.prepare_pair(img0, img1, timestep, scale, ensemble)
        frame, flow, mask = self.net.forward_all(p.img0, p.img1, p.t, p.scale_list, ensemble)
        extra = None
        if extra0 is not None and extra1 is not None:
            if extra0.shape != extra1.shape:
                raise ValueError(f"extra channels {tuple(extra0.shape)} / {tuple(extra1.shape)} differ in shape; "
                                 "give (N,C,H,W) tensors of the frames' size")
            extra = p.output(blend_warped(p.pad(extra0), p.pad(extra1), flow, mask))
        return p.output(frame), p.crop(flow), p.crop(mask), extra

    @torch.inference_mode()
    def interpolate_rgba(
        self,
        img0: torch.Tensor,
        img1: torch.Tensor,
        timestep: Timestep = 0.5,
        scale: float = 1.0,
        ensemble: bool = False,
    ) -> torch.Tensor:
        """(N,4,H,W) RGBA frames: colour exactly as `interpolate` on the RGB planes, alpha with the same flow and mask."""
        img0, img1 = check_rgba_pair(img0, img1)
        p = self.prepare_pair(img0[:, :3], img1[:, :3], timestep, scale, ensemble)
        frame, flow, mask = self.net.forward_all(p.img0, p.img1, p.t, p.scale_list, ensemble)
        return rgba_output(p, frame, flow, mask, *alpha_planes(img0, img1))
