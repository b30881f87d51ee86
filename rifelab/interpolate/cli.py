"""`rifelab interpolate` and `rifelab batch`: the command line (options, and building configs and specs from them)."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rifelab.engines.cli import add_backend_options, add_model_options, add_scale_option
from rifelab.engines.spec import ModelSpec, load_model
from rifelab.frames.images import DataError
from rifelab.frames.scenes import SceneThresholds
from rifelab.interpolate.batch import (
    VIDEO_OUTPUT_EXTENSIONS,
    collect_inputs,
    plan_items,
    results_table,
    run_batch,
)
from rifelab.interpolate.bench import benchmark_pipeline
from rifelab.interpolate.run import check_run, interpolate_sequence
from rifelab.interpolate.schedule import (
    DEFAULT_INPUT_FPS,
    OUTPUT_IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    InterpolateConfig,
    counted,
    is_video_path,
)
from rifelab.interpolate.sinks import read_manifest
from rifelab.interpolate.sources import open_source
from rifelab.publish.results import atomic_write_text, to_markdown
from rifelab.rife.checkpoints import checkpoint_layout
from rifelab.rife.contract import Interpolator

log = logging.getLogger(__name__)


def _threshold(text: str) -> float | None:
    """argparse type of the scene thresholds: a number in [0, 1], or off."""
    if str(text).lower() in ("off", "none", "no"):
        return None
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] or 'off', got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] or 'off', got {text!r}")
    return v


RECURSIVE_HELP = (
    "bisection mode: build the inserted frames level by level from their two nearest already-made frames "
    "(the middle frame from the originals, then the quarter frames from it, ...), instead of each from the "
    "two originals. When N-1 is a power of two (--multi 3, 5, 9, 17) every frame is made at t=0.5. Otherwise "
    "an interval spanning n steps is split at step n//2 with local timestep (n//2)/n, so some frames are "
    "made at t other than 0.5 (--multi 4: the frame at 1/3 from the originals at t=1/3, then the frame at 2/3 "
    "at t=1/2); output times stay evenly spaced at i/(N-1) either way"
)


def _add_scene_options(p: argparse.ArgumentParser) -> None:
    """Options deciding static pairs and scene cuts (duplicated instead of interpolated)."""
    g = p.add_argument_group("static frames and scene cuts (duplicated instead of interpolated)")
    g.add_argument("--static-ssim", type=_threshold, default=0.996, metavar="X",
                   help="a pair with SSIM >= X is static: its inserted frames repeat the nearest original "
                   "(default 0.996; 'off' to always interpolate)")
    g.add_argument("--cut-ssim", type=_threshold, default=0.2, metavar="X",
                   help="a pair with SSIM < X is a scene cut: inserted frames repeat the nearest original instead of "
                   "morphing across the cut (default 0.2; 'off' disables)")
    g.add_argument("--cut-hist", type=_threshold, default=0.4, metavar="X",
                   help="a pair whose colour histograms differ by more than X (total variation distance 0..1) is a "
                   "scene cut too (default 0.4; 'off' disables)")


def _add_retime_options(p: argparse.ArgumentParser) -> None:
    """Options setting the output frame rate instead of --multi."""
    g = p.add_argument_group("frame-rate retiming (instead of --multi)")
    g.add_argument("--target-fps", type=float, default=None, metavar="F",
                   help="make output frames at times k/F (e.g. 60 for a 24 fps input): each is interpolated from the "
                   "two input frames around it at its own t, or copied when it falls on an input frame; "
                   "floor((T-1) x F / input fps) + 1 frames, none duplicated or dropped. Replaces --multi")
    g.add_argument("--allow-frame-drop", action="store_true",
                   help="accept an output rate below the input's (--target-fps 12 on a 25 fps input skips input "
                   "frames); refused without it. The retiming ratio is bounded like --multi: at most "
                   "256 output frames per input pair")
    g.add_argument("--fps-ratio", default=None, metavar="R",
                   help="output rate = input rate x R, as a fraction or decimal (5/2 turns 24 fps into 60, 6/5 "
                   "turns 25 into 30); same frames as --target-fps")


def _add_output_options(p: argparse.ArgumentParser) -> None:
    """Options of the output: format, frame rate, quality, resume/overwrite, damaged or deep input."""
    g = p.add_argument_group("output")
    g.add_argument("--ext", default="png", choices=list(OUTPUT_IMAGE_EXTENSIONS),
                   help="image format of a folder output (default png, lossless; jpg re-encodes originals lossily)")
    g.add_argument("--fps", type=float, default=None,
                   help="frame rate of a video output (default: input rate x (N-1), same duration; give the input "
                   "rate for slow motion)")
    g.add_argument("--input-fps", type=float, default=None,
                   help=f"frame rate of a folder input (default {DEFAULT_INPUT_FPS:g}) or override of a video's")
    g.add_argument("--crf", type=int, default=18, help="video quality, 0 best .. 51 worst (default 18)")
    g.add_argument("--lossless", action="store_true", help="lossless RGB video (libx264rgb, crf 0): exact frames")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted run into the same output folder: keep its complete frames, remove "
                   "stale temporary files, compute the rest (the options must match the first run)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the frames an earlier run recorded in OUTPUT's manifest, or a video rifelab wrote (its "
                   "record .NAME.rifelab.json beside it still matches); a non-empty output is refused otherwise, and "
                   "so is any file rifelab did not write")
    g.add_argument("--allow-damaged-input", action="store_true",
                   help="continue with the frames a damaged input video decodes, reporting the lost ones (by default "
                   "decode errors and frames missing from the container's count stop the run)")
    g.add_argument("--allow-8bit", action="store_true",
                   help="accept writing a 10-, 12- or 16-bit input (10-bit video, 16-bit PNG/TIFF) at 8 bits where the "
                   "output cannot hold its depth (jpg/bmp/webp frames, .webm/.avi video, RGBA); without it such a run "
                   "is refused. PNG/TIFF frames and .mp4/.mkv/.mov video keep the depth (16-bit frames; 10-bit HEVC, "
                   "or 16-bit FFV1 in .mkv)")


def add_interpolate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `interpolate` subcommand to `rifelab`'s subparsers; returns its parser."""
    p = subparsers.add_parser(
        "interpolate",
        help="insert frames between every pair of an image folder or a video",
        description=(
            "Insert N-2 frames between every pair of consecutive frames of INPUT (a folder of numbered frames, "
            "sorted numerically, or a video file) and write OUTPUT (a folder of numbered frames 00000000.png, ... "
            "or a video file when OUTPUT ends in " + ", ".join(VIDEO_EXTENSIONS) + "). T input frames give "
            "(N-1)(T-1)+1 output frames; originals are written unchanged. A reader thread, the model and a "
            "writer thread run concurrently. Static pairs and scene cuts are duplicated instead of interpolated."
        ),
        epilog="example: rifelab interpolate frames/ out/ --multi 4   |   rifelab interpolate clip.mp4 clip_x2.mp4",
    )
    p.add_argument("input", help="folder of numbered frames (png/jpg/tif/bmp/webp) or a video file")
    p.add_argument("output", nargs="?", default=None,
                   help="output folder (frames) or video file (.mp4, .mkv, .mov, .avi, .webm); not needed with --benchmark")
    g = p.add_argument_group("interpolation")
    g.add_argument("--multi", type=int, default=None, metavar="N",
                   help="frames per input pair including both originals: 2 only copies, 3 (default) inserts 1 "
                   "(doubles the frame rate), N inserts N-2 at t = 1/(N-1), ..., (N-2)/(N-1)")
    g.add_argument("--recursive", action="store_true", help=RECURSIVE_HELP)
    add_scale_option(g, default=None, note="; 0.5 with --uhd")
    g.add_argument("--uhd", action="store_true", help="4K input: sets --scale 0.5 unless --scale is given")
    g.add_argument("--ensemble", action="store_true",
                   help="average the flow with that of the swapped pair (slower, slightly smoother)")
    _add_scene_options(p)
    _add_retime_options(p)
    _add_output_options(p)
    g = p.add_argument_group("model and pipeline")
    add_model_options(g)
    g.add_argument("--batch-size", type=int, default=4, help="frames per model call at most (default 4)")
    g.add_argument("--queue-size", type=int, default=8,
                   help="pairs buffered between reader and model (default 8); bounds memory on long inputs")
    g.add_argument("--serial", action="store_true", help="run reader, model and writer in one thread (debugging)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--benchmark", action="store_true",
                   help="instead of writing OUTPUT, time the model alone vs the whole pipeline on INPUT's frames "
                   "and print output frames per second of each")
    g.add_argument("--repeats", type=int, default=3, help="timed repeats of --benchmark (default 3)")
    add_backend_options(p)  # --backend, --dtype and the PyTorch engine's switches
    p.set_defaults(func=_cmd_interpolate)
    return p


