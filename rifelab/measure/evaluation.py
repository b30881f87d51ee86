"""Interpolation quality on triplets: RIFE against naive baselines, per triplet and summarised."""

from __future__ import annotations

import logging
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from rifelab.frames.clips import Triplet
from rifelab.frames.images import to_tensor, to_uint8
from rifelab.measure.metrics import interpolation_error, mean_ci95, psnr, ssim
from rifelab.rife.contract import Interpolator


log = logging.getLogger(__name__)

__all__ = ["METHODS", "predict", "evaluate_triplets", "summarise"]

METHODS = ("rife", "average", "repeat")


def predict(model: Interpolator, tri: Triplet, method: str, scale: float = 1.0) -> np.ndarray:
    """Middle-frame prediction as uint8 (H, W, 3): 'rife', 'average' of neighbours or 'repeat' of I0."""
    if method == "rife":
        out = model.interpolate(to_tensor(tri.frame0, model.device), to_tensor(tri.frame2, model.device), 0.5, scale)
        return to_uint8(out)[0]
    if method == "average":
        return np.round((tri.frame0.astype(np.float64) + tri.frame2) / 2).astype(np.uint8)
    if method == "repeat":
        return tri.frame0.copy()
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def evaluate_triplets(
    model: Interpolator,
    triplets: Iterable[Triplet],
    source: str,
    methods: Iterable[str] = METHODS,
    scale: float = 1.0,
    keep: int = 0,
    progress: bool = True,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Score every method on every triplet (official protocol); returns rows and up to `keep` examples."""
    rows: list[dict[str, Any]] = []
    examples: list[dict[str, Any]] = []
    methods = list(methods)
    for tri in tqdm(list(triplets), desc=f"evaluate {source}", disable=not progress, leave=False):
        preds = {}
        with torch.inference_mode():
            for m in methods:
                preds[m] = predict(model, tri, m, scale)
                rows.append({
                    "source": source, "triplet": tri.name, "method": m,
                    "psnr": float(psnr(preds[m], tri.gt)[0]),
                    "ssim": float(ssim(preds[m], tri.gt)[0]),
                    "ie": float(interpolation_error(preds[m], tri.gt)[0]),
                })
        if len(examples) < keep:
            examples.append({"source": source, "triplet": tri.name, "frame0": tri.frame0, "gt": tri.gt,
                             "frame2": tri.frame2, **{f"pred_{m}": p for m, p in preds.items()}})
    return pd.DataFrame(rows), examples


def summarise(per_triplet: pd.DataFrame) -> pd.DataFrame:
    """Mean and bootstrap 95% interval of PSNR/SSIM/IE per source and method."""
    out = []
    for (source, method), g in per_triplet.groupby(["source", "method"], sort=False):
        row: dict[str, Any] = {"source": source, "method": method, "n": len(g)}
        for metric in ("psnr", "ssim", "ie"):
            m, lo, hi = mean_ci95(g[metric].to_numpy())
            row.update({metric: m, f"{metric}_ci95_low": lo, f"{metric}_ci95_high": hi})
        out.append(row)
    return pd.DataFrame(out)
