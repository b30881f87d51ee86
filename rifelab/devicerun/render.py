"""The cuda profile's device-run results, rendered from a stored archive on any machine: nothing is re-timed.

`render(archive, results_root)` reads `device_run.tar.gz` (archive.read_archive checks it) and writes, under
<results_root>/cuda/ only: device_run/ (tables as CSV + Markdown, figures, summary.md, metrics.json, swapped in
whole) and metrics/device_run.json (the headline). Notebook 05 calls it; `rifelab device-report` executes that
notebook into notebooks/05_device_run.ipynb and builds device_report.html from it. Every sentence names the
machine and time of the measurement, and the rendering says it re-timed nothing.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from rifelab.devicerun.archive import ARCHIVE_NAME, DeviceRun, read_archive
from rifelab.publish.results import atomic_path, results_base, save_figure, save_json, save_table

log = logging.getLogger(__name__)

__all__ = ["PROFILE", "GOAL_CALLS_PER_S", "QUALITY_DB", "Rendered", "render", "land"]

PROFILE = "cuda"
FOLDER = "device_run"
GOAL_CALLS_PER_S = 500.0  # issue 25: best configuration at 1920x1080, >= 45 dB vs FP32 (VSGAN 2x: 1000 fps)
GOAL_RESOLUTION = "1920x1080"
QUALITY_DB = 45.0
SUMMARY_COLUMNS = ["config", "batch", "streams", "calls_per_s", "output_fps_2x", "median_ms", "p90_ms",
                   "psnr_vs_fp32_db", "psnr_vs_fp32_min_db", "peak_mem_mib", "first_call_s"]


@dataclass
class Rendered:
    """What a rendering produced: folder, tables, figure files, headline and sentences."""

    folder: Path
    run: DeviceRun
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    headline: dict[str, Any] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)

    def summary_markdown(self) -> str:
        return "### What the device run measured\n\n" + "\n".join(f"- {s}" for s in self.summary)


def land(archive: str | os.PathLike, results_root: str | os.PathLike | None) -> Path:
    """Check an archive and copy it to <results_root>/cuda/device_run.tar.gz (unchanged bytes, atomic; without a
    root: the scratch folder)."""
    archive = Path(archive)
    read_archive(archive)
    dest = results_base(PROFILE, results_root) / ARCHIVE_NAME
    if dest.exists() and dest.resolve() == archive.resolve():
        return dest
    with atomic_path(dest) as tmp:
        shutil.copyfile(archive, tmp)
    return dest


def _ran(rows: pd.DataFrame, part: str | None = None) -> pd.DataFrame:
    if rows.empty:
        return rows
    r = rows[rows.status == "ran"]
    return r[r.part == part] if part else r


def _tables(rows: pd.DataFrame, run: DeviceRun) -> dict[str, pd.DataFrame]:
    t: dict[str, pd.DataFrame] = {"rows": rows}
    timed = _ran(rows)
    timed = timed[timed.part != "profile"] if not timed.empty else timed
    cols = [c for c in SUMMARY_COLUMNS if c in timed.columns]
    for res, g in timed.groupby("resolution", sort=False):
        t[f"summary_{res}"] = g[cols].sort_values("calls_per_s", ascending=False).reset_index(drop=True)
    hires = _ran(rows, "fp16_4k")
    if not hires.empty:
        t["fp16_4k"] = hires[["config", "resolution", "psnr_vs_fp32_db", "psnr_vs_fp32_min_db", "max_abs_diff",
                              "calls_per_s", "peak_mem_mib"]].reset_index(drop=True)
    bs = _ran(rows, "batch_streams")
    if not bs.empty:
        t["batch_streams"] = bs[["resolution"] + cols].reset_index(drop=True)
    comp = rows[rows.part == "compile"] if not rows.empty else rows
    if not comp.empty:
        keep = [c for c in ["config", "resolution", "status", "compile_mode", "first_call_s", "calls_per_s",
                            "psnr_vs_fp32_db", "reason"] if c in comp.columns]
        t["compile"] = comp[keep].rename(columns={"first_call_s": "compile_and_capture_s"}).reset_index(drop=True)
    if run.kernels:
        t["kernels_top5"] = pd.DataFrame(run.kernels)[["rank", "kernel", "calls", "self_time_ms", "per_model_call_us",
                                                       "share_pct", "time_kind", "config", "resolution", "batch"]]
    not_ran = rows[rows.status != "ran"] if not rows.empty else rows
    t["not_run"] = pd.concat([
        pd.DataFrame([{"what": f"part {p['part']}", "status": p["status"], "reason": p["reason"]}
                      for p in run.parts if p["status"] != "ok"], columns=["what", "status", "reason"]),
        pd.DataFrame([{"what": f"{r.config} @ {r.resolution} (batch {r.batch}, streams {r.streams})",
                       "status": r.status, "reason": r.reason} for r in not_ran.itertuples()],
                     columns=["what", "status", "reason"])], ignore_index=True)
    t["parts"] = pd.DataFrame(run.parts)
    return t


def _best(rows: pd.DataFrame, res: str) -> pd.Series | None:
    r = _ran(rows)
    if r.empty:
        return None
    r = r[(r.resolution == res) & (r.part != "profile") & (r.psnr_vs_fp32_db >= QUALITY_DB)]
    return r.loc[r.calls_per_s.idxmax()] if not r.empty else None


def _figure(rows: pd.DataFrame, title: str) -> plt.Figure | None:
    r = _ran(rows)
    r = r[r.part != "profile"] if not r.empty else r
    if r.empty:
        return None
    r = r.assign(label=r.config + " b" + r.batch.astype(str) + " s" + r.streams.astype(str))
    res = list(dict.fromkeys(r.resolution))
    fig, axes = plt.subplots(1, len(res), figsize=(6.5 * len(res), 0.32 * r.label.nunique() + 1.6), squeeze=False)
    for ax, rz in zip(axes[0], res):
        g = r[r.resolution == rz].sort_values("calls_per_s")
        colours = ["tab:blue" if q >= QUALITY_DB else "tab:orange" for q in g.psnr_vs_fp32_db]
        ax.barh(g.label, g.calls_per_s, color=colours)
        if rz == GOAL_RESOLUTION:
            ax.axvline(GOAL_CALLS_PER_S, color="k", ls="--", lw=1, label=f"goal {GOAL_CALLS_PER_S:g} calls/s")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_title(f"{rz} (blue: PSNR vs FP32 >= {QUALITY_DB:g} dB)", fontsize=9)
        ax.set_xlabel("model calls/s (interpolated frames/s; VSGAN 2x output fps = 2x)")
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _sentences(run: DeviceRun, rows: pd.DataFrame, headline: dict[str, Any]) -> list[str]:
    env, man = run.environment, run.manifest
    out = [f"Measured on **{env.get('device_name')}** (torch {env.get('torch_version')}, CUDA "
           f"{env.get('cuda_version')}, cuDNN {env.get('cudnn_version')}, commit {str(env.get('git_commit'))[:16]}) "
           f"from {man['started_utc']} to {man['finished_utc']} ({man['wall_s']} s, limit {man['deadline_s']} s) by "
           f"`{man['command']}`. Rendered on {platform.node() or 'this machine'} at {_now()} from the stored "
           f"archive: **nothing was re-timed**."]
    if man.get("mode") != "gpu":
        out.append(f"This archive is a **{man.get('mode')} run**, not a GPU measurement: its figures only check "
                   "that the script works.")
    for res in dict.fromkeys(_ran(rows).resolution if not rows.empty else []):
        base = _ran(rows)
        base = base[(base.resolution == res) & (base.config == "fp32-eager") & (base.batch == 1)
                    & (base.streams == 1)]
        best = _best(rows, res)
        if best is None:
            continue
        fp32 = f"FP32 eager {base.calls_per_s.iloc[0]:.1f} calls/s; " if not base.empty else ""
        out.append(f"**{res}**: {fp32}best at FP32 quality **{best.config}** (batch {best.batch}, {best.streams} "
                   f"stream(s)): **{best.calls_per_s:.1f} model calls/s = {best.output_fps_2x:.1f} output fps** "
                   f"(VSGAN 2x count), PSNR vs FP32 {best.psnr_vs_fp32_db:.1f} dB, peak {best.peak_mem_mib:.0f} MiB")
    if headline.get("best_calls_per_s") is not None:
        out.append(f"Goal (>= {GOAL_CALLS_PER_S:g} calls/s at {GOAL_RESOLUTION}, >= {QUALITY_DB:g} dB): "
                   f"**{headline['goal']}**, {headline['goal_fraction']:.0%} of it")
    hires, lowres = _ran(rows, "fp16_4k"), _ran(rows, "precisions")
    for r in hires.itertuples():
        if r.config != "fp32-eager":
            same = lowres[(lowres.config == r.config) & (lowres.resolution == GOAL_RESOLUTION)] if not lowres.empty \
                else lowres
            at_goal = f"; {same.psnr_vs_fp32_db.iloc[0]:.1f} dB at {GOAL_RESOLUTION}" if not same.empty else ""
            out.append(f"{r.config} at {r.resolution}: PSNR vs FP32 {r.psnr_vs_fp32_db:.1f} dB (min "
                       f"{r.psnr_vs_fp32_min_db:.1f}{at_goal}), max abs diff {r.max_abs_diff:.3g}: "
                       + ("no half-precision warp artefact (rifelab warps in fp32)" if r.psnr_vs_fp32_db >= QUALITY_DB
                          else "below FP32 quality: look at the frames for warp artefacts (ECCV2022-RIFE #188)"))
    comp = _ran(rows, "compile")
    for r in comp.itertuples():
        out.append(f"torch.compile {getattr(r, 'compile_mode', '')} at {r.resolution}: compile + capture "
                   f"{r.first_call_s:.0f} s, {r.calls_per_s:.1f} calls/s")
    if run.kernels:
        k = run.kernels[0]
        out.append(f"Dominant kernel ({k['config']}, {k['resolution']}): `{k['kernel'][:90]}`, {k['share_pct']:.0f}% "
                   f"of the {k['time_kind']}")
    out += [f"Not run: part {p['part']}: {p['status']}: {p['reason']}" for p in run.parts if p["status"] != "ok"]
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def render(archive: str | os.PathLike, results_root: str | os.PathLike | None = None) -> Rendered:
    """Render the archive's tables, figure, summary and headline under <results_root>/cuda/ (without a root: the
    project's scratch folder, said first); the previous rendering is replaced only when this one succeeds."""
    run = read_archive(archive)
    base = results_base(PROFILE, results_root)
    if results_root is None:
        print(f"Trial rendering: results go to {base} (scratch, ignored by git); only the pipeline writes results/")
    final = base / FOLDER
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER}.partial-", dir=base))
    try:
        rows = pd.DataFrame(run.rows)
        tables = _tables(rows, run)
        for name, df in tables.items():
            save_table(df, tmp, name)
        figures = {}
        fig = _figure(rows, f"Device run: {run.environment.get('device_name')} ({run.manifest['started_utc']})")
        if fig is not None:
            figures["calls_per_s"] = save_figure(fig, tmp, "calls_per_s")
            plt.close(fig)
        best = _best(rows, GOAL_RESOLUTION)
        headline: dict[str, Any] = {
            "device_name": run.environment.get("device_name"), "measured_utc": run.manifest["started_utc"],
            "mode": run.manifest.get("mode"), "best_config": None, "best_calls_per_s": None}
        if best is not None:
            frac = float(best.calls_per_s) / GOAL_CALLS_PER_S
            headline.update(best_config=f"{best.config} b{best.batch} s{best.streams}",
                            best_calls_per_s=round(float(best.calls_per_s), 2),
                            best_output_fps_2x=round(float(best.output_fps_2x), 2),
                            best_psnr_vs_fp32_db=round(float(best.psnr_vs_fp32_db), 2),
                            goal="met" if frac >= 1 else "missed", goal_fraction=round(frac, 3))
        summary = _sentences(run, rows, headline)
        (tmp / "summary.md").write_text("\n".join(f"- {s}" for s in summary) + "\n")
        save_json({"headline": headline, "manifest": run.manifest, "environment": run.environment,
                   "parts": run.parts, "rendered_utc": _now(), "re_timed": False}, tmp / "metrics.json")
        old = base / f".{FOLDER}.old-{os.getpid()}"
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    save_json({**headline, "environment": {k: run.environment.get(k) for k in
                                           ("device_name", "torch_version", "cuda_version", "git_commit")},
               "rendered_from": ARCHIVE_NAME}, base / "metrics" / "device_run.json")
    figs = {k: final / v.name for k, v in figures.items()}
    return Rendered(final, run, tables, figs, headline, summary)