def load_interpolation_model(args: argparse.Namespace) -> Interpolator:
    """The model `interpolate` (and `batch` without Ray) runs: `ModelSpec.from_args` then `load_model`."""
    return load_model(ModelSpec.from_args(args))


def config_from_args(args: argparse.Namespace) -> InterpolateConfig:
    """InterpolateConfig from the parsed `interpolate` options (validated)."""
    scale = args.scale if args.scale is not None else (0.5 if args.uhd else 1.0)
    cfg = InterpolateConfig(
        multi=3 if args.multi is None else args.multi, recursive=args.recursive, scale=scale, ensemble=args.ensemble,
        thresholds=SceneThresholds(args.static_ssim, args.cut_ssim, args.cut_hist),
        batch_size=args.batch_size, queue_size=args.queue_size, ext=args.ext, input_fps=args.input_fps,
        fps=args.fps, crf=args.crf, lossless=args.lossless, resume=args.resume, overwrite=args.overwrite,
        threaded=not args.serial, progress=not args.no_progress, allow_damaged_input=args.allow_damaged_input,
    )
    cfg.allow_8bit = getattr(args, "allow_8bit", False)
    cfg.target_fps, cfg.fps_ratio = getattr(args, "target_fps", None), getattr(args, "fps_ratio", None)
    if cfg.retiming and args.multi is not None:
        raise ValueError(f"--multi {args.multi} and --target-fps/--fps-ratio both set how many frames are made; pass "
                         "one (retiming places each output frame at its own time)")
    cfg.allow_frame_drop = getattr(args, "allow_frame_drop", False)
    cfg.validate()
    lay = checkpoint_layout(getattr(args, "checkpoint", None)) if cfg.ensemble else None
    if lay is not None and not lay.ensemble:
        raise ValueError(f"--ensemble is not supported by RIFE {lay.name} (its reference network has no ensemble "
                         "mode, like every version from 4.21 on); run without --ensemble")
    return cfg


