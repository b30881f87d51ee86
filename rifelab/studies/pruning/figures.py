"""Figures of the pruning study: sensitivity heatmap, latency shares, quality against speed, loss curves."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

def plot_sensitivity(sens: pd.DataFrame) -> Any:
    """Heatmap: PSNR drop per group (rows) and ratio (columns) when that group alone is pruned."""
    grid = sens.pivot(index="group", columns="ratio", values="dpsnr").reindex(list(dict.fromkeys(sens["group"])))
    fig, ax = plt.subplots(figsize=(6, max(4, 0.22 * len(grid))))
    im = ax.imshow(grid.to_numpy(), aspect="auto", cmap="magma", vmax=0)
    ax.set_xticks(range(len(grid.columns)), [f"{c:g}" for c in grid.columns])
    ax.set_yticks(range(len(grid)), grid.index, fontsize=6)
    for (i, j), v in np.ndenumerate(grid.to_numpy()):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=5, color="w" if v < grid.to_numpy().min() / 2 else "k")
    ax.set_xlabel("share of the group's channels removed (that group alone)")
    ax.set_title("Sensitivity: PSNR change on held-out triplets (dB)")
    fig.colorbar(im, ax=ax, label="dPSNR (dB)")
    fig.tight_layout()
    return fig


def plot_latency_share(shares: pd.DataFrame, forward_ms: float) -> Any:
    """Per group: share of the measured forward time beside its share of MACs."""
    fig, ax = plt.subplots(figsize=(10, 4))
    x = np.arange(len(shares))
    ax.bar(x - 0.2, 100 * shares["share"], 0.4, label="measured time (profile on this device)")
    ax.bar(x + 0.2, 100 * shares["mac_share"], 0.4, label="MACs")
    ax.set_xticks(x, shares["group"], rotation=90, fontsize=6)
    ax.set_ylabel("% of the forward pass")
    ax.set_title(f"Where the time goes: measured time vs MACs per channel group (forward {forward_ms:.0f} ms)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_pareto(table: pd.DataFrame, p: Mapping[str, Any]) -> Any:
    """Held-out PSNR against measured speedup (95% intervals), target box shaded, physical points only."""
    fig, ax = plt.subplots(figsize=(8, 5))
    t = table[(table["mode"] != "mask")]
    for fam, g in t.groupby("family", sort=False):
        ax.errorbar(g["speedup"], g["psnr"], xerr=[g["speedup"] - g["speedup_ci_low"], g["speedup_ci_high"] - g["speedup"]],
                    fmt="*" if fam.endswith("+ft") else "o", markersize=10 if fam.endswith("+ft") else 5, capsize=2,
                    label=fam)
    base = float(table.loc[table["config"] == "unpruned", "psnr"].iloc[0])
    ax.axhline(base - p["target_max_loss_db"], color="g", linestyle=":",
               label=f"target: >= {p['target_speedup']:g}x at <= {p['target_max_loss_db']:g} dB loss")
    ax.axvline(p["target_speedup"], color="g", linestyle=":")
    ax.set_xlabel("measured speedup over the unpruned model (median ratio, 95% interval)")
    ax.set_ylabel("PSNR on held-out triplets (dB)")
    ax.set_title("Quality against measured speed")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_losses(losses: Mapping[str, Sequence[float]]) -> Any:
    """Distillation loss per step (moving average over 20 steps) of every fine-tuned checkpoint."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, ls in losses.items():
        if len(ls):
            k = min(20, len(ls))
            ax.plot(np.convolve(ls, np.ones(k) / k, mode="valid"), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("distillation loss (moving average)")
    ax.set_yscale("log")
    ax.set_title("Fine-tuning: loss curves")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
