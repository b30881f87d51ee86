"""Baseline validation of RIFE 4.0: quality on real triplets against naive baselines, efficiency per resolution.

Quality follows the official RIFE benchmark protocol (prediction rounded to uint8; PSNR; SSIM with an 11x11
Gaussian window) on triplets of the bundled real clips and, when `dataset_path` points at a UCF101, Middlebury
or Vimeo90K folder, on that benchmark. Published figures sit beside ours only where they measure the same thing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from rifelab.publish import claims, plots
from rifelab.frames.assets import CLIPS
from rifelab.measure.benchmark import bench_row, pixel_count
from rifelab.frames.clips import clip_info, clip_triplets, detect_layout, load_clip, read_triplet_dataset
from rifelab.measure.evaluation import evaluate_triplets, summarise
from rifelab.rife.network import VALID_SCALES
from rifelab.studies.base import Param, StudyResult, StudyRun

log = logging.getLogger(__name__)

__all__ = ["PARAMS", "NOTEBOOK", "run"]

NOTEBOOK = "01_baseline.ipynb"
DATASET_NAMES = {"ucf101": "UCF101", "middlebury": "Middlebury other", "vimeo90k": "Vimeo90K"}

PARAMS: dict[str, Param] = {
    "clips": Param("list", "bundled real clips scored", item="str", choices=CLIPS),
    "n_triplets": Param("int", "triplets per clip (non-overlapping)", low=1),
    "stride": Param("int", "frame distance between I0 and the ground truth I1", low=1),
    "scale": Param("float", "RIFE flow scale", choices=VALID_SCALES),
    "dataset_path": Param("str", "optional UCF101 / Middlebury / Vimeo90K folder; skipped if absent", nullable=True),
    "dataset_limit": Param("int", "at most this many triplets from dataset_path", low=1),
    "resolutions": Param("list", "frame sizes of the efficiency table", item="resolution"),
    "warmup": Param("int", "unrecorded calls before timing", low=0),
    "repeats": Param("int", "timed calls per resolution", low=1),
    "examples": Param("int", "triplets shown in the figure grid", low=0),
    "progress": Param("bool", "tqdm progress bars", tracked=False),
}


def _clip_triplet_count(clip: str, n: int, stride: int, notes: list[str]) -> int:
    """Triplets to take from `clip`: `n`, or fewer with a note when the clip is too short."""
    room = (int(clip_info(clip)["frames"]) - 1) // (2 * stride)
    if n > room:
        notes.append(f"{clip}: {n} triplets asked for, the clip has room for {room} at stride {stride}; used {room}")
        log.warning(notes[-1])
        return room
    return n


def _score_dataset(run: StudyRun, path: str, notes: list[str]) -> tuple[pd.DataFrame | None, list, str | None]:
    p = run.params
    if not Path(path).is_dir():
        notes.append(f"dataset_path {path!r} not found: benchmark skipped (set baseline.dataset_path to your copy)")
        return None, [], None
    name = DATASET_NAMES[detect_layout(path)]
    triplets = read_triplet_dataset(path, limit=p["dataset_limit"])
    df, ex = evaluate_triplets(run.model(), triplets, name, scale=p["scale"], keep=1, progress=run.progress)
    return df, ex, name


def run(
    profile: str = "cpu",
    overrides: Mapping[str, Any] | None = None,
    results_root: str | os.PathLike | None = None,
    params_path: str | os.PathLike | None = None,
) -> StudyResult:
    """Score quality on the clips (and the benchmark folder, if any), time each resolution, publish."""
    with StudyRun.start("baseline", PARAMS, profile, overrides, results_root, params_path) as run:
        p, model, notes = run.params, run.model(), []
        per_triplet, shown = [], []
        for clip in p["clips"]:
            n = _clip_triplet_count(clip, p["n_triplets"], p["stride"], notes)
            frames = load_clip(clip, max_frames=2 * p["stride"] * n + 1)
            df, ex = evaluate_triplets(model, clip_triplets(frames, stride=p["stride"], count=n), clip,
                                       scale=p["scale"], keep=1 if len(shown) < p["examples"] else 0,
                                       progress=run.progress)
            per_triplet.append(df)
            shown += ex
        dataset = None
        if p["dataset_path"]:
            df, ex, dataset = _score_dataset(run, p["dataset_path"], notes)
            if df is not None:
                per_triplet.append(df)
                shown += ex
        per_triplet = run.table(pd.concat(per_triplet, ignore_index=True), "quality_per_triplet")
        summary = run.table(summarise(per_triplet), "quality_summary")
        run.figure(plots.triplet_grid(shown[: p["examples"] + (dataset is not None)],
                                      title="RIFE 4.0, t = 0.5: I0 / ground truth / RIFE / error"), "triplet_grid")
        run.figure(plots.metric_distribution(per_triplet, "psnr"), "psnr_distribution")

        rows = [bench_row(model, r, run.device, scale=p["scale"], warmup=p["warmup"], repeats=p["repeats"])
                for r in p["resolutions"]]
        efficiency = run.table(pd.DataFrame(rows).assign(device=run.env["device_name"]), "efficiency")
        run.figure(plots.latency_vs_resolution(efficiency, title=f"RIFE 4.0 FP32 eager on {run.env['device_name']}"),
                   "latency_vs_resolution")

        rife = summary[summary.method == "rife"].set_index("source")
        avg = summary[summary.method == "average"].set_index("source")
        model_name = f"RIFE {model.variant}"
        ours = {(model_name, src, m): float(rife.loc[src, m]) for src in rife.index for m in ("psnr", "ssim")}
        run.table(claims.beside_ours(claims.claims("baseline"), ours, f"ours ({model_name})"), "published_vs_ours")

        metrics = {
            "quality": {src: {"psnr": rife.loc[src, "psnr"], "ssim": rife.loc[src, "ssim"], "ie": rife.loc[src, "ie"],
                              "psnr_gain_vs_average": rife.loc[src, "psnr"] - avg.loc[src, "psnr"],
                              "n": int(rife.loc[src, "n"])} for src in rife.index},
            "efficiency": {r["resolution"]: {k: r[k] for k in ("median_ms", "p10_ms", "p90_ms", "fps", "peak_mem_mib",
                                                               "gmac")} for r in rows},
            "params_m": rows[0]["params_m"],
            "notes": notes,
        }
        headline = {"psnr_" + src.replace(" ", "_").lower(): round(float(rife.loc[src, "psnr"]), 3) for src in rife.index}
        headline.update({f"ms_{r['resolution']}": round(r["median_ms"], 2) for r in rows})
        plot_data = {
            "psnr_per_triplet": per_triplet[per_triplet.method == "rife"].assign(
                triplet=lambda d: d.source + "/" + d.triplet)[["triplet", "psnr"]],
            "latency": efficiency[["resolution", "median_ms"]].sort_values(
                "resolution", key=lambda col: col.map(pixel_count), kind="stable"),  # by pixel count, not as text
        }
        lines = [f"**{src}**: RIFE {rife.loc[src, 'psnr']:.2f} dB PSNR / {rife.loc[src, 'ssim']:.4f} SSIM, "
                 f"{rife.loc[src, 'psnr'] - avg.loc[src, 'psnr']:+.2f} dB over the neighbour average "
                 f"(n = {int(rife.loc[src, 'n'])})" for src in rife.index]
        lines += [f"**{r['resolution']}**: {r['median_ms']:.1f} ms median (p10-p90 {r['p10_ms']:.1f}-{r['p90_ms']:.1f}),"
                  f" {r['fps']:.2f} FPS, {r['gmac']:.1f} GMAC" for r in rows]
        lines += notes
        return run.finish(metrics, headline, plot_data, lines)
