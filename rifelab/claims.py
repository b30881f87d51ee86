"""The one table of published and reported figures that studies set beside their own, always labelled as claims.

These are the only hand-entered numbers in the project. They are never written as our results: a study shows
them in a separate table whose `source` and `status` columns say where each came from, and `beside_ours` puts
our value next to a claim only when it measures the same thing (same dataset, same model version, same metric);
otherwise it says n/a and why.
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

__all__ = ["CLAIMS", "claims", "beside_ours"]

_PAPER = "RIFE paper (Huang et al., ECCV 2022)"
_R000 = "report 000 (RIFE 4.6 optimisation)"
_R002 = "report 002 (RIFE-HDv3 readme)"

CLAIMS: list[dict[str, Any]] = [
    # quality: the paper's RIFE model (v1), not 4.0
    {"study": "baseline", "source": _PAPER, "model": "RIFE (paper model)", "dataset": "UCF101", "metric": "psnr",
     "value": 35.282, "unit": "dB", "device": "n/a", "status": "published"},
    {"study": "baseline", "source": _PAPER, "model": "RIFE (paper model)", "dataset": "UCF101", "metric": "ssim",
     "value": 0.9688, "unit": "", "device": "n/a", "status": "published"},
    {"study": "baseline", "source": _PAPER, "model": "RIFE (paper model)", "dataset": "Vimeo90K", "metric": "psnr",
     "value": 35.615, "unit": "dB", "device": "n/a", "status": "published"},
    {"study": "baseline", "source": _PAPER, "model": "RIFE (paper model)", "dataset": "Vimeo90K", "metric": "ssim",
     "value": 0.9779, "unit": "", "device": "n/a", "status": "published"},
    # speed at 1080p
    {"study": "optimisation", "source": _R000, "model": "RIFE 4.6", "dataset": "1920x1080", "metric": "fps FP32 eager",
     "value": "27.28-31.17", "unit": "fps", "device": "RTX 3090", "status": "measured by the report"},
    {"study": "optimisation", "source": _R000, "model": "RIFE 4.6", "dataset": "1920x1080", "metric": "fps FP32 optimised",
     "value": 37.59, "unit": "fps", "device": "RTX 3090", "status": "measured by the report"},
    {"study": "optimisation", "source": _R000, "model": "RIFE 4.6", "dataset": "1920x1080", "metric": "fps FP16",
     "value": "50-60", "unit": "fps", "device": "RTX 3090", "status": "estimated, never measured"},
    {"study": "optimisation", "source": _R002, "model": "RIFE-HDv3", "dataset": "1920x1080", "metric": "latency",
     "value": "45 / 28 / 18", "unit": "ms", "device": "GTX 1080 Ti / RTX 3090 / A100", "status": "claimed"},
    {"study": "optimisation", "source": _R002, "model": "RIFE-HDv3", "dataset": "3840x2160", "metric": "latency",
     "value": "220 / 145 / 85", "unit": "ms", "device": "GTX 1080 Ti / RTX 3090 / A100", "status": "claimed"},
]


def claims(study: str | None = None) -> pd.DataFrame:
    """The claims of one study (all when None), labelled with source, model, device and status."""
    df = pd.DataFrame(CLAIMS)
    return df[df.study == study].reset_index(drop=True) if study else df


def beside_ours(table: pd.DataFrame, ours: Mapping[tuple[str, str, str], float], our_label: str) -> pd.DataFrame:
    """`table` with an `ours` column: our value for (model, dataset, metric) when we measured exactly that, else n/a."""
    measured_models = {m for m, _, _ in ours}
    measured_sets = {d for _, d, _ in ours}
    col = []
    for row in table.itertuples():
        key = (row.model, row.dataset, row.metric)
        if key in ours:
            col.append(ours[key])
        elif row.dataset not in measured_sets:
            col.append(f"n/a (we have no {row.dataset} run)")
        elif row.model not in measured_models:
            col.append(f"n/a (different model: ours is {', '.join(sorted(measured_models))})")
        else:
            col.append("n/a (not measured)")
    return table.assign(**{our_label: col})
