"""Depth quality and agreement metrics (affine-aligned AbsRel, delta1, temporal change)."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from rifelab.depth.snippets import ArrayLike

log = logging.getLogger(__name__)


def normalise_video(video: ArrayLike) -> np.ndarray:
    """Min-max normalise a whole video to [-1, 1] (as the RollingDepth pipeline does)."""
    v = _np(video)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return np.zeros_like(v)
    return 2.0 * (v - lo) / (hi - lo) - 1.0


def _np(a: ArrayLike) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def affine_fit(pred: ArrayLike, target: ArrayLike) -> tuple[float, float]:
    """Least-squares ``(a, b)`` with ``a * pred + b ≈ target`` over all values."""
    p, y = _np(pred).ravel(), _np(target).ravel()
    if p.shape != y.shape:
        raise ValueError(f"pred and target differ in size: {p.size} vs {y.size}")
    pm, ym = p.mean(), y.mean()
    var = ((p - pm) ** 2).sum()
    a = float(((p - pm) * (y - ym)).sum() / var) if var > 0 else 0.0
    return a, float(ym - a * pm)


def depth_metrics(pred_inverse: ArrayLike, gt_depth: ArrayLike, fit: str = "inverse") -> dict[str, float]:
    """AbsRel and δ1 of a predicted inverse-depth video after one least-squares affine fit to the truth.

    ``fit='inverse'`` (default) fits in inverse depth (the prediction's own domain) and converts to
    depth; ``fit='depth'`` fits ``1/pred`` to depth. Fitted inverse depth is clipped at half the
    smallest true inverse depth so no prediction is farther than twice the farthest true depth.
    Also returns temporal_ratio_gt: frame-to-frame change of the fitted inverse depth over that of
    the true inverse depth (1 = as smooth as the truth, > 1 = flicker).
    """
    gt = _np(gt_depth)
    pred = _np(pred_inverse)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    if not (np.isfinite(gt).all() and (gt > 0).all()):
        raise ValueError("ground-truth depth must be finite and > 0 everywhere")
    if fit == "inverse":
        gt_inv = 1.0 / gt
        a, b = affine_fit(pred, gt_inv)
        depth = 1.0 / np.maximum(a * pred + b, 0.5 * gt_inv.min())
    elif fit == "depth":
        inv = 1.0 / np.maximum(pred - pred.min() + 1e-3 * max(np.ptp(pred), 1e-12), 1e-12)
        a, b = affine_fit(inv, gt)
        depth = np.clip(a * inv + b, 0.5 * gt.min(), 2.0 * gt.max())
    else:
        raise ValueError(f"fit must be 'inverse' or 'depth', got {fit!r}")
    ratio = np.maximum(depth / gt, gt / depth)
    gt_change = temporal_change(1.0 / gt)
    return {
        "abs_rel": float(np.mean(np.abs(depth - gt) / gt)),
        "delta1": float(np.mean(ratio < 1.25)),
        "temporal_ratio_gt": temporal_change(1.0 / depth) / gt_change if gt_change > 0 else math.nan,
    }


def temporal_change(video: ArrayLike) -> float:
    """Mean absolute frame-to-frame change ``mean |v[t+1] - v[t]|``."""
    v = _np(video)
    return float(np.abs(np.diff(v, axis=0)).mean()) if v.shape[0] > 1 else 0.0


def agreement_metrics(candidate: ArrayLike, reference: ArrayLike) -> dict[str, float]:
    """Report 004's comparison of two merged videos, both min-max normalised to [-1, 1] first.

    mae, rmse, p90 (90th percentile of the absolute difference) and temporal_ratio =
    temporal_change(candidate) / temporal_change(reference) (1 = equally smooth, < 1 smoother).
    Report 004 does not define its ratio; this is our definition.
    """
    c, r = normalise_video(candidate), normalise_video(reference)
    if c.shape != r.shape:
        raise ValueError(f"candidate shape {c.shape} differs from reference {r.shape}")
    diff = np.abs(c - r)
    ref_change = temporal_change(r)
    return {
        "mae": float(diff.mean()),
        "rmse": float(np.sqrt((diff**2).mean())),
        "p90": float(np.percentile(diff, 90)),
        "temporal_ratio": float(temporal_change(c) / ref_change) if ref_change > 0 else math.nan,
    }
