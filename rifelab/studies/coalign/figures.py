"""Figures of the co-alignment study: loss curves, quality against time, example frames."""

from __future__ import annotations

import textwrap
from typing import Any, Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def case_name(T: int, W: int, H: int) -> str:
    """A case label: frame count and resolution."""
    return f"{T} frames {W}x{H}"


def loss_curves_figure(cases: Mapping[tuple[int, int, int], Any]) -> plt.Figure:
    """Loss per Adam step of the full-length runs per case, with the stop of each early-stopping rule."""
    n = len(cases)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.6), squeeze=False)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    first = next(iter(cases.values()))
    for ax, ((T, W, H), cr) in zip(axes[0], cases.items()):
        for k, (label, hist) in enumerate(cr.histories.items()):
            ax.semilogy(np.arange(1, len(hist) + 1), hist, color=palette[k % len(palette)], lw=1.2, label=label)
        for k, (label, stop) in enumerate(cr.stops.items()):
            colour = palette[list(cr.histories).index(stop["history"]) % len(palette)]
            ax.axvline(stop["iterations"], color=colour, ls=":", lw=1)
            ax.text(stop["iterations"], ax.get_ylim()[1], f" {k + 1}", color=colour, va="top", fontsize=8)
        ax2 = ax.twinx()
        ax2.plot(cr.scale_histories[cr.ref_method], color="gray", ls="--", lw=0.8)
        ax2.set_ylabel("mean scale (reference)", color="gray", fontsize=8)
        ax.set_title(f"synthetic video, {case_name(T, W, H)}", fontsize=9)
        ax.set_xlabel("Adam step")
    axes[0][0].set_ylabel("loss")
    axes[0][0].legend(fontsize=7, loc="lower left")
    stop_names = "; ".join(f"{k + 1}: {label}" for k, label in enumerate(first.stops))
    fig.suptitle(textwrap.fill(f"stops — {stop_names}", int(17 * 4.6 * n)), fontsize=8)
    fig.tight_layout()
    return fig


def quality_vs_time_figure(methods: pd.DataFrame, device_name: str) -> plt.Figure:
    """AbsRel against the synthetic truth versus co-alignment time, one marker per case, one colour per method."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    timed = methods[methods["time_s"] > 0]
    cases = list(dict.fromkeys(zip(timed["frames"], timed["width"], timed["height"])))
    markers = dict(zip(cases, "osD^v<>ph*" * 4))
    for k, (method, grp) in enumerate(timed.groupby("method", sort=False)):
        for _, r in grp.iterrows():
            case = (r["frames"], r["width"], r["height"])
            ax.scatter(r["time_s"], r["abs_rel_vs_synthetic"], color=palette[k % len(palette)], marker=markers[case],
                       s=30, label=method if case == cases[0] else None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"co-alignment time (s), {device_name}")
    ax.set_ylabel("AbsRel vs synthetic truth")
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    ax.set_title("Accuracy against the synthetic truth vs time; markers: "
                 + ", ".join(f"{m} {case_name(*c)}" for c, m in markers.items()), fontsize=8)
    fig.tight_layout()
    return fig


def frames_figure(truth: np.ndarray, examples: Mapping[str, np.ndarray], idx: np.ndarray,
                  abs_rel: Mapping[str, float], case: str) -> plt.Figure:
    """Example frames of the synthetic truth and of merged videos (each min-max normalised to [-1, 1])."""
    show = {"synthetic truth (1/depth)": truth, **examples}
    fig, axes = plt.subplots(len(show), len(idx), figsize=(2.2 * len(idx), 1.8 * len(show)), squeeze=False)
    for r, (name, frames) in enumerate(show.items()):
        for c, i in enumerate(idx):
            axes[r][c].imshow(frames[c], cmap="Spectral_r", vmin=-1, vmax=1)
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
            if r == 0:
                axes[r][c].set_title(f"frame {i}", fontsize=8)
        err = f"\nAbsRel {abs_rel[name]:.3f}" if name in abs_rel else ""
        axes[r][0].set_ylabel(textwrap.fill(name, 26) + err, fontsize=7)
    fig.suptitle(f"Merged inverse depth vs the synthetic truth, {case} (AbsRel vs synthetic truth)", fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ summaries
