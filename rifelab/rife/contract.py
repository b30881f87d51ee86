"""The model contract: the `Interpolator` protocol every backend implements, and the one input preparation.

Every model rifelab runs (RIFE, the torch Engine, ONNX Runtime, OpenVINO, TensorRT) takes frames of any size
through `prepare_pair` (validate, cast, pad to the network's multiple, timestep plane, flow scales) and hands
its padded output back through `PreparedPair.output` (crop, original dtype and device). RGBA frames go through
`interpolate_rgba`: the colour planes exactly as `interpolate` makes them, the alpha plane warped and blended
with the same flow and mask, by the same backend. A model that cannot do that raises `AlphaUnsupported`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Protocol, Union, runtime_checkable

import numpy as np
import torch

from rifelab.frames.images import DataError, to_tensor
from rifelab.rife.network import check_scale, pad_to_multiple, padding_multiple, timestep_plane, warp

log = logging.getLogger(__name__)

#: frames a model accepts: tensors (N,3,H,W)/(3,H,W), float in [0, 1] or uint8; uint8 numpy (H,W,3)/(N,H,W,3)
Frames = Union[torch.Tensor, np.ndarray]
#: one timestep in [0, 1] for the whole batch, or a tensor of N (one per sample)
Timestep = Union[float, torch.Tensor]

__all__ = ["Frames", "Timestep", "Interpolator", "AlphaUnsupported", "PreparedPair", "prepare_pair", "flow_scales",
           "padded_size", "check_pair", "output_dtype", "check_rgba_pair", "alpha_planes", "blend_warped",
           "rgba_output", "RANGE_TOLERANCE"]


class AlphaUnsupported(DataError):
    """This model cannot interpolate an alpha channel; the message says what to do instead."""


@runtime_checkable
class Interpolator(Protocol):
    """What the interpolation pipeline, the benchmarks and the studies call on a model."""

    @property
    def device(self) -> torch.device:
        """Where the model computes (inputs may live elsewhere; outputs come back where the inputs were)."""
        ...

    def interpolate(self, img0: Frames, img1: Frames, timestep: Timestep = 0.5, scale: float = 1.0,
                    ensemble: bool = False) -> torch.Tensor:
        """Frame at `timestep` between img0 (t=0) and img1 (t=1): (N,3,H,W) in [0, 1], any H, W."""
        ...

    def interpolate_rgba(self, img0: torch.Tensor, img1: torch.Tensor, timestep: Timestep = 0.5, scale: float = 1.0,
                         ensemble: bool = False) -> torch.Tensor:
        """(N,4,H,W) RGBA frames: colour as `interpolate`, alpha with the same flow and mask (or AlphaUnsupported)."""
        ...


# Float frames may overshoot [0, 1] by rounding (bf16 outputs fed back in recursive mode); more is a wrong range.
RANGE_TOLERANCE = 0.02


def _as_frame_tensor(img: Frames, name: str) -> torch.Tensor:
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


def output_dtype(img0: Frames) -> torch.dtype:
    """The dtype of interpolated frames: that of float input frames; float32 for uint8 tensors or arrays."""
    return img0.dtype if isinstance(img0, torch.Tensor) and img0.is_floating_point() else torch.float32


def check_pair(img0: Frames, img1: Frames) -> tuple[torch.Tensor, torch.Tensor]:
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


def flow_scales(scale: float) -> tuple[float, float, float, float]:
    """The four blocks' downscale factors at flow scale `scale` (validated): 8/s, 4/s, 2/s, 1/s."""
    s = check_scale(scale)
    return (8 / s, 4 / s, 2 / s, 1 / s)


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """(H, W) rounded up to a multiple of `multiple`: the size the network runs at."""
    return height + (-height) % multiple, width + (-width) % multiple


