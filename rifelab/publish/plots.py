"""Figures shared by the study notebooks (matplotlib/seaborn; headless-safe)."""

from __future__ import annotations

from typing import Any, Sequence

import matplotlib

if matplotlib.get_backend().lower() not in {"module://matplotlib_inline.backend_inline", "inline", "widget", "ipympl"}:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

__all__ = ["triplet_grid", "metric_distribution", "latency_vs_resolution"]


def triplet_grid(examples: Sequence[dict[str, Any]], pred_key: str = "pred_rife", title: str = "") -> plt.Figure:
    """Rows of I0 / ground truth / prediction / |error| (mean over RGB, 0-255 scale) for each example."""
    n = max(1, len(examples))
    fig, axes = plt.subplots(n, 4, figsize=(13, 2.9 * n), squeeze=False)
    for r, ex in enumerate(examples):
        err = np.abs(ex[pred_key].astype(np.float64) - ex["gt"]).mean(axis=2)
        panels = [(ex["frame0"], "I0"), (ex["gt"], "ground truth I1"), (ex[pred_key], pred_key.replace("pred_", "")),
                  (err, f"|error| (max {err.max():.0f})")]
        for c, (img, label) in enumerate(panels):
            ax = axes[r, c]
            if img.ndim == 2:
                im = ax.imshow(img, cmap="magma", vmin=0, vmax=max(32.0, float(np.percentile(img, 99.5))))
                fig.colorbar(im, ax=ax, fraction=0.03)
            else:
                ax.imshow(img)
            ax.set_title(f"{ex.get('source', '')} {ex.get('triplet', '')}: {label}" if c == 0 else label, fontsize=9)
            ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def metric_distribution(df: pd.DataFrame, metric: str = "psnr", x: str = "source", hue: str = "method") -> plt.Figure:
    """Box plot plus points of a per-sample metric, grouped by `x` and coloured by `hue`."""
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * df[x].nunique() * max(1, df[hue].nunique()) / 2), 4))
    sns.boxplot(data=df, x=x, y=metric, hue=hue, ax=ax, fliersize=0)
    sns.stripplot(data=df, x=x, y=metric, hue=hue, dodge=True, ax=ax, size=3, palette="dark:k", alpha=0.4, legend=False)
    ax.set_ylabel(metric.upper() + (" (dB)" if metric == "psnr" else ""))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def latency_vs_resolution(df: pd.DataFrame, hue: str | None = None, title: str = "") -> plt.Figure:
    """Median latency (with p10-p90 bars) against megapixels per frame."""
    fig, ax = plt.subplots(figsize=(6, 4))
    groups = df.groupby(hue, sort=False) if hue else [("", df)]
    for name, g in groups:
        mp = g["width"] * g["height"] / 1e6
        yerr = np.vstack([g["median_ms"] - g["p10_ms"], g["p90_ms"] - g["median_ms"]])
        ax.errorbar(mp, g["median_ms"], yerr=yerr, marker="o", capsize=3, label=str(name) or None)
        for x, y, r in zip(mp, g["median_ms"], g["resolution"]):
            ax.annotate(r, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("megapixels per frame")
    ax.set_ylabel("latency per interpolated frame (ms, median; bars p10-p90)")
    if hue:
        ax.legend()
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
