"""Throughput of the whole interpolation pipeline against the model alone, each mode in its own worker process."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from rifelab.frames.images import write_image
from rifelab.frames.scenes import SceneThresholds
from rifelab.interpolate.pipeline import InputPair, InterpolationPipeline, _model_device
from rifelab.interpolate.run import interpolate_sequence
from rifelab.interpolate.schedule import InterpolateConfig, InterpolationSummary
from rifelab.interpolate.sinks import output_frame_name
from rifelab.interpolate.sources import ArraySource
from rifelab.measure.harness import Harness, InterleavedTiming, NoiseLimits
from rifelab.measure.profiling import Timing, synchronize
from rifelab.engines.spec import ModelSpec, load_model
from rifelab.rife.contract import Interpolator

log = logging.getLogger(__name__)

__all__ = ["MODES", "PipelineWorkload", "benchmark_pipeline", "pipeline_checks"]

MODES = ("model only", "pipeline (threads)", "pipeline (serial)")
#: the pipeline may time up to this much faster than the model-only rate before the run counts as disturbed
SHARE_TOLERANCE = 1.05


@dataclass
class PipelineWorkload:
    """One mode of the pipeline benchmark, run in a worker: the model alone on in-memory pairs, or the whole
    PNG-folder-to-PNG-folder pipeline with or without its reader/writer threads."""

    spec: ModelSpec
    frames: np.ndarray
    mode: str
    config: InterpolateConfig

    def setup(self) -> dict[str, Any]:
        if self.mode not in MODES:
            raise ValueError(f"unknown pipeline benchmark mode {self.mode!r}; expected one of {MODES}")
        self.model = load_model(self.spec)
        self.device = _model_device(self.model)
        self.root = Path(tempfile.mkdtemp(prefix="rifelab-bench-"))
        if self.mode == "model only":  # the pairs and decisions the pipeline will see, made once
            self.pipe, self.groups = _model_groups(self.model, self.config, self.frames)
            return {"model_pairs": sum(len(g) for g in self.groups)}
        (self.root / "input").mkdir()
        for i, f in enumerate(self.frames):
            write_image(self.root / "input" / output_frame_name(i), f)
        return {}

    def prepare(self, inputs: Any) -> None:
        pass

    def call(self) -> None:
        if self.mode == "model only":
            for g in self.groups:
                self.pipe.compute(g)
        else:
            c = InterpolateConfig(**{**asdict(self.config), "thresholds": self.config.thresholds,
                                     "threaded": self.mode == "pipeline (threads)", "overwrite": True})
            interpolate_sequence(self.root / "input", self.root / "output", self.model, c)
        synchronize(self.device)

    def outputs(self) -> tuple[Any, dict[str, Any]]:
        return None, {}

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _model_groups(model: Interpolator, cfg: InterpolateConfig, frames: np.ndarray
                  ) -> tuple[InterpolationPipeline, list[list[InputPair]]]:
    """The pipeline and the groups of pairs it sends to the model, decided once for the model-only row."""
    pipe = InterpolationPipeline(model, cfg, InterpolationSummary())
    groups: list[list[InputPair]] = []
    for p in pipe.pairs(ArraySource(frames)):
        if p.decision.kind != "interpolate":
            continue
        if not groups or groups[-1][0].index // pipe.group_size != p.index // pipe.group_size:
            groups.append([])
        groups[-1].append(p)
    return pipe, groups


def _row(name: str, timing: Timing, n_out: int) -> dict[str, Any]:
    """One table row: a mode's timing as seconds and output frames per second (median, p10, p90)."""
    return {
        "mode": name,
        "median_s": timing.median,
        "p10_s": timing.p10,
        "p90_s": timing.p90,
        "output_fps": n_out / timing.median,
        "output_fps_p10": n_out / timing.p90,
        "output_fps_p90": n_out / timing.p10,
        "repeats": timing.repeats,
    }


def pipeline_checks(t: InterleavedTiming) -> list[str]:
    """The pipeline makes the model's calls and more, so it cannot run faster than the model alone."""
    if "model only" not in t.timings:
        return []
    model = t.timings["model only"].median
    return [f"{m} timed {model / t.timings[m].median:.2f}x the model-only rate, faster than the model it contains"
            for m in MODES[1:] if m in t.timings and model / t.timings[m].median > SHARE_TOLERANCE]


def benchmark_pipeline(
    spec: ModelSpec,
    frames: np.ndarray,
    multi: int = 4,
    batch_size: int = 4,
    scale: float = 1.0,
    warmup: int = 1,
    repeats: int = 3,
    thresholds: SceneThresholds | None = None,
    limits: NoiseLimits | None = None,
    wrap: Callable[[str, PipelineWorkload], Any] | None = None,
) -> pd.DataFrame:
    """Output frames per second of the model alone vs the whole folder-to-folder pipeline, threaded and serial.

    Same input and same model calls in every row: `frames` (uint8 T,H,W,3). Each mode runs in its own worker process
    with the model of `spec` (rifelab.measure.harness): 'model only' runs the batched model calls on tensors already
    in memory (no decode, decisions, encode or disk); 'pipeline (threads)' and 'pipeline (serial)' run
    `interpolate_sequence` PNG folder to PNG folder with and without the reader/writer threads. After `warmup` runs,
    the modes are timed in turn `repeats` times, checked (spread, outside load, a pipeline no faster than the model
    inside it) and re-measured per `limits`. Returns a DataFrame with one row per mode: `model_share` = model-only
    median / mode median (1.0: the I/O is fully hidden), `worker` (pid), `noisy`; `df.attrs["timing"]` holds the
    harness's timing (load record, failed checks). `wrap(mode, workload)` may replace a mode's workload (tests inject
    a deliberate slowdown with `rifelab.measure.worker.Slowed`).
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"warmup must be >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    thresholds = thresholds if thresholds is not None else SceneThresholds()
    cfg = InterpolateConfig(multi=multi, batch_size=batch_size, scale=scale, thresholds=thresholds, progress=False)
    cfg.validate()
    built = {m: PipelineWorkload(spec, frames, m, cfg) for m in MODES}
    built = {m: wrap(m, w) for m, w in built.items()} if wrap is not None else built
    with Harness.isolated(built) as h:
        if h.stopped:
            raise RuntimeError("the pipeline benchmark could not start: "
                               + "; ".join(f"{m}: {why}" for m, why in h.stopped.items()))
        model_pairs = h.facts["model only"]["model_pairs"]
        t = h.measure_checked(limits or NoiseLimits(), pipeline_checks, warmup=max(warmup, 0), rounds=repeats)
    if t.stopped:
        raise RuntimeError("the pipeline benchmark failed: " + "; ".join(f"{m}: {w}" for m, w in t.stopped.items()))
    n_out = cfg.output_count(len(frames))
    df = pd.DataFrame([{**_row(m, t.timings[m], n_out), "worker": t.workers[m], "noisy": t.noisy} for m in MODES])
    base = df.loc[df["mode"] == "model only", "median_s"].iloc[0]
    df["model_share"] = base / df["median_s"]  # 1.0: I/O fully hidden behind the model
    h_, w_ = frames.shape[1:3]
    df.insert(1, "input_frames", len(frames))
    df.insert(2, "output_frames", n_out)
    df.insert(3, "model_frames", model_pairs * (multi - 2))
    df.insert(4, "resolution", f"{w_}x{h_}")
    df.attrs["timing"] = t
    return df
