"""Interactive study (notebook 00): RIFE at any timestep on real clip frames, and the `rifelab interpolate` pipeline.

The viewer shows I0, the frame RIFE makes at t, I1 and the clip's true middle frame (live controls in JupyterLab,
a saved view headless). The study records a strip of timesteps, the middle frame's quality against two naive
baselines (repeat I0; average of I0 and I1), and the throughput of the folder-to-folder pipeline with and without
its reader/writer threads against the model alone on the same calls, each mode in its own worker process; a timing in
which the pipeline beats the model it contains (or whose repeats spread, or that ran beside other load) is measured
again a bounded number of times and then published flagged `noisy`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rifelab.frames.assets import CLIPS
from rifelab.frames.clips import load_clip
from rifelab.interpolate.viewer import TimestepViewer
from rifelab.interpolate.bench import benchmark_pipeline
from rifelab.measure.harness import noise_limits
from rifelab.measure.workloads import ModelSpec
from rifelab.measure.metrics import psnr, ssim
from rifelab.rife.network import VALID_SCALES
from rifelab.studies.base import Param, ParamError, StudyResult, StudyRun

log = logging.getLogger(__name__)

__all__ = ["PARAMS", "NOTEBOOK", "InteractiveResult", "run", "controls", "triplet_quality", "benchmark_figure",
           "throughput_verdict"]

NOTEBOOK = "00_interactive.ipynb"

PARAMS: dict[str, Param] = {
    "clip": Param("str", "bundled clip (carphone | bikes | bigbuckbunny) or a video path for the viewer"),
    "max_frames": Param("int", "frames decoded for the viewer", low=3),
    "triplet_stride": Param("int", "a triplet is frames i, i+stride (truth at t=0.5), i+2*stride", low=1),
    "triplet": Param("int", "triplet the viewer opens on and the strip shows", low=0),
    "timestep": Param("float", "slider start value (headless: the view that is saved)", low=0.0, high=1.0),
    "show_widgets": Param("bool", "live controls (false headless: executors can hang on widget messages)",
                          tracked=False),
    "scale": Param("float", "RIFE flow scale", choices=VALID_SCALES),
    "strip_timesteps": Param("list", "timesteps of the saved strip figure", item="float", low=0.0, high=1.0),
    "bench_clip": Param("str", "clip whose first frames the pipeline benchmark interpolates", choices=CLIPS),
    "bench_frames": Param("int", "input frames of the pipeline benchmark", low=2),
    "bench_multi": Param("int", "--multi of the benchmark (frames per pair including both originals)", low=2),
    "bench_batch_size": Param("int", "--batch-size of the benchmark (frames per model call)", low=1),
    "bench_repeats": Param("int", "timed repeats per mode, after one warm-up run", low=1),
    "noise": Param("dict", "when the benchmark counts as disturbed: max_spread (p90/p10), max_other_cpu (cores other "
                   "processes may use), max_steal (share), attempts (timings in all before publishing flagged noisy)"),
}

QUALITY_METHODS = ("RIFE t=0.5", "repeat I0", "average of I0 and I1")


@dataclass
class InteractiveResult(StudyResult):
    """The study's result plus the viewer, for the live controls."""

    viewer: TimestepViewer | None = None
    show_widgets: bool = False


def triplet_quality(viewer: TimestepViewer, scale: float = 1.0) -> pd.DataFrame:
    """Per triplet: PSNR/SSIM of RIFE at t = 0.5 against the true middle frame, beside two naive baselines.

    Baselines: repeating I0 (what a duplicate-frame rate converter shows) and the pixel average of I0 and I1.
    """
    rows = []
    for k, tri in enumerate(viewer.triplets):
        rife = viewer.frame(k, 0.5, scale)
        blend = ((tri.frame0.astype(np.float64) + tri.frame2.astype(np.float64)) / 2).round().astype(np.uint8)
        for method, pred in zip(QUALITY_METHODS, (rife, tri.frame0, blend)):
            rows.append({"triplet": tri.name, "method": method, "psnr_db": float(psnr(pred, tri.gt)[0]),
                         "ssim": float(ssim(pred, tri.gt)[0])})
    return pd.DataFrame(rows)