def _cmd_interpolate(args: argparse.Namespace) -> int:
    """`rifelab interpolate`: run (or --benchmark) and print the summary; a stop is one line and an exit code."""
    cfg = config_from_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.benchmark:
        if args.repeats < 1:
            raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
        src = open_source(args.input, cfg.input_fps)
        frames = np.stack(list(src))
        df = benchmark_pipeline(ModelSpec.from_args(args), frames, multi=cfg.multi, batch_size=cfg.batch_size,
                                scale=cfg.scale, repeats=args.repeats, thresholds=cfg.thresholds)
        t = df.attrs["timing"]

        print(to_markdown(df, floatfmt=".3f"))
        print(f"# each mode in its own worker process; load: {t.load.describe() if t.load else 'not recorded'}")
        if t.noisy:
            print("# NOISY: these checks still failed, so the numbers above are not clean: " + "; ".join(t.problems))
        return 0
    if args.output is None:
        raise ValueError("give an OUTPUT folder or video file (or --benchmark)")
    spec = ModelSpec.from_args(args)
    check_run(args.input, args.output, cfg, model_info=spec.model_info())  # refusals before the model loads (seconds)
    try:
        model = load_interpolation_model(args)
        summary = interpolate_sequence(args.input, args.output, model, cfg, model_info=spec.model_info())
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (rifelab.cli turns it into KeyboardInterrupt('SIGTERM'))
        if getattr(args, "verbose", 0) >= 2:
            raise
        print(stopped_message(args, f"stopped by {exc.args[0] if exc.args else 'Ctrl-C'}"), file=sys.stderr)
        return 143 if exc.args and exc.args[0] == "SIGTERM" else 130
    except OSError as exc:  # full disk, read-only folder, no permission...
        if getattr(args, "verbose", 0) >= 2 or exc.errno is None or isinstance(exc, FileNotFoundError):
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(stopped_message(args, f"{os.strerror(exc.errno)}{where}"), file=sys.stderr)
        return 1
    print(summary.describe())
    return 0


def stopped_message(args: argparse.Namespace, what: str) -> str:
    """One line for a run that stopped early: what happened, what was kept, the command that continues it."""
    out = Path(args.output)
    argv = [a for a in getattr(args, "argv", None) or _rebuild_argv(args) if not _is_flag(a, "--resume")]
    if is_video_path(out):
        kept = f"the unfinished video was removed ({out} is as it was before)"
        again = shlex.join(["rifelab", *argv])
        return f"rifelab interpolate: {what}; {kept}; once fixed, run again: {again}"
    argv = [a for a in argv if not _is_flag(a, "--overwrite")]
    try:
        manifest = read_manifest(out)
    except DataError:
        manifest = None
    done = sum((out / n).is_file() for n in manifest["frames"]) if manifest else 0
    kept = f"{counted(done, 'complete frame')} kept in {out}" if done else f"no frames written to {out}"
    again = shlex.join(["rifelab", *argv, "--resume"])
    return f"rifelab interpolate: {what}; {kept}; once fixed, continue with: {again}"


def _is_flag(arg: str, flag: str) -> bool:
    """Whether a command-line word is `flag` or an abbreviation argparse accepts for it."""
    return len(arg) > 3 and flag.startswith(arg)