@dataclass(frozen=True)
class PreparedPair:
    """A validated frame pair, padded for the network, and how to turn the network's output back."""

    img0: torch.Tensor  # (N,3,Hp,Wp) on the model's device and dtype, zero-padded right and bottom
    img1: torch.Tensor
    t: torch.Tensor  # (N,1,Hp,Wp) timestep plane
    scale: float
    scale_list: tuple[float, ...]  # each block's down-scaling
    multiple: int
    size: tuple[int, int]  # (H, W) of the frames before padding
    out_dtype: torch.dtype  # dtype of the frames given back: the input's float dtype, float32 for uint8
    out_device: torch.device  # where the input frames were

    @property
    def padded(self) -> tuple[int, int, int]:
        """(N, Hp, Wp) of the padded inputs."""
        return int(self.img0.shape[0]), int(self.img0.shape[2]), int(self.img0.shape[3])

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """A padded (N,C,Hp,Wp) tensor cut back to the frames' (H, W)."""
        h, w = self.size
        return x[:, :, :h, :w]

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """The padded network output as the caller gets it: cropped, in the input's dtype and on its device."""
        return self.crop(x).to(device=self.out_device, dtype=self.out_dtype)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Extra planes (N,C,H,W) of the frames (e.g. alpha) padded like them, on the model's device and dtype."""
        n = self.img0.shape[0]
        if x.dim() != 4 or x.shape[0] != n or tuple(x.shape[-2:]) != self.size:
            raise ValueError(f"extra channels {tuple(x.shape)} do not match the frames (N={n}, H, W={self.size}); "
                             "give (N,C,H,W) tensors of the frames' size")
        return pad_to_multiple(x.to(device=self.img0.device, dtype=self.img0.dtype), self.multiple)


def prepare_pair(
    img0: Frames,
    img1: Frames,
    timestep: Timestep,
    scale: float,
    *,
    multiple: int | Callable[[float], int] = padding_multiple,
    scales: Callable[[float], tuple[float, ...]] = flow_scales,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> PreparedPair:
    """Validate a pair (`check_pair`), move it to `device`/`dtype`, pad it, build the timestep plane.

    `multiple` is the network's padding multiple: an int, or a function of the flow scale; `scales` gives the
    blocks' down-scaling at a flow scale. Defaults: RIFE 4.0's (64/scale; 8/s, 4/s, 2/s, 1/s); a model passes
    its layout's (`RIFE.prepare_pair`).
    """
    out_dtype = output_dtype(img0)
    scale = check_scale(scale)
    scale_list = tuple(float(s) for s in scales(scale))
    a, b = check_pair(img0, img1)
    out_device = a.device
    a = a.to(device=device or a.device, dtype=dtype or a.dtype)
    b = b.to(device=device or b.device, dtype=dtype or b.dtype)
    mult = int(multiple(scale) if callable(multiple) else multiple)
    if mult < 1:
        raise ValueError(f"the padding multiple must be a positive integer, got {mult}")
    n, _, h, w = a.shape
    a, b = pad_to_multiple(a, mult), pad_to_multiple(b, mult)
    t = timestep_plane(timestep, n, a.shape[2], a.shape[3], a)
    return PreparedPair(a, b, t, scale, scale_list, mult, (h, w), out_dtype, out_device)


def check_rgba_pair(img0: torch.Tensor, img1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two RGBA frames as (N,4,H,W) tensors of one shape ((4,H,W) gets a batch axis); refused otherwise."""
    if not isinstance(img0, torch.Tensor) or not isinstance(img1, torch.Tensor):
        raise TypeError("RGBA frames must be torch tensors (N,4,H,W) in [0, 1] (or uint8)")
    if img0.dim() == 3:
        img0, img1 = img0.unsqueeze(0), img1.unsqueeze(0)
    if img0.dim() != 4 or img0.shape[1] != 4 or img0.shape != img1.shape:
        raise ValueError(f"expected two RGBA frames of shape (N,4,H,W), got {tuple(img0.shape)} and "
                         f"{tuple(img1.shape)}")
    return img0, img1


def alpha_planes(img0: torch.Tensor, img1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The alpha planes (N,1,H,W) of two RGBA frames as floats in [0, 1] (uint8 divided by 255)."""
    a0, a1 = img0[:, 3:], img1[:, 3:]
    if a0.dtype == torch.uint8:
        return a0.float().div_(255.0), a1.float().div_(255.0)
    return a0, a1


def blend_warped(x0: torch.Tensor, x1: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x0 warped by flow[:, :2] and x1 by flow[:, 2:4], blended with sigmoid(mask): IFNet's final step, any channels."""
    m = torch.sigmoid(mask)
    return warp(x0, flow[:, :2]) * m + warp(x1, flow[:, 2:4]) * (1 - m)


def rgba_output(prep: PreparedPair, frame: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor,
                alpha0: torch.Tensor, alpha1: torch.Tensor) -> torch.Tensor:
    """(N,4,H,W): the padded colour `frame` and the alpha planes blended with its `flow` and `mask`, cropped."""
    a0, a1 = prep.pad(alpha0), prep.pad(alpha1)
    alpha = blend_warped(a0, a1, flow.to(a0.device), mask.to(a0.device))
    return torch.cat([prep.output(frame), prep.output(alpha)], 1)

