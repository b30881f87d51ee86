"""`interpolate_sequence`: one interpolation run from a source to a sink."""

from __future__ import annotations

import logging
import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from rifelab.frames.images import (
    DataError,
    to_uint16,
)
from rifelab.interpolate.pipeline import InterpolationPipeline, OutputFrame
from rifelab.interpolate.schedule import (
    LARGE_OUTPUT_FRAMES,
    MAX_MULTI,
    InterpolateConfig,
    InterpolationSummary,
    as_fraction,
    is_video_path,
)
from rifelab.interpolate.sinks import open_sink
from rifelab.interpolate.sources import (
    FrameSource,
    frame_size,
    open_source,
)
from rifelab.interpolate.stages import ProgressBars, run_stages
from rifelab.rife.contract import Interpolator

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


DEEP_VIDEO_SUFFIXES = (".mp4", ".m4v", ".mkv", ".mov")  # 10-bit HEVC (and 16-bit FFV1 in .mkv)
DEEP_IMAGE_EXTENSIONS = ("png", "tif")


def _check_depth(src: FrameSource, out: Path, config: InterpolateConfig) -> None:
    """Keep a 10/12/16-bit input's depth where the output can hold it; else refuse, or reduce with --allow-8bit."""
    if src.depth <= 8:
        return
    video = is_video_path(out)
    if src.alpha:
        why = "RGBA frames are interpolated at 8 bits"
    elif video and out.suffix.lower() not in DEEP_VIDEO_SUFFIXES:
        why = f"a {out.suffix} video is written at 8 bits"
    elif video and config.lossless and out.suffix.lower() != ".mkv":
        why = "--lossless video keeps more than 8 bits only in .mkv (FFV1)"
    elif not video and config.ext not in DEEP_IMAGE_EXTENSIONS:
        why = f"{config.ext} frames hold 8 bits"
    else:
        src.keep_depth = True
        log.info("%s has %d-bit samples: kept (%s)", src.path or "the input", src.depth,
                 "16-bit frames" if not video else "16-bit FFV1" if out.suffix.lower() == ".mkv" and
                 (src.depth > 10 or config.lossless) else "10-bit HEVC")
        return
    if not config.allow_8bit:
        raise DataError(
            f"{src.path or 'the input'} has {src.depth}-bit samples, but {why}; write PNG or TIFF frames or an "
            f"{'/'.join(DEEP_VIDEO_SUFFIXES)} video to keep {src.depth} bits, or pass --allow-8bit to accept the "
            "reduction to 8 bits"
        )
    log.warning("%s has %d-bit samples; reduced to 8 bits as --allow-8bit allows (%s)", src.path or "the input",
                src.depth, why)


def _keep_metadata(src: FrameSource, out: Path, sink: Any, config: InterpolateConfig) -> None:
    """A video's rotation: tagged on a video output, applied to frames. Its audio: copied into a video output
    when the duration is kept; otherwise the log says why not."""
    video = is_video_path(out)
    if src.rotation:
        if video:
            sink.rotation = src.rotation
        else:
            src.rotate_frames = True
            log.info("%s is displayed rotated by %d degrees: the frames are turned to match", src.path, src.rotation)
    if not src.has_audio:
        return
    natural = src.fps * float(config.frame_ratio(src.fps))
    if not video:
        why = "a folder of frames holds no sound"
    elif config.fps is not None and abs(config.fps - natural) > natural * 1e-3:
        why = (f"--fps {config.fps:g} changes the duration (the input's frames fill it at {natural:g} fps), so the "
               "sound would not match")
    else:
        sink.audio_from = src.path
        return
    log.warning("%s: its audio is not copied: %s", src.path, why)


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
    _check_depth(src, out, config)
    if is_video_path(out):
        summary.output_fps = config.output_fps(src.fps)
        sink = open_sink(out, config, fps=summary.output_fps)
        sink.depth = src.depth if src.keep_depth else 8
    else:
        manifest = {"input": src.describe(), **config.settings(), "model": model_info or {}}
        manifest.update(_extra_settings(src, ratio))
        if src.keep_depth:
            manifest["depth"] = src.depth
        sink = open_sink(out, config, manifest=manifest)
    expected = config.output_count(src.count, src.fps, src.times)
    _keep_metadata(src, out, sink, config)
    if ratio is not None:
        _check_retime(src, ratio, config)
    elif src.times is not None:
        _time_multi_output(src, out, sink, config)
    sink.check()  # refusals come before the announcement of what the run will write
    return src, out, sink, ratio, summary, expected


def _check_retime(src: FrameSource, ratio: Fraction, config: InterpolateConfig) -> None:
    """Refuse a retiming that would make more than MAX_MULTI frames per input pair, or drop input frames unasked."""
    widest = ratio
    if src.times is not None:
        widest = max(b - a for a, b in zip(src.times, src.times[1:])) * as_fraction(src.fps) * ratio
    if widest > MAX_MULTI:
        raise DataError(
            f"this retiming makes up to {float(widest):.0f} output frames per input pair, above the limit of "
            f"{MAX_MULTI} (the same bound as --multi): check --target-fps/--fps-ratio (output rate "
            f"{float(as_fraction(src.fps) * ratio):g} fps from {src.fps:g} fps)"
        )
    if ratio < 1:
        drop = "drops about {:.0%} of the input frames".format(1 - float(ratio))
        if not config.allow_frame_drop:
            raise DataError(f"an output rate below the input's ({float(as_fraction(src.fps) * ratio):g} fps from "
                            f"{src.fps:g} fps) {drop}; pass --allow-frame-drop if that is what you want")
        log.warning("the output rate is below the input's: this run %s (--allow-frame-drop)", drop)


def _time_multi_output(src: FrameSource, out: Path, sink: Any, config: InterpolateConfig) -> None:
    """--multi on a variable-frame-rate video: a video output gets each frame's timestamp; frames say they cannot."""
    times, n = src.times, config.multi - 1
    if is_video_path(out) and config.fps is None:
        def frame_time(index: int) -> Fraction:
            p, k = divmod(index, n)
            return times[p] if p + 1 >= len(times) else times[p] + (times[p + 1] - times[p]) * Fraction(k, n)

        sink.frame_time = frame_time
        log.info("variable frame rate: each output frame is timed between its input frames' timestamps")
        return
    why = "--fps sets a constant rate" if config.fps is not None else "numbered frames carry no timestamps"
    log.warning("%s has a variable frame rate, but %s: the output assumes a constant rate, so its motion is not "
                "evenly timed; use --target-fps F for frames evenly spaced in time, or a video output without --fps",
                src.path, why)


def check_run(source: Any, output: str | os.PathLike, config: InterpolateConfig | None = None,
              model_info: dict[str, Any] | None = None) -> None:
    """Raise the error a run would stop with on its input, options or output, without loading a model or writing."""
    _plan(source, output, config, model_info)


def interpolate_sequence(
    source: str | os.PathLike | FrameSource | np.ndarray,
    output: str | os.PathLike,
    model: Interpolator,
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
    pipe = InterpolationPipeline(model, config, summary, config.output_schedule(src.fps, src.times), sink.has,
                                 (src.count - 1) if src.count else None)
    t0 = time.perf_counter()
    try:
        with ProgressBars(src.count, expected, config.progress) as bars:

            def write(item: OutputFrame) -> None:
                deep = src.keep_depth and isinstance(item.data, torch.Tensor)  # model frames at 16 bits
                sink.write(item.index, to_uint16(item.data)[0] if deep else item.to_array())
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

