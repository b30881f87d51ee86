"""`interpolate_sequence`: one interpolation run from a source to a sink."""

from __future__ import annotations

import argparse
import logging
import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rifelab.engines.backends import model_from_args
from rifelab.frames.images import (
    DataError,
)
from rifelab.interpolate.pipeline import InterpolationPipeline, OutputFrame
from rifelab.interpolate.schedule import (
    LARGE_OUTPUT_FRAMES,
    InterpolateConfig,
    InterpolationSummary,
    as_fraction,
)
from rifelab.interpolate.sinks import _FolderSink, _VideoSink
from rifelab.interpolate.sources import (
    FrameSource,
    frame_size,
    is_video_path,
    open_source,
)
from rifelab.interpolate.stages import ProgressBars, run_stages
from rifelab.measure.profiling import resolve_device

log = logging.getLogger(__name__)


def _warn_if_large(src: FrameSource, frames: int | None, out: Path) -> None:
    """Log the output's frame count and raw size before starting; a warning above LARGE_OUTPUT_FRAMES."""
    if frames is None:
        return
    size = frame_size(src)
    raw = f" of {size[0]}x{size[1]} ({frames * size[0] * size[1] * 3 / 1e9:.2f} GB as raw RGB)" if size else ""
    if frames > LARGE_OUTPUT_FRAMES:
        log.warning("this run writes %d frames%s to %s; stop it (Ctrl-C) if that is not what you meant", frames,
                    raw, out)
    else:
        log.info("writing %d frames%s to %s", frames, raw, out)


def _check_alpha_output(src: FrameSource, out: Path, config: InterpolateConfig) -> None:
    """Refuse an RGBA input whose output cannot store alpha (a video, or jpg frames)."""
    if not src.alpha:
        return
    if is_video_path(out):
        raise DataError(f"{src.path or 'the input'} has an alpha channel; write RGBA frames to a folder "
                        "(--ext png, tif or webp) instead of a video")
    if config.ext == "jpg":
        raise DataError("the input has an alpha channel, which jpg cannot store; use --ext png, tif or webp")


def _extra_settings(src: FrameSource, ratio: Fraction | None) -> dict[str, Any]:
    """Manifest entries of retimed or RGBA runs (absent otherwise, so older manifests still resume)."""
    extra: dict[str, Any] = {}
    if ratio is not None:
        extra["retime"] = {"ratio": str(ratio), "input_fps": str(as_fraction(src.fps))}
    if src.alpha:
        extra["alpha"] = True
    return extra


def _plan(source: Any, output: str | os.PathLike, config: InterpolateConfig | None,
          model_info: dict[str, Any] | None
          ) -> tuple[FrameSource, Path, Any, Fraction | None, InterpolationSummary, int | None]:
    """(source, output path, sink, retime ratio, summary, expected frames) of a run, checked; nothing written."""
    config = config or InterpolateConfig()
    config.validate()
    src = open_source(source, config.input_fps, allow_damaged=config.allow_damaged_input)
    out = Path(output)
    if src.path is not None and out.resolve() == src.path.resolve():
        raise DataError(f"the output {out} is the input; choose another folder or file")
    summary = InterpolationSummary(output=str(out))
    ratio = config.retime_ratio(src.fps)
    _check_alpha_output(src, out, config)
    if is_video_path(out):
        summary.output_fps = config.output_fps(src.fps)
        sink: Any = _VideoSink(out, summary.output_fps, config)
    else:
        manifest = {"input": src.describe(), **config.settings(), "model": model_info or {}}
        manifest.update(_extra_settings(src, ratio))
        sink = _FolderSink(out, config, manifest)
    expected = config.output_count(src.count, src.fps)
    sink.check()  # refusals come before the announcement of what the run will write
    return src, out, sink, ratio, summary, expected


def check_run(source: Any, output: str | os.PathLike, config: InterpolateConfig | None = None,
              model_info: dict[str, Any] | None = None) -> None:
    """Raise the error a run would stop with on its input, options or output, without loading a model or writing."""
    _plan(source, output, config, model_info)


def interpolate_sequence(
    source: str | os.PathLike | FrameSource | np.ndarray,
    output: str | os.PathLike,
    model: Any,
    config: InterpolateConfig | None = None,
    on_frame: Callable[[int, str], None] | None = None,
    model_info: dict[str, Any] | None = None,
) -> InterpolationSummary:
    """Interpolate a folder of frames, a video or an array into a folder of frames or a video (by `output`'s suffix).

    `model` is anything with `.interpolate(img0, img1, timestep, scale, ensemble)`. `on_frame(index, kind)`
    is called after each frame is written (kind: original, model, static, cut). `model_info` (checkpoint,
    dtype...) joins the settings a resumed run must match. Returns the counts of the run.
    """
    config = config or InterpolateConfig()
    src, out, sink, ratio, summary, expected = _plan(source, output, config, model_info)
    _warn_if_large(src, expected, out)
    sink.prepare()
    summary.removed_temp_files = len(sink.removed_temps)
    summary.recomputed_frames = len(getattr(sink, "recomputed", ()))
    pipe = InterpolationPipeline(model, config, summary, config.output_schedule(src.fps), sink.has,
                                 (src.count - 1) if src.count else None)
    t0 = time.perf_counter()
    try:
        with ProgressBars(src.count, expected, config.progress) as bars:

            def write(item: OutputFrame) -> None:
                sink.write(item.index, item.to_array())
                summary.written_frames += 1
                bars.write.update(1)
                if on_frame is not None:
                    on_frame(item.index, item.kind)

            run_stages(pipe, src, write, config, bars)
            summary.seconds = time.perf_counter() - t0
            for damage in getattr(src, "damage", ()):
                summary.damaged_input = damage.describe()
                summary.lost_input_frames = list(damage.lost)
            sink.finish(summary)
    except BaseException:
        sink.abort()
        raise
    log.debug("interpolate: %s", summary.describe().replace("\n", "; "))
    return summary


def load_interpolation_model(args: argparse.Namespace) -> Any:
    """The model the CLI runs: `--backend` (rifelab.backends) with the engine switches, on `--device`."""
    return model_from_args(args, resolve_device(getattr(args, "device", "auto")))