def benchmark_figure(df: pd.DataFrame, title: str) -> Figure:
    """Bar chart of output frames per second per mode (median, p10-p90 whiskers) from `benchmark_pipeline`."""
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    y = np.arange(len(df))
    err = np.vstack([df["output_fps"] - df["output_fps_p10"], df["output_fps_p90"] - df["output_fps"]]).clip(min=0)
    colors = ["#4c72b0" if m == "model only" else "#55a868" if "threads" in m else "#c44e52" for m in df["mode"]]
    ax.barh(y, df["output_fps"], xerr=err, color=colors, capsize=4)
    ax.set_yticks(y, [f"{m}\n{s:.0%} of model-only rate" for m, s in zip(df["mode"], df["model_share"])])
    ax.invert_yaxis()
    ax.set_xlabel("output frames per second (median; whiskers p10-p90)")
    ax.set_title(title, fontsize=10, wrap=True)
    fig.tight_layout()
    return fig


def throughput_verdict(share: float) -> str:
    """What the threaded pipeline's share of the model-only rate says."""
    if share > 1.05:
        return ("the threaded pipeline timed faster than the model alone, which it cannot be (it makes the same "
                "model calls and more), so the machine's load changed during the run: treat these ratios as noise "
                "and rerun on an idle machine")
    if share >= 0.9:
        return "the threads hide the I/O: the pipeline runs within 10 % of the model's own rate"
    return (f"the threads do not fully hide the I/O here: decoding, the scene test and encoding add {1 / share - 1:.0%}"
            " to the model time")


