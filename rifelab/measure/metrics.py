"""Image quality metrics for interpolation, batch-friendly, torch or numpy in.

Protocol of the official RIFE benchmark scripts: the prediction is rounded to uint8 before
scoring; PSNR on [0, 1] data; SSIM with an 11x11 Gaussian window (sigma 1.5) on [0, 255] data,
constants K1=0.01, K2=0.03, 'valid' filtering (no padding), averaged over channels.

Inputs: torch tensors (N,3,H,W) or (3,H,W) float in [0, 1], or numpy arrays uint8 (N,H,W,3) or
(H,W,3) (float numpy arrays are taken as [0, 1]). Every function returns one value per sample
as a float64 numpy array.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import correlate1d
from skimage.metrics import structural_similarity

__all__ = [
    "agreement",
    "as_uint8_batch",
    "psnr",
    "ssim",
    "ssim_skimage",
    "interpolation_error",
    "error_stats",
    "mean_ci95",
]

ArrayLike = "np.ndarray | torch.Tensor"


def as_uint8_batch(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Any supported input -> uint8 (N, H, W, 3), rounding floats as the benchmark does."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.dim() == 3:
            t = t.unsqueeze(0)
        if t.dim() != 4:
            raise ValueError(f"expected a (N,3,H,W) or (3,H,W) tensor, got shape {tuple(t.shape)}")
        if t.dtype == torch.uint8:
            arr = t.cpu().numpy()
            return arr if arr.shape[-1] == 3 else arr.transpose(0, 2, 3, 1)
        t = t.float().clamp(0, 1).mul(255.0).round().to(torch.uint8)
        return t.permute(0, 2, 3, 1).cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"expected (N,H,W,C) or (H,W,C) array, got shape {arr.shape}")
    if arr.shape[-1] not in (1, 3) and arr.shape[1] in (1, 3):
        arr = arr.transpose(0, 2, 3, 1)
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        return np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)
    raise ValueError(f"unsupported array dtype {arr.dtype}: pass uint8 frames or floats in [0, 1]")


def _pair(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    p, g = as_uint8_batch(pred), as_uint8_batch(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction and reference differ in shape: {p.shape} vs {g.shape}")
    return p, g


def psnr(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> np.ndarray:
    """PSNR in dB per sample, prediction rounded to uint8, on [0, 1] data (identical frames: inf)."""
    p, g = _pair(pred, gt)
    diff = p.astype(np.float64) / 255.0 - g.astype(np.float64) / 255.0
    mse = (diff**2).reshape(len(p), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return -10.0 * np.log10(mse)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    return g / g.sum()


def _gaussian_filter(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """'valid' 2-D Gaussian filtering over the last two axes, as two separable 1-D passes in float64."""

    r = g.size // 2
    y = correlate1d(correlate1d(x, g, axis=-1, mode="nearest"), g, axis=-2, mode="nearest")
    return y[..., r : y.shape[-2] - r, r : y.shape[-1] - r]


def ssim(
    pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor, window: int = 11, sigma: float = 1.5
) -> np.ndarray:
    """SSIM per sample: Gaussian window, [0, 255] data, 'valid' filtering, mean over channels and pixels."""
    p, g = _pair(pred, gt)
    if min(p.shape[1:3]) < window:
        raise ValueError(f"frames of {p.shape[2]}x{p.shape[1]} are smaller than the {window}x{window} SSIM window")
    x = np.moveaxis(p, -1, 1).astype(np.float64)  # (N, C, H, W)
    y = np.moveaxis(g, -1, 1).astype(np.float64)
    n = x.shape[0]
    g1 = _gaussian_1d(window, sigma)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = _gaussian_filter(x, g1), _gaussian_filter(y, g1)
    sxx = _gaussian_filter(x * x, g1) - mu_x**2
    syy = _gaussian_filter(y * y, g1) - mu_y**2
    sxy = _gaussian_filter(x * y, g1) - mu_x * mu_y
    smap = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return smap.reshape(n, -1).mean(axis=1)


def ssim_skimage(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> np.ndarray:
    """scikit-image's SSIM with the same Gaussian settings, for comparison."""

    p, g = _pair(pred, gt)
    return np.array(
        [
            structural_similarity(
                a, b, channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
            )
            for a, b in zip(p, g)
        ],
        dtype=np.float64,
    )


def interpolation_error(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> np.ndarray:
    """Middlebury interpolation error IE: mean absolute difference in 0-255 units (prediction as uint8)."""
    p, g = _pair(pred, gt)
    return np.abs(p.astype(np.float64) - g.astype(np.float64)).reshape(len(p), -1).mean(axis=1)


def error_stats(pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    """Unrounded error statistics per sample on [0, 1] data: mae, rmse, max_abs, p90."""

    def as_float(x: np.ndarray | torch.Tensor) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            t = x.detach().double().cpu()
            if t.dim() == 3:
                t = t.unsqueeze(0)
            return t.reshape(t.shape[0], -1).numpy()
        a = np.asarray(x)
        a = a[None] if a.ndim == 3 else a
        a = a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a.astype(np.float64)
        return a.reshape(a.shape[0], -1)

    a, b = as_float(pred), as_float(ref)
    if a.shape != b.shape:
        raise ValueError(f"prediction and reference differ in shape: {a.shape} vs {b.shape}")
    d = np.abs(a - b)
    return {
        "mae": d.mean(axis=1),
        "rmse": np.sqrt((d**2).mean(axis=1)),
        "max_abs": d.max(axis=1),
        "p90": np.percentile(d, 90, axis=1),
    }


def mean_ci95(values: np.ndarray | list[float], n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): bootstrap 95% interval of the mean."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    if v.size == 1:
        return float(v[0]), float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    boots = rng.choice(v, size=(n_boot, v.size), replace=True).mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(v.mean()), float(lo), float(hi)


def agreement(pred: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """How closely `pred` matches a reference output (e.g. FP32 eager's): frames in [0, 1], (N,3,H,W).

    PSNR and SSIM on the uint8-rounded frames (identical frames: PSNR capped at 99 dB), max and mean
    absolute difference on the unrounded values.
    """
    p = np.minimum(psnr(pred, ref), 99.0)
    e = error_stats(pred, ref)
    return {
        "psnr_vs_fp32_db": float(np.mean(p)),
        "psnr_vs_fp32_min_db": float(np.min(p)),
        "ssim_vs_fp32": float(np.mean(ssim(pred, ref))),
        "max_abs_diff": float(np.max(e["max_abs"])),
        "mean_abs_diff": float(np.mean(e["mae"])),
    }