def _rebuild_argv(args: argparse.Namespace) -> list[str]:
    """The essential arguments of an `interpolate` call when the original command line is not known."""
    argv = ["interpolate", str(args.input), str(args.output), "--multi", str(args.multi or 3)]
    return argv + (["--recursive"] if args.recursive else [])


# interpolate options that do not apply to a batch (each item has its own output; reruns resume by themselves)
_NOT_COPIED = {"help", "input", "output", "benchmark", "repeats", "resume"}


# ----------------------------------------------------------------------------- rifelab batch


def add_batch_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `batch` subcommand (its own options plus every `interpolate` option that applies)."""
    p = subparsers.add_parser(
        "batch",
        help="interpolate many videos or frame folders into one output root, on Ray workers",
        description=(
            "Interpolate every INPUT (video or folder of numbered frames; paths, quoted glob patterns or --manifest) "
            "into OUTPUT_ROOT/NAME, NAME being a video's stem or a folder's name. Items are spread over Ray actors, "
            "one per GPU of the cluster (--ray-address) or --workers CPU actors on a local Ray started for the run; "
            "each actor loads the model once. Without Ray the items run in this process. Each item is written "
            "atomically; a rerun skips finished items, resumes partial ones (as `interpolate --resume`) and "
            "redoes the rest; a failing item is reported without stopping the others (exit status 1). "
            "The interpolation options are those of `rifelab interpolate`."
        ),
        epilog="example: rifelab batch 'clips/*.mp4' shots/ -o out/ --workers 2   |   "
               "rifelab batch --manifest list.txt -o out/ --ray-address auto --fps-ratio 5/2",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="videos or frame folders; quote glob patterns ('clips/*.mp4') to let rifelab expand them")
    g = p.add_argument_group("batch")
    g.add_argument("-o", "--output-root", required=True, metavar="DIR",
                   help="folder receiving one output per input (created if missing)")
    g.add_argument("--manifest", default=None, metavar="FILE",
                   help="text file with one input path or glob per line ('#' starts a comment; relative paths are "
                   "relative to the file), added to the INPUTs")
    g.add_argument("--video-ext", default=None, choices=list(VIDEO_OUTPUT_EXTENSIONS),
                   help="write each item as a video OUTPUT_ROOT/NAME.EXT instead of a folder of frames (a video "
                   "cannot be resumed: an interrupted one is redone)")
    g.add_argument("--summary", default=None, metavar="CSV",
                   help="also save the summary table (item, frames in/out, seconds, fps, device, status, worker, "
                   "error) as CSV")
    g = p.add_argument_group("Ray")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="address of a running Ray cluster ('auto', or ray://host:10001); default: start a local Ray "
                   "for this run and stop it afterwards")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="number of model actors (default: one per GPU of the cluster, or 1 on CPU); each holds "
                   "one loaded model and runs --threads torch threads (default on a local Ray: this machine's "
                   "cores divided among the workers; on a cluster: 1)")
    g.add_argument("--no-ray", action="store_true",
                   help="run the items one after another in this process, even when Ray is installed")
    template = add_interpolate_parser(argparse.ArgumentParser(add_help=False).add_subparsers())
    for group in template._action_groups:  # same options as `interpolate`, with their help
        actions = [a for a in group._group_actions if a.dest not in _NOT_COPIED]
        if actions:
            target = p.add_argument_group(f"{group.title} (as in `rifelab interpolate`)")
            for action in actions:
                target._add_action(action)
    p.set_defaults(func=_cmd_batch, resume=False, benchmark=False, repeats=1, output=None, input=None)
    return p


def _cmd_batch(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be an integer >= 1, got {args.workers}")
    items = plan_items(collect_inputs(args.inputs, args.manifest, exclude=args.output_root), args.output_root,
                       args.video_ext)
    spec = ModelSpec.from_args(args)
    results = run_batch(items, cfg, spec, spec.model_info(), use_ray=not args.no_ray, ray_address=args.ray_address,
                        workers=args.workers, threads=args.threads, progress=not args.no_progress)
    df = results_table(results)
    shown = df.drop(columns=["worker", "error"])
    print(to_markdown(shown, floatfmt=".2f"))
    for r in results:
        if r.status == "failed":
            print(f"{r.item}: {r.error}", file=sys.stderr)
    if args.summary:
        atomic_write_text(args.summary, df.to_csv(index=False))
    counts = df["status"].value_counts().to_dict()
    print(", ".join(f"{v} {k}" for k, v in counts.items()) + f" of {len(results)} items -> {args.output_root}")
    return 1 if counts.get("failed") else 0