def run(
    profile: str = "cpu",
    overrides: Mapping[str, Any] | None = None,
    results_root: str | os.PathLike | None = None,
    params_path: str | os.PathLike | None = None,
) -> InteractiveResult:
    """Build the viewer, save its view and strip, score the middle frames, time the pipeline, publish."""
    with StudyRun.start("interactive", PARAMS, profile, overrides, results_root, params_path) as run:
        p, model = run.params, run.model()
        try:
            limits = noise_limits(p["noise"])
        except ValueError as exc:
            raise ParamError(f"interactive.{exc}") from None
        viewer = TimestepViewer.from_clip(model, p["clip"], max_frames=p["max_frames"], stride=p["triplet_stride"])
        if p["triplet"] >= len(viewer.triplets):
            raise ValueError(f"interactive.triplet = {p['triplet']}, but {p['clip']} gives {len(viewer.triplets)} "
                             f"triplets at max_frames {p['max_frames']}, stride {p['triplet_stride']}; use 0.."
                             f"{len(viewer.triplets) - 1}")
        notes = [viewer.cost_warning(p["scale"]) + "."] if viewer.is_slow(p["scale"]) else []
        view = viewer.update(p["triplet"], p["timestep"], p["scale"])
        run.figure(viewer.figure(view), "view")
        run.figure(viewer.strip(p["triplet"], p["strip_timesteps"], p["scale"]), "timestep_strip")
        quality = run.table(triplet_quality(viewer, p["scale"]), "middle_frame_quality")
        means = quality.groupby("method", sort=False)[["psnr_db", "ssim"]].mean()

        frames = load_clip(p["bench_clip"], max_frames=p["bench_frames"])
        spec = ModelSpec(checkpoint=p["checkpoint"], device=str(run.device), threads=p["threads"])
        bench = benchmark_pipeline(spec, frames, multi=p["bench_multi"], batch_size=p["bench_batch_size"],
                                   scale=p["scale"], warmup=1, repeats=p["bench_repeats"], limits=limits)
        timing = bench.attrs["timing"]
        bench.insert(0, "device", run.env["device_name"])
        run.table(bench, "pipeline_benchmark")
        r = bench.iloc[0]
        run.figure(benchmark_figure(bench, f"rifelab interpolate on {run.env['device_name']}: {r.resolution}, "
                                    f"{int(r.input_frames)} -> {int(r.output_frames)} frames "
                                    f"(--multi {p['bench_multi']})"), "pipeline_benchmark")
        b = bench.set_index("mode")
        rife, rep, avg = (means.loc[m, "psnr_db"] for m in QUALITY_METHODS)
        share, serial = b.loc["pipeline (threads)", "model_share"], b.loc["pipeline (serial)", "model_share"]
        metrics = {
            "clip": p["clip"], "triplets": len(viewer.triplets),
            "view": {"triplet": view.triplet, "timestep": view.timestep, "scale": view.scale,
                     "psnr_vs_truth_db": view.psnr_vs_truth, "seconds": view.seconds},
            "middle_frame": {m: {"psnr_db": means.loc[m, "psnr_db"], "ssim": means.loc[m, "ssim"]}
                             for m in QUALITY_METHODS},
            "pipeline": {"resolution": r.resolution, "multi": p["bench_multi"], "output_frames": int(r.output_frames),
                         **{mode: {"output_fps": b.loc[mode, "output_fps"], "model_share": b.loc[mode, "model_share"]}
                            for mode in b.index}},
            "notes": notes,
            "noisy": timing.noisy,
            "timing": {"noisy": timing.noisy, "attempts": timing.attempts, "failed_checks": timing.problems,
                       "workers": timing.workers, "load": timing.load.as_dict() if timing.load else None,
                       "history": timing.history},
        }
        headline = {"rife_psnr_db": round(float(rife), 3), "average_psnr_db": round(float(avg), 3),
                    "pipeline_output_fps": round(float(b.loc["pipeline (threads)", "output_fps"]), 3),
                    "pipeline_model_share": round(float(share), 3), "noisy": timing.noisy}
        lines = [
            f"RIFE's frame at t = 0.5 scores **{rife:.2f} dB** PSNR against the true middle frames of {p['clip']} "
            f"(mean of {len(viewer.triplets)} triplets), against {avg:.2f} dB for the average of I0 and I1 and "
            f"{rep:.2f} dB for repeating I0.",
            f"{'(noisy) ' if timing.noisy else ''}`rifelab interpolate` ({r.resolution}, --multi {p['bench_multi']}): "
            f"**{b.loc['pipeline (threads)', 'output_fps']:.2f} output frames/s** with threads, "
            f"{b.loc['pipeline (serial)', 'output_fps']:.2f} serially, {b.loc['model only', 'output_fps']:.2f} for "
            f"the model alone: the threaded pipeline reaches **{share:.0%}** of the model-only rate (serial "
            f"{serial:.0%}): {throughput_verdict(share)}.",
            f"Each mode ran in its own worker process, {timing.attempts} timing(s); load: "
            f"{timing.load.describe() if timing.load else 'not recorded'}.",
            *notes,
        ]
        if timing.noisy:
            lines.insert(0, f"**noisy timing**: after {timing.attempts} timings these checks still failed: "
                         f"{'; '.join(timing.problems)}. The pipeline rates are published flagged, not as clean "
                         "results; rerun on an idle machine.")
        res = run.finish(metrics, headline, {"pipeline_fps": bench[["mode", "output_fps"]]}, lines)
    return InteractiveResult(**{f.name: getattr(res, f.name) for f in fields(StudyResult)}, viewer=viewer,
                             show_widgets=p["show_widgets"])


def controls(res: InteractiveResult) -> Any:
    """The live controls when `show_widgets` is on (opened in JupyterLab/Colab), else a note saying why not."""
    from IPython.display import Markdown

    p = res.metrics["view"]
    if res.viewer is None or not res.show_widgets:
        return Markdown("*Live controls are off in this run (`show_widgets: false`, as headless runs set it: "
                        "notebook executors can hang on widget messages, jupyter/nbclient#312). The saved view "
                        "below is what they would show.*")
    return res.viewer.widgets(triplet=p["triplet"], timestep=p["timestep"], scale=p["scale"])

