"""Throughput of the whole interpolation pipeline against the model alone."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from rifelab.frames.images import (
    write_image,
)
from rifelab.frames.scenes import SceneThresholds
from rifelab.interpolate.pipeline import InputPair, InterpolationPipeline, _model_device
from rifelab.interpolate.run import interpolate_sequence
from rifelab.interpolate.schedule import InterpolateConfig, InterpolationSummary
from rifelab.interpolate.sinks import output_frame_name
from rifelab.interpolate.sources import ArraySource
from rifelab.measure.profiling import Timing, synchronize

log = logging.getLogger(__name__)


def benchmark_pipeline(
    model: Any,
    frames: np.ndarray,
    multi: int = 4,
    batch_size: int = 4,
    scale: float = 1.0,
    warmup: int = 1,
    repeats: int = 3,
    workdir: str | os.PathLike | None = None,
    thresholds: SceneThresholds | None = None,
) -> pd.DataFrame:
    """Output frames per second of the model alone vs the whole folder-to-folder pipeline, threaded and serial.

    Same input and same model calls in every row: `frames` (uint8 T,H,W,3) are written as PNGs once;
    'model only' runs the batched model calls on tensors already in memory (no decode, decisions,
    encode or disk); 'pipeline (threads)' and 'pipeline (serial)' run `interpolate_sequence` PNG folder
    to PNG folder with and without the reader/writer threads. After `warmup` runs of each mode, the
    modes are timed in turn `repeats` times (interleaved, device synchronised), and summarised as
    rifelab.profiling.Timing (median, p10/p90). Returns a DataFrame with one row per mode;
    `model_share` = model-only median / mode median (1.0: the I/O is fully hidden).
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"warmup must be >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    thresholds = thresholds if thresholds is not None else SceneThresholds()
    device = _model_device(model)
    cfg = InterpolateConfig(multi=multi, batch_size=batch_size, scale=scale, thresholds=thresholds, progress=False)
    cfg.validate()
    n_out = cfg.output_count(len(frames))
    with contextlib.ExitStack() as stack:
        root = Path(workdir) if workdir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        inp = root / "input"
        inp.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(frames):
            write_image(inp / output_frame_name(i), f)
        pipe, groups = _model_groups(model, cfg, frames)

        def model_only() -> None:
            for g in groups:
                pipe.compute(g)

        def run(threaded: bool) -> Callable[[], None]:
            def go() -> None:
                c = InterpolateConfig(**{**asdict(cfg), "thresholds": thresholds, "threaded": threaded,
                                         "overwrite": True})
                interpolate_sequence(inp, root / "output", model, c)

            return go

        modes = (("model only", model_only), ("pipeline (threads)", run(True)), ("pipeline (serial)", run(False)))
        samples = _time_modes(modes, warmup, repeats, device)
    df = pd.DataFrame([_row(name, Timing.from_samples(samples[name], warmup=warmup), n_out) for name, _ in modes])
    base = df.loc[df["mode"] == "model only", "median_s"].iloc[0]
    df["model_share"] = base / df["median_s"]  # 1.0: I/O fully hidden behind the model
    h, w = frames.shape[1:3]
    df.insert(1, "input_frames", len(frames))
    df.insert(2, "output_frames", n_out)
    df.insert(3, "model_frames", sum(len(g) for g in groups) * (multi - 2))
    df.insert(4, "resolution", f"{w}x{h}")
    return df


def _model_groups(model: Any, cfg: InterpolateConfig, frames: np.ndarray
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


def _time_modes(modes: Sequence[tuple[str, Callable[[], None]]], warmup: int, repeats: int,
                device: Any) -> dict[str, list[float]]:
    """Seconds of each mode's runs: `warmup` untimed runs each, then `repeats` timed runs, interleaved."""
    for _, fn in modes:
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name, _ in modes}
    for _ in range(repeats):  # interleaved, so a change in machine load hits every mode alike
        for name, fn in modes:
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            samples[name].append(time.perf_counter() - t0)
    return samples


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
