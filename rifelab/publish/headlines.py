"""The short headline of each study: one row of `dvc metrics show`, a few columns shared by every study.

A study's full headline (`results/<profile>/metrics/<study>.json`, with the environment) and everything it measured
(`results/<profile>/<study>/<device_key>/metrics.json`) stay available by path. The short headline keeps two or three
numbers under column names shared across studies, so the whole table for every profile fits 120 columns:
`results/headlines/<profile>/<study>.json`, declared once at the top of dvc.yaml (profiles not run show no row).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from rifelab.measure.benchmark import parse_resolution

__all__ = ["COLUMNS", "HEADLINES", "short_headline", "headline_path", "headline_sentence"]

HEADLINES = "headlines"  # results/headlines/<profile>/<study>.json
# column: what it holds (in every study that has it)
COLUMNS = {
    "psnr_db": "PSNR of RIFE's frames against the truth (dB; mean of the sources)",
    "fps": "output frames per second of `rifelab interpolate`",
    "ms": "median latency of one frame at the largest resolution measured (ms)",
    "speedup": "best speedup over the study's reference",
    "loss_db": "PSNR given up for that speedup (dB)",
    "abs_rel": "AbsRel of the fast solver against the synthetic truth",
    "noisy": "1 when a timing check still failed after re-measuring: the speed figures are flagged, not clean",
}


def _num(value: Any, digits: int = 3) -> float | None:
    try:
        return None if value is None else round(float(value), digits)
    except (TypeError, ValueError):
        return None


def _largest_ms(headline: Mapping[str, Any]) -> float | None:
    sizes = {}
    for key in headline:
        if key.startswith("ms_"):
            try:
                w, h = parse_resolution(key[3:])
            except (ValueError, TypeError):
                continue
            sizes[w * h] = key
    return _num(headline[sizes[max(sizes)]], 1) if sizes else None


def short_headline(study: str, headline: Mapping[str, Any]) -> dict[str, float]:
    """The study's headline under the shared column names (COLUMNS); numbers only, missing ones left out."""
    h = headline
    psnrs = [v for k, v in h.items() if k.startswith("psnr_") and isinstance(v, (int, float))]
    rules: dict[str, dict[str, Any]] = {
        "interactive": {"psnr_db": _num(h.get("rife_psnr_db"), 2), "fps": _num(h.get("pipeline_output_fps"), 2)},
        "baseline": {"psnr_db": _num(sum(psnrs) / len(psnrs), 2) if psnrs else None, "ms": _largest_ms(h)},
        "optimisation": {"speedup": _num(h.get("best_fp32_quality_speedup"), 2), "ms": _num(h.get("baseline_ms"), 1)},
        "pruning": {"psnr_db": _num(h.get("unpruned_psnr"), 2), "speedup": _num(h.get("best_speedup"), 2),
                    "loss_db": _num(-h["best_dpsnr"], 2) if isinstance(h.get("best_dpsnr"), (int, float)) else None},
        "coalign": {"speedup": _num(h.get("solver_speedup"), 1), "abs_rel": _num(h.get("synthetic_abs_rel_solver"), 4)},
    }
    row = rules.get(study, {k: _num(v) for k, v in h.items() if k in COLUMNS})
    if h.get("noisy"):  # never shown as a clean result: the flag travels with the numbers
        row["noisy"] = 1
    return {k: v for k, v in row.items() if v is not None}


def headline_path(results_root: str | os.PathLike, profile: str, study: str) -> Path:
    """`<results_root>/headlines/<profile>/<study>.json`."""
    return Path(results_root) / HEADLINES / profile / f"{study}.json"


_PHRASES = {
    "psnr_db": "PSNR {} dB", "fps": "{} output frames/s", "ms": "{} ms per frame at the largest resolution",
    "speedup": "best speedup {}x", "loss_db": "for {} dB less PSNR", "abs_rel": "AbsRel {} against the synthetic truth",
}


def headline_sentence(study: str, row: Mapping[str, float]) -> str:
    """One clause of the report's summary, e.g. `baseline: PSNR 33.95 dB, 883.7 ms per frame at the largest ...`."""
    parts = [_PHRASES[k].format(f"{v:g}") for k, v in row.items() if k in _PHRASES]
    if parts and row.get("noisy"):
        parts.append("timing flagged **noisy** (a check failed after re-measuring; see the study)")
    return f"**{study}**: {', '.join(parts)}" if parts else ""
