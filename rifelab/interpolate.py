"""Insert frames between every pair of a numbered image folder or a video: `rifelab interpolate`.

    from rifelab.interpolate import InterpolateConfig, interpolate_sequence
    summary = interpolate_sequence("frames/", "out/", load_rife(), InterpolateConfig(multi=4))

Works with any model object that has `.interpolate(img0, img1, timestep, scale, ensemble)` on
(N,3,H,W) float tensors in [0, 1] (rifelab.models.RIFE, rifelab.engine.Engine).

Timesteps. `multi` N is the number of frames per input pair including both originals, so N-2
frames are inserted and a sequence of T frames becomes (N-1)(T-1)+1 frames. Output frame
p*(N-1)+i is the frame at time i/(N-1) between input frames p and p+1.

- Direct mode (default): every inserted frame comes straight from the two originals at its own
  timestep i/(N-1), several per model call (per-sample timestep tensors).
- Recursive mode (`recursive=True`, bisection): an interval that spans n output steps is split at
  its middle step m = n // 2; the frame there is made from the interval's two end frames at local
  timestep m/n, then both halves are split the same way, level by level, with already
  interpolated (unrounded) frames as inputs. When N-1 is a power of two every split is at
  t = 0.5: plain bisection, as if the frame rate were doubled repeatedly. When N-1 is not a power
  of two the halves are unequal and some frames are made at a local timestep other than 0.5
  (N=4: the frame at 1/3 from the originals at t=1/3, then the frame at 2/3 from that frame and
  the second original at t=1/2). Either way the output times stay evenly spaced at i/(N-1).

Pair decisions (made in the reader thread, before the model): a pair whose SSIM is at least
`static_ssim` is static, and a pair whose SSIM is below `cut_ssim` or whose colour histograms
differ by more than `cut_hist` (total variation distance) is a scene cut (rifelab.scenes, the one
detector). Neither is sent to the model: each inserted frame repeats the original nearest in time
(t < 0.5: the first, otherwise the second), so a cut stays a cut instead of a morph.

Pipeline: a reader thread (decode, pair decisions) -> the model (this thread) -> a writer
thread (uint8 conversion, encode, atomic write), joined by bounded queues, so memory stays
bounded on long inputs. Folder outputs are written frame by frame to a temporary name and
renamed, so an interrupted run leaves only complete frames; `resume=True` keeps them and
computes the rest, giving the same files as one uninterrupted run (pairs are batched in fixed
groups, so every model call sees the same batch either way). A non-empty output is refused
unless `resume` or `overwrite` is given. Video outputs (PyAV) are encoded to a temporary file
and renamed when complete; temporaries a killed run left behind are removed by the next run
into the same place (and reported).

The manifest (`.rifelab-interpolate.json` in a folder output) is the one record of what rifelab
wrote there: the settings, and the name and sha256 of every frame, recorded (in its append-only
journal, folded in when the run ends) before the frame is renamed into place. `overwrite` removes
only the files it lists; `resume` keeps a frame only when its checksum still matches and computes
truncated, empty or replaced ones again; a file the manifest does not list is never touched: the
run is refused, naming it. A damaged input video (decode errors, or fewer frames than the
container states) stops the run unless `allow_damaged_input` is set, which reports the lost frames.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import queue
import re
import shlex
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import av
import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from .backends import add_backend_options, model_from_args
from .data import (
    IMAGE_EXTENSIONS,
    DataError,
    VideoDamage,
    clip_info,
    encode_image,
    image_has_alpha,
    list_frames,
    read_image,
    read_image_rgba,
    read_video,
    to_tensor,
    to_uint8,
    write_image,
)
from .models import check_scale
from .profiling import Timing, resolve_device, synchronize
from .scenes import PairDecision, SceneThresholds, decide_pair
from .results import atomic_path, atomic_write_text, temp_path_beside, to_markdown

log = logging.getLogger(__name__)

__all__ = [
    "VIDEO_EXTENSIONS",
    "OUTPUT_IMAGE_EXTENSIONS",
    "Step",
    "Schedule",
    "make_schedule",
    "decide_pair",
    "InterpolateConfig",
    "InterpolationSummary",
    "FrameSource",
    "FolderSource",
    "VideoSource",
    "ArraySource",
    "open_source",
    "interpolate_sequence",
    "output_frame_name",
    "parse_ratio",
    "retime_count",
    "retime_positions",
    "benchmark_pipeline",
    "load_interpolation_model",
    "add_interpolate_parser",
]

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")
OUTPUT_IMAGE_EXTENSIONS = ("png", "jpg", "tif", "bmp", "webp")
MANIFEST_NAME = ".rifelab-interpolate.json"
JOURNAL_NAME = ".rifelab-interpolate.journal"  # the manifest's append-only part while a run writes frames
MAX_MULTI = 256  # frames per pair: beyond this a run is almost surely a typo (1000 on 8x8 frames)
LARGE_OUTPUT_FRAMES = 10_000  # warn before writing more frames than this
FRAME_DIGITS = 8
DEFAULT_INPUT_FPS = 25.0

# ----------------------------------------------------------------------------- timestep schedules


@dataclass(frozen=True)
class Step:
    """One model call within a pair: the frame at slot `target` from slots `left` and `right` at local time `t`.

    Slots number the frames of a pair: 0 is the first original, N-1 the second.
    """

    left: int
    right: int
    target: int
    t: float


@dataclass(frozen=True)
class Schedule:
    """The model calls that fill the N-2 inner slots of a pair, grouped in levels (a level needs only earlier ones)."""

    multi: int
    recursive: bool
    levels: tuple[tuple[Step, ...], ...]

    @property
    def times(self) -> tuple[float, ...]:
        """Time of every slot, 0 .. 1 (N values)."""
        return tuple(i / (self.multi - 1) for i in range(self.multi))

    @property
    def inserted(self) -> int:
        """Frames inserted per pair."""
        return self.multi - 2

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(s for level in self.levels for s in level)


def _check_multi(multi: int) -> int:
    if isinstance(multi, bool) or not isinstance(multi, (int, np.integer)) or multi < 2:
        raise ValueError(
            f"--multi must be an integer >= 2 (frames per input pair including both originals: 2 only copies "
            f"the input, 3 inserts 1 frame, N inserts N-2), got {multi!r}"
        )
    if multi > MAX_MULTI:
        raise ValueError(
            f"--multi {multi} is above the limit of {MAX_MULTI} frames per input pair: every pair would become "
            f"{multi - 1} output frames. For slow motion give the factor you need (e.g. --multi 9 for 8x); for "
            f"more than {MAX_MULTI - 1}x, interpolate the output again"
        )
    return int(multi)


def make_schedule(multi: int, recursive: bool = False) -> Schedule:
    """Model calls for `multi` frames per pair: direct (each frame from the originals) or recursive bisection.

    Recursive: an interval spanning n steps is split at m = n // 2 with local timestep m/n, then each
    half is split again; all splits are at t = 0.5 only when multi-1 is a power of two (see module doc).
    """
    n = _check_multi(multi)
    if not recursive:
        level = tuple(Step(0, n - 1, i, i / (n - 1)) for i in range(1, n - 1))
        return Schedule(n, False, (level,) if level else ())
    by_depth: dict[int, list[Step]] = {}

    def split(lo: int, hi: int, depth: int) -> None:
        span = hi - lo
        if span < 2:
            return
        mid = lo + span // 2
        by_depth.setdefault(depth, []).append(Step(lo, hi, mid, (mid - lo) / span))
        split(lo, mid, depth + 1)
        split(mid, hi, depth + 1)

    split(0, n - 1, 0)
    levels = tuple(tuple(sorted(by_depth[d], key=lambda s: s.target)) for d in sorted(by_depth))
    return Schedule(n, True, levels)


# ----------------------------------------------------------------------------- configuration and summary


@dataclass
class InterpolateConfig:
    """Every option of a run (the CLI maps its flags onto these fields)."""

    multi: int = 3
    recursive: bool = False
    scale: float = 1.0
    ensemble: bool = False
    thresholds: SceneThresholds = field(default_factory=SceneThresholds)
    batch_size: int = 4  # frames per model call at most
    queue_size: int = 8  # pairs waiting for the model; the writer queue holds queue_size*(multi-1) frames
    ext: str = "png"  # image format of a folder output
    input_fps: float | None = None  # frame rate of a folder input (default 25) or override of a video's
    fps: float | None = None  # output video frame rate (default: input rate x (multi-1), same duration)
    crf: int = 18  # x264/VP9 quality of a video output (0 = best, 51 = worst)
    lossless: bool = False  # video output in lossless RGB (libx264rgb, crf 0)
    resume: bool = False
    overwrite: bool = False
    allow_damaged_input: bool = False  # continue with the frames a damaged video decodes (the lost ones reported)
    threaded: bool = True  # reader and writer threads; False runs all stages in one thread
    progress: bool = True
    target_fps: float | None = None  # retiming: output frames at times k / target_fps (replaces multi)
    fps_ratio: Fraction | str | float | None = None  # retiming: output rate = input rate x ratio, e.g. "5/2"

    def validate(self) -> None:
        """Raise ValueError naming the bad option and its allowed values."""
        self._validate_retime()
        _check_multi(self.multi)
        try:
            self.scale = check_scale(self.scale)
        except ValueError as exc:
            raise ValueError(f"--scale: {exc}") from None
        self.thresholds.validate()
        for name, lo in (("batch_size", 1), ("queue_size", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= {lo}, got {v!r}")
        ext = str(self.ext).lower().lstrip(".")
        ext = {"jpeg": "jpg", "tiff": "tif"}.get(ext, ext)
        if ext not in OUTPUT_IMAGE_EXTENSIONS:
            raise ValueError(f"--ext must be one of {', '.join(OUTPUT_IMAGE_EXTENSIONS)}, got {self.ext!r}")
        self.ext = ext
        for name in ("input_fps", "fps"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ValueError(f"--{name.replace('_', '-')} must be a positive number of frames per second, got {v!r}")
        if not (isinstance(self.crf, (int, np.integer)) and 0 <= self.crf <= 63):
            raise ValueError(f"--crf must be an integer in 0..51 (x264) or 0..63 (VP9), got {self.crf!r}")
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite contradict each other: resume keeps the frames already "
                             "written, overwrite deletes them; pass one")

    def _validate_retime(self) -> None:
        if self.target_fps is not None and self.fps_ratio is not None:
            raise ValueError("--target-fps and --fps-ratio both set the output frame rate; pass one")
        if self.target_fps is not None:
            v = self.target_fps
            if isinstance(v, bool) or not isinstance(v, (int, float, Fraction)) or not (np.isfinite(v) and v > 0):
                raise ValueError(f"--target-fps must be a positive number of frames per second, got {v!r}")
        if self.fps_ratio is not None:
            self.fps_ratio = parse_ratio(self.fps_ratio)
        if self.retiming and self.recursive:
            raise ValueError("--recursive does not apply to --target-fps/--fps-ratio: every retimed frame is made "
                             "directly from the two input frames around it")

    @property
    def retiming(self) -> bool:
        """True when the output frame rate is set by --target-fps or --fps-ratio instead of --multi."""
        return self.target_fps is not None or self.fps_ratio is not None

    def retime_ratio(self, input_fps: float) -> Fraction | None:
        """Output frames per input frame (exact fraction) for an input at `input_fps`, or None without retiming."""
        if self.fps_ratio is not None:
            return parse_ratio(self.fps_ratio)
        if self.target_fps is not None:
            return _as_fraction(self.target_fps) / _as_fraction(input_fps)
        return None

    @property
    def schedule(self) -> Schedule:
        return make_schedule(self.multi, self.recursive)

    def settings(self) -> dict[str, Any]:
        """The options that determine the output frames (compared on --resume)."""
        return {
            "multi": int(self.multi),
            "recursive": bool(self.recursive),
            "scale": float(self.scale),
            "ensemble": bool(self.ensemble),
            "static_ssim": self.thresholds.static_ssim,
            "cut_ssim": self.thresholds.cut_ssim,
            "cut_hist": self.thresholds.cut_hist,
            "batch_size": int(self.batch_size),
            "ext": self.ext,
        }


@dataclass
class InterpolationSummary:
    """Counts of a run; `describe()` is the line the CLI prints."""

    input_frames: int = 0
    pairs: int = 0
    interpolated_pairs: int = 0
    static_pairs: int = 0
    cut_pairs: int = 0
    output_frames: int = 0
    original_frames: int = 0
    model_frames: int = 0
    duplicated_frames: int = 0
    kept_frames: int = 0  # already present (resume), not rewritten
    kept_pairs: int = 0  # pairs whose frames were all present (resume), not re-decided
    written_frames: int = 0
    model_calls: int = 0
    seconds: float = 0.0
    output: str = ""
    output_fps: float | None = None
    damaged_input: str | None = None  # what a damaged input video lost (--allow-damaged-input)
    lost_input_frames: list[int] = field(default_factory=list)
    recomputed_frames: int = 0  # resume: recorded frames whose checksum no longer matched
    removed_temp_files: int = 0  # temporary files of an interrupted run, removed

    @property
    def frames_per_second(self) -> float:
        """Output frames produced per second of wall time (kept frames excluded)."""
        return self.written_frames / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["frames_per_second"] = self.frames_per_second
        return d

    def describe(self) -> str:
        parts = [
            f"{self.input_frames} input frames, {self.pairs} pairs -> {self.output_frames} output frames in {self.output}",
            f"pairs: {self.interpolated_pairs} interpolated, {self.static_pairs} static (duplicated), "
            f"{self.cut_pairs} scene cuts (duplicated), {self.kept_pairs} already done",
            f"frames: {self.original_frames} originals, {self.model_frames} from the model "
            f"({self.model_calls} model calls), {self.duplicated_frames} duplicated, {self.kept_frames} kept from "
            f"an earlier run",
            f"{self.written_frames} frames written in {self.seconds:.2f} s ({self.frames_per_second:.2f} frames/s)",
        ]
        if self.output_fps:
            parts.append(f"video frame rate {self.output_fps:.3f} fps")
        if self.damaged_input:
            parts.append(f"damaged input, continued without {len(self.lost_input_frames)} lost frames: "
                         f"{self.damaged_input}")
        if self.recomputed_frames:
            parts.append(f"{_count(self.recomputed_frames, 'frame')} of the earlier run no longer matched their "
                         "checksum and were computed again")
        if self.removed_temp_files:
            parts.append(f"removed {_count(self.removed_temp_files, 'temporary file')} left by an interrupted run")
        return "\n".join(parts)


def _count(n: int, noun: str) -> str:
    """'1 frame', '3 frames'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


# ----------------------------------------------------------------------------- sources


class FrameSource:
    """Frames of an input, in order, as uint8 (H, W, 3); `count` may be None when unknown."""

    kind = "frames"
    alpha = False  # frames are RGBA (H, W, 4)
    path: Path | None = None
    fps: float = DEFAULT_INPUT_FPS
    count: int | None = None

    def __iter__(self) -> Iterator[np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path.resolve()) if self.path else None, "frames": self.count}


def _size_error(name: str, frame: np.ndarray, first_name: str, first: np.ndarray) -> DataError:
    return DataError(
        f"{name} is {frame.shape[1]}x{frame.shape[0]} (WxH) but the first frame {first_name} is "
        f"{first.shape[1]}x{first.shape[0]}; every frame of a sequence must have the same size (resize or crop "
        "the odd ones out)"
    )


class FolderSource(FrameSource):
    """A folder of numbered frames (png/jpg/tif/bmp/webp), sorted numerically (frame2 before frame10)."""

    kind = "folder"

    def __init__(self, folder: str | os.PathLike, fps: float | None = None):
        self.path = Path(folder)
        self.paths = list_frames(self.path)
        self.count = len(self.paths)
        self.fps = float(fps) if fps else DEFAULT_INPUT_FPS
        self.alpha = image_has_alpha(self.paths[0])  # RGBA in, RGBA out

    def __iter__(self) -> Iterator[np.ndarray]:
        first: np.ndarray | None = None
        for p in self.paths:
            frame = read_image_rgba(p) if self.alpha else read_image(p)
            if first is None:
                first = frame
            elif frame.shape != first.shape:
                raise _size_error(p.name, frame, self.paths[0].name, first)
            yield frame


class VideoSource(FrameSource):
    """A video file decoded with PyAV (first video stream)."""

    kind = "video"

    def __init__(self, path: str | os.PathLike, fps: float | None = None, allow_damaged: bool = False):

        self.path = Path(path)
        self.allow_damaged = allow_damaged
        self.damage: list[VideoDamage] = []  # filled when a damaged file is read with allow_damaged
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise DataError(f"{self.path} has no video stream")
                stream = container.streams.video[0]
                rate = float(stream.average_rate) if stream.average_rate else None
                self.count = int(stream.frames) or None
                if container.streams.audio:
                    log.warning("%s: the audio stream is not copied to the output", self.path)
        except av.error.FFmpegError as exc:
            raise DataError(
                f"cannot open {self.path} as a video ({exc}); pass a video file (mp4, mkv, mov, webm...) or a folder "
                "of numbered frames"
            ) from exc
        self.fps = float(fps) if fps else (rate or DEFAULT_INPUT_FPS)

    def __iter__(self) -> Iterator[np.ndarray]:
        yield from read_video(self.path, self.allow_damaged, self.damage)  # damage -> DataError unless allowed


class ArraySource(FrameSource):
    """In-memory uint8 frames (T, H, W, 3)."""

    kind = "array"

    def __init__(self, frames: np.ndarray | Sequence[np.ndarray], fps: float = DEFAULT_INPUT_FPS, name: str = "array"):
        self.frames = frames
        self.count = len(frames)
        self.fps = float(fps)
        self.name = name
        self.alpha = len(frames) > 0 and np.asarray(frames[0]).shape[-1] == 4

    def __iter__(self) -> Iterator[np.ndarray]:
        first = None
        for i, f in enumerate(self.frames):
            f = np.asarray(f)
            if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] not in (3, 4):
                raise DataError(f"frame {i}: expected uint8 (H, W, 3) or RGBA (H, W, 4), got {f.dtype} {f.shape}")
            if first is None:
                first = f
            elif f.shape != first.shape:
                raise _size_error(f"frame {i}", f, "frame 0", first)
            yield f

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.name, "frames": self.count}


def open_source(
    path: str | os.PathLike | FrameSource | np.ndarray, input_fps: float | None = None, allow_damaged: bool = False
) -> FrameSource:
    """A folder of frames, a video file, an array of frames, or an existing FrameSource.

    `allow_damaged`: a damaged video gives the frames that decode (see `rifelab.data.read_video`).
    """
    if isinstance(path, FrameSource):
        return path
    if isinstance(path, np.ndarray):
        return ArraySource(path, fps=input_fps or DEFAULT_INPUT_FPS)
    p = Path(path)
    if not p.exists():
        raise DataError(f"input not found: {p}; pass a folder of numbered frames or a video file")
    if p.is_dir():
        return FolderSource(p, fps=input_fps)
    if p.suffix.lower() in IMAGE_EXTENSIONS:
        raise DataError(f"{p} is a single image; pass the folder that holds the numbered frames")
    return VideoSource(p, fps=input_fps, allow_damaged=allow_damaged)


# ----------------------------------------------------------------------------- sinks


def output_frame_name(index: int, ext: str = "png") -> str:
    """File name of output frame `index`: zero-padded to 8 digits, e.g. 00000012.png."""
    return f"{index:0{FRAME_DIGITS}d}.{ext}"


_FRAME_NAME = re.compile(rf"^\d{{{FRAME_DIGITS}}}\.(?:{'|'.join(OUTPUT_IMAGE_EXTENSIONS)})$")


def _temp_pattern(final_names: str) -> re.Pattern:
    """Names `results.temp_path_beside` gives temporaries of files matching the regex `final_names`."""
    return re.compile(rf"^\.(?:{final_names})\.[a-z0-9_]+\.tmp\.\w+$")


def _remove_stale_temps(folder: Path, pattern: re.Pattern) -> list[str]:
    """Remove the temporary files an interrupted run left in `folder` (names matching `pattern`); returns them."""
    removed = []
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            if pattern.match(f.name) and f.is_file():
                f.unlink()
                removed.append(f.name)
    if removed:
        log.warning("removed %d temporary file%s left by an interrupted run in %s: %s", len(removed),
                    "s" if len(removed) > 1 else "", folder, ", ".join(removed[:5]))
    return removed


def _sha256_file(path: Path) -> str | None:
    """sha256 of a file, or None when it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a `rifelab interpolate` output folder with every frame it recorded, or None if absent.

    `frames` maps each written file name to its sha256: the manifest's own list plus the lines of its
    append-only journal (a run records each frame there before renaming it into place, and folds the
    journal into the manifest when it ends). Raises DataError for a manifest that cannot be read.
    """
    d = Path(folder)
    path = d / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} ({exc}); move the folder aside and start again") from exc
    if not isinstance(manifest, dict):
        raise DataError(f"{path} is not a rifelab manifest; move the folder aside and start again")
    listed = manifest.get("frames")
    records = list(listed.items()) if isinstance(listed, dict) else []
    journal = d / JOURNAL_NAME
    if journal.exists():
        for line in journal.read_text(encoding="utf-8", errors="replace").splitlines():
            try:  # a kill can cut the last line short; its frame was never renamed into place
                rec = json.loads(line)
                records.append((rec["name"], rec["sha256"]))
            except (ValueError, KeyError, TypeError):
                continue
    # only frame names rifelab gives: a crafted manifest cannot point --overwrite at other files
    manifest["frames"] = {str(n): str(h) for n, h in records if _FRAME_NAME.match(str(n))}
    return manifest


class _FolderSink:
    """Numbered frames in a folder, each written atomically and recorded (name, sha256) in the manifest.

    The manifest is the one record of what rifelab wrote there: --resume keeps a frame only when its
    checksum matches, --overwrite removes only recorded files, and anything else in the folder is refused.
    """

    def __init__(self, folder: Path, config: InterpolateConfig, manifest: dict[str, Any]):
        self.folder = folder
        self.ext = config.ext
        self.config = config
        self.manifest = manifest
        self.existing: set[int] = set()
        self.frames: dict[str, str] = {}  # name -> sha256 of every frame of ours in the folder
        self.recomputed: list[str] = []  # recorded frames whose content no longer matched (resume)
        self.removed_temps: list[str] = []
        self._journal: Any = None
        self._lock = threading.Lock()
        self._pattern = re.compile(rf"^(\d{{{FRAME_DIGITS}}})\.{re.escape(self.ext)}$")
        self._temps = _temp_pattern(rf"\d{{{FRAME_DIGITS}}}\.\w+|{re.escape(MANIFEST_NAME)}")

    def prepare(self) -> None:
        d = self.folder
        if d.exists() and not d.is_dir():
            raise DataError(f"output {d} exists and is not a folder; give a folder (or a video file name ending in "
                            f"{', '.join(VIDEO_EXTENSIONS)})")
        d.mkdir(parents=True, exist_ok=True)
        entries = sorted(f.name for f in d.iterdir())
        if entries:
            if not (self.config.resume or self.config.overwrite):
                raise DataError(
                    f"output folder {d} is not empty ({len(entries)} entries); pass --resume to continue an "
                    "interrupted run, --overwrite to replace the frames of an earlier run, or choose another folder"
                )
            old = read_manifest(d)
            recorded = old["frames"] if old else {}
            ours = set(recorded) | {MANIFEST_NAME, JOURNAL_NAME}
            foreign = [n for n in entries if n not in ours and not self._temps.match(n)]
            if foreign:
                flag = "--resume" if self.config.resume else "--overwrite"
                why = ("it has no rifelab manifest" if old is None else
                       "its manifest does not list them")
                raise DataError(
                    f"output folder {d} holds {len(foreign)} file{'s' if len(foreign) > 1 else ''} rifelab did not "
                    f"write ({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}; {why}); {flag} only "
                    "touches what an earlier `rifelab interpolate` recorded there. Move those files out or choose "
                    "another folder"
                )
            if self.config.resume:
                self._check_manifest(old)
            self.removed_temps = _remove_stale_temps(d, self._temps)
            if self.config.overwrite:
                for name in sorted(recorded):
                    with contextlib.suppress(FileNotFoundError):
                        (d / name).unlink()
                log.info("--overwrite: removed the %d frames of the earlier run in %s", len(recorded), d)
            else:
                self._verify(recorded)
        if self.existing:
            log.info("resume: %d frames already in %s are kept (checksums verified)", len(self.existing), d)
        self._save_manifest(complete=False)
        self._journal = open(d / JOURNAL_NAME, "w", encoding="utf-8")  # starts empty: the manifest holds the rest

    def _verify(self, recorded: dict[str, str]) -> None:
        """Keep the recorded frames whose sha256 still matches; the others are computed again."""
        for name, digest in sorted(recorded.items()):
            path = self.folder / name
            if not path.exists():
                continue
            if _sha256_file(path) != digest:
                self.recomputed.append(name)
                continue
            self.frames[name] = digest
            m = self._pattern.match(name)
            if m:
                self.existing.add(int(m.group(1)))
        if self.recomputed:
            log.warning(
                "resume: %d frame%s in %s no longer match what rifelab wrote (truncated, damaged or replaced): %s; "
                "computed again", len(self.recomputed), "s" if len(self.recomputed) > 1 else "", self.folder,
                ", ".join(self.recomputed[:5]) + (", ..." if len(self.recomputed) > 5 else ""))

    def _check_manifest(self, old: dict[str, Any] | None) -> None:
        if old is None:
            raise DataError(
                f"--resume: {self.folder} has no {MANIFEST_NAME}, so it was not written by `rifelab interpolate`; "
                "choose an empty folder"
            )
        diffs = [
            f"{k}: {old.get(k)!r} then, {v!r} now"
            for k, v in self.manifest.items()
            if k not in ("complete", "summary", "frames") and old.get(k) != v
        ]
        if diffs:
            raise DataError(
                f"--resume: the run that wrote {self.folder} used other settings ({'; '.join(diffs)}); rerun with "
                "the same input and options, or pass --overwrite to start again"
            )

    def _save_manifest(self, **extra: Any) -> None:
        data = dict(self.manifest, **extra, frames=dict(sorted(self.frames.items())))
        atomic_write_text(self.folder / MANIFEST_NAME, json.dumps(data, indent=2, default=str) + "\n")

    def has(self, index: int) -> bool:
        return index in self.existing

    def write(self, index: int, frame: np.ndarray) -> None:
        name = output_frame_name(index, self.ext)
        data = encode_image(frame, self.ext)
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:  # recorded before it is renamed into place: a kill never leaves an unrecorded frame
            self._journal.write(json.dumps({"name": name, "sha256": digest}) + "\n")
            self._journal.flush()
            self.frames[name] = digest
        with atomic_path(self.folder / name) as tmp:
            tmp.write_bytes(data)

    def _close(self, **extra: Any) -> None:
        """Fold the journal into the manifest and remove it."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        self._save_manifest(**extra)
        (self.folder / JOURNAL_NAME).unlink(missing_ok=True)

    def finish(self, summary: InterpolationSummary) -> None:
        self._close(complete=True, summary=summary.as_dict())

    def abort(self) -> None:
        """Complete frames stay for --resume (recorded in the manifest; the journal keeps them if that fails)."""
        with contextlib.suppress(OSError):
            self._close(complete=False)


class _VideoSink:
    """A video file encoded with PyAV into a temporary file that is renamed when complete."""

    def __init__(self, path: Path, fps: float, config: InterpolateConfig):
        self.path = path
        self.fps = fps
        self.config = config
        self._container: Any = None
        self._stream: Any = None
        self._tmp: Path | None = None
        self.removed_temps: list[str] = []

    def prepare(self) -> None:
        if self.config.resume:
            raise DataError(
                "--resume works for frame-folder outputs only; write frames to a folder (and encode them with "
                "`rifelab interpolate FOLDER out.mp4 --multi 2`), or rerun with --overwrite"
            )
        if self.path.exists():
            if self.path.is_dir():
                raise DataError(f"output {self.path} is a folder, but its name ends like a video file; rename it")
            if not self.config.overwrite:
                raise DataError(f"output video {self.path} exists; pass --overwrite to replace it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.removed_temps = _remove_stale_temps(self.path.parent, _temp_pattern(re.escape(self.path.name)))

    def has(self, index: int) -> bool:
        return False

    def _open(self, frame: np.ndarray) -> None:

        h, w = frame.shape[:2]

        self._tmp = temp_path_beside(self.path)
        rate = Fraction(self.fps).limit_denominator(100000)
        self._container = av.open(str(self._tmp), "w")
        suffix = self.path.suffix.lower()
        if self.config.lossless:
            codec, pix_fmt, opts = "libx264rgb", "rgb24", {"crf": "0", "preset": "veryfast"}
        elif suffix == ".webm":
            codec, pix_fmt, opts = "libvpx-vp9", "yuv420p", {"crf": str(self.config.crf), "b": "0"}
        else:
            codec, opts = "libx264", {"crf": str(self.config.crf), "preset": "medium"}
            pix_fmt = "yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p"
        if suffix == ".webm" and (w % 2 or h % 2):
            pix_fmt = "yuv444p"
        try:
            stream = self._container.add_stream(codec, rate=rate)
        except (av.error.FFmpegError, ValueError) as exc:
            raise DataError(f"this PyAV/FFmpeg build cannot encode {codec} ({exc}); try an .mp4 or .mkv output") from exc
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.options = opts
        self._stream = stream

    def write(self, index: int, frame: np.ndarray) -> None:

        if self._container is None:
            self._open(frame)
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)

    def finish(self, summary: InterpolationSummary) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        if self._tmp is not None and self._tmp.exists():
            self._tmp.unlink()


# ----------------------------------------------------------------------------- pipeline stages


@dataclass
class _Pair:
    index: int
    frame0: np.ndarray
    frame1: np.ndarray
    decision: PairDecision


@dataclass
class _Out:
    index: int
    data: Any  # uint8 (H,W,3) array or a (1,3,H,W) float tensor from the model
    kind: str  # original | model | static | cut


class _Stopped(Exception):
    """Another stage failed; this one stops quietly."""


_END = object()


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue


def _drain(q: queue.Queue, stop: threading.Event) -> Iterator[Any]:
    while True:
        item = _get(q, stop)
        if item is _END:
            return
        yield item


def _model_device(model: Any) -> torch.device:
    dev = getattr(model, "device", None)
    if dev is None:
        try:
            dev = next(model.parameters()).device
        except (AttributeError, StopIteration):
            dev = "cpu"
    return torch.device(dev)


def _progress(total: int | None, desc: str, position: int, enabled: bool, unit: str):

    return tqdm(total=total, desc=desc, position=position, unit=unit, leave=position == 0, disable=not enabled,
                dynamic_ncols=True, file=sys.stderr)


class _Pipeline:
    def __init__(self, model: Any, config: InterpolateConfig, summary: InterpolationSummary,
                 has: Callable[[int], bool] = lambda i: False, pair_count: int | None = None):
        self.model = model
        self.config = config
        self.schedule = config.schedule
        self.summary = summary
        self.has = has
        n = config.multi
        first_level = len(self.schedule.levels[0]) if self.schedule.levels else 1
        # fixed groups of pairs per model batch: the same calls whether or not a run is resumed
        self.group_size = max(1, config.batch_size // max(1, first_level))
        self.stride = n - 1
        self.device = _model_device(model)
        self.pair_count = pair_count

    def group_indices(self, pair: int) -> list[int]:
        """Output indices of the fixed group of pairs that holds `pair` (pairs past a known end left out)."""
        g0 = pair // self.group_size * self.group_size
        g1 = g0 + self.group_size
        if self.pair_count is not None:
            g1 = min(g1, self.pair_count)
        return [p * self.stride + k for p in range(g0, g1) for k in range(self.stride)]

    def group_done(self, pair: int) -> bool:
        return all(self.has(i) for i in self.group_indices(pair))

    # reader stage -------------------------------------------------------------
    def pairs(self, source: Iterable[np.ndarray], bar: Any = None) -> Iterator[_Pair]:
        prev: np.ndarray | None = None
        count = 0
        copy_only = self.config.multi == 2
        for frame in source:
            count += 1
            if bar is not None:
                bar.update(1)
            if prev is not None:
                p = count - 2
                if copy_only:
                    decision = PairDecision("copy")
                elif self.group_done(p):
                    decision = PairDecision("done")
                else:
                    decision = decide_pair(prev[..., :3], frame[..., :3], self.config.thresholds)
                yield _Pair(p, prev, frame, decision)
            prev = frame
        if count < 2:
            raise DataError(f"the input has {count} frame{'s' if count != 1 else ''}; interpolation needs at least 2")
        self.summary.input_frames = count

    # model stage --------------------------------------------------------------
    def outputs(self, pairs: Iterable[_Pair], bar: Any = None) -> Iterator[_Out]:
        group: list[_Pair] = []
        last: _Pair | None = None
        for pr in pairs:
            group.append(pr)
            last = pr
            if (pr.index + 1) % self.group_size == 0:
                yield from self._group(group, bar)
                group = []
        if group:
            yield from self._group(group, bar)
        if last is not None:
            yield from self._closing_frame(last)

    def _closing_frame(self, last: _Pair) -> Iterator[_Out]:
        """The last input frame as the last output frame; sets the output frame count."""
        final = (last.index + 1) * self.stride
        self.summary.output_frames = final + 1
        yield from self._original(final, last)

    def _original(self, index: int, last: _Pair) -> Iterator[_Out]:
        if self.has(index):
            self.summary.kept_frames += 1
        else:
            self.summary.original_frames += 1
            yield _Out(index, last.frame1, "original")

    def _count_pairs(self, group: list[_Pair], inserts: bool) -> None:
        """Add a group's pairs to the summary; `inserts`: whether an interpolated pair makes new frames."""
        s = self.summary
        for pr in group:
            s.pairs += 1
            kind = pr.decision.kind
            s.static_pairs += kind == "static"
            s.cut_pairs += kind == "cut"
            s.kept_pairs += kind == "done"
            s.interpolated_pairs += kind == "interpolate" and inserts

    def _group(self, group: list[_Pair], bar: Any) -> Iterator[_Out]:
        s = self.summary
        self._count_pairs(group, self.config.multi > 2)
        indices = [pr.index * self.stride + k for pr in group for k in range(self.stride)]
        if all(pr.decision.kind == "done" for pr in group):
            s.kept_frames += len(indices)
            if bar is not None:
                bar.update(len(group))
            return
        todo = [pr for pr in group if pr.decision.kind == "interpolate"] if self.config.multi > 2 else []
        made = self.compute(todo)
        times = self.schedule.times
        for pr in group:
            for k in range(self.stride):
                idx = pr.index * self.stride + k
                if self.has(idx):
                    s.kept_frames += 1
                    continue
                if k == 0:
                    s.original_frames += 1
                    yield _Out(idx, pr.frame0, "original")
                elif pr.index in made:
                    s.model_frames += 1
                    yield _Out(idx, made[pr.index][k], "model")
                else:
                    s.duplicated_frames += 1
                    yield _Out(idx, pr.frame0 if times[k] < 0.5 else pr.frame1, pr.decision.kind)
            if bar is not None:
                bar.update(1)

    def compute(self, pairs: list[_Pair]) -> dict[int, dict[int, torch.Tensor]]:
        """Run the schedule for `pairs`: slot -> (1,3,H,W) float tensor for each pair index."""
        if not pairs:
            return {}
        cache: dict[int, torch.Tensor] = {}

        def tensor(frame: np.ndarray) -> torch.Tensor:
            key = id(frame)
            if key not in cache:
                cache[key] = _frame_tensor(frame, self.device)
            return cache[key]

        last = self.config.multi - 1
        slots = {pr.index: {0: tensor(pr.frame0), last: tensor(pr.frame1)} for pr in pairs}
        bs = self.config.batch_size
        for level in self.schedule.levels:
            jobs = [(slots[pr.index], step) for pr in pairs for step in level]
            for start in range(0, len(jobs), bs):
                chunk = jobs[start : start + bs]
                left = torch.cat([sl[st.left] for sl, st in chunk])
                right = torch.cat([sl[st.right] for sl, st in chunk])
                t = torch.tensor([st.t for _, st in chunk], dtype=torch.float32, device=self.device)
                out = _call_model(self.model, left, right, t, self.config)
                self.summary.model_calls += 1
                for k, (sl, st) in enumerate(chunk):
                    sl[st.target] = out[k : k + 1]
        return slots


def _to_frame(data: Any) -> np.ndarray:
    return to_uint8(data)[0] if isinstance(data, torch.Tensor) else data


def _run_stages(
    pipe: _Pipeline,
    source: FrameSource,
    write: Callable[[_Out], None],
    config: InterpolateConfig,
) -> None:
    """Reader -> model -> writer, threaded with bounded queues (or inline when config.threaded is False)."""
    prog = config.progress
    pairs_total = source.count - 1 if source.count else None
    read_bar = _progress(source.count, "read", 1, prog, "frame")
    model_bar = _progress(pairs_total, "interpolate", 0, prog, "pair")
    try:
        if not config.threaded:
            for out in pipe.outputs(pipe.pairs(source, read_bar), model_bar):
                write(out)
            return
        stop = threading.Event()
        errors: list[BaseException] = []
        q_in: queue.Queue = queue.Queue(maxsize=config.queue_size)
        q_out: queue.Queue = queue.Queue(maxsize=config.queue_size * max(1, config.multi - 1))

        def fail(exc: BaseException) -> None:
            errors.append(exc)
            stop.set()

        def reader() -> None:
            gen = pipe.pairs(source, read_bar)
            try:
                with contextlib.closing(gen):
                    for item in gen:
                        _put(q_in, item, stop)
                _put(q_in, _END, stop)
            except _Stopped:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                fail(exc)

        def writer() -> None:
            try:
                while True:
                    item = _get(q_out, stop)
                    if item is _END:
                        return
                    write(item)
            except _Stopped:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                fail(exc)

        threads = [threading.Thread(target=reader, name="rifelab-reader", daemon=True),
                   threading.Thread(target=writer, name="rifelab-writer", daemon=True)]
        for th in threads:
            th.start()
        try:
            for out in pipe.outputs(_drain(q_in, stop), model_bar):
                _put(q_out, out, stop)
            _put(q_out, _END, stop)
            while threads[1].is_alive():
                threads[1].join(timeout=0.1)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - includes KeyboardInterrupt: stop the threads, then re-raise
            errors.insert(0, exc)
            stop.set()
        finally:
            if errors:
                stop.set()
            for th in threads:
                th.join()
        if errors:
            raise errors[0]
    finally:
        read_bar.close()
        model_bar.close()


# ----------------------------------------------------------------------------- retiming and alpha


def _as_fraction(value: float | Fraction | str) -> Fraction:
    """A frame rate as an exact fraction (30000/1001 stays 30000/1001 when given as a float)."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, str):
        return Fraction(value)
    return Fraction(value).limit_denominator(100000)


def parse_ratio(value: Fraction | str | float | int) -> Fraction:
    """A positive frame-rate ratio from "5/2", "2.5", 2.5 or Fraction(5, 2); ValueError otherwise."""
    try:
        r = _as_fraction(value) if not isinstance(value, bool) else None
    except (ValueError, ZeroDivisionError, TypeError, OverflowError):
        r = None
    if r is None or r <= 0:
        raise ValueError(f"--fps-ratio must be a positive number or fraction such as 5/2 or 1.25, got {value!r}")
    return r


def retime_count(input_frames: int, ratio: Fraction) -> int:
    """Output frames of a retimed run: every k with k / ratio <= T-1, i.e. floor((T-1) * ratio) + 1."""
    return int((input_frames - 1) * ratio) + 1


def retime_positions(input_frames: int, ratio: Fraction) -> list[Fraction]:
    """Position of each output frame on the input's frame axis (k / ratio): frame k is shown at time k / output fps."""
    return [Fraction(k) / ratio for k in range(retime_count(input_frames, ratio))]


def _frame_tensor(frame: np.ndarray, device: torch.device) -> torch.Tensor:
    """(1,C,H,W) float tensor of an RGB or RGBA uint8 frame; the RGB planes exactly as `to_tensor` makes them."""
    if frame.shape[-1] != 4:
        return to_tensor(frame, device)
    alpha = torch.from_numpy(np.ascontiguousarray(frame[..., 3])).to(device).float().div_(255.0)
    return torch.cat([to_tensor(frame[..., :3], device), alpha[None, None]], 1)


def _alpha_model(model: Any) -> Any:
    """The object whose `interpolate_rgba` makes RGBA frames: the model, or the RIFE an Engine wraps."""
    for m in (model, getattr(model, "model", None)):
        if m is not None and hasattr(m, "interpolate_rgba"):
            return m
    raise DataError(f"{type(model).__name__} cannot interpolate alpha (no interpolate_rgba); use rifelab.models.RIFE "
                    "or flatten the frames onto a background")


def _call_model(model: Any, left: torch.Tensor, right: torch.Tensor, t: torch.Tensor,
                config: InterpolateConfig) -> torch.Tensor:
    """One batched model call; RGBA batches go through `interpolate_rgba` (alpha with the colour's flow and mask)."""
    if left.shape[1] == 4:
        return _alpha_model(model).interpolate_rgba(left, right, t, config.scale, config.ensemble)
    return model.interpolate(left, right, t, config.scale, config.ensemble)


def _check_alpha_output(src: FrameSource, out: Path, config: InterpolateConfig) -> None:
    if not src.alpha:
        return
    if _is_video_path(out):
        raise DataError(f"{src.path or 'the input'} has an alpha channel; write RGBA frames to a folder "
                        "(--ext png, tif or webp) instead of a video")
    if config.ext == "jpg":
        raise DataError("the input has an alpha channel, which jpg cannot store; use --ext png, tif or webp")


def _extra_settings(src: FrameSource, ratio: Fraction | None) -> dict[str, Any]:
    """Manifest entries of retimed or RGBA runs (absent otherwise, so older manifests still resume)."""
    extra: dict[str, Any] = {}
    if ratio is not None:
        extra["retime"] = {"ratio": str(ratio), "input_fps": str(_as_fraction(src.fps))}
    if src.alpha:
        extra["alpha"] = True
    return extra


class _RetimePipeline(_Pipeline):
    """Output frame k at input position k / ratio: copied on an input frame, else interpolated at its own t."""

    def __init__(self, model: Any, config: InterpolateConfig, summary: InterpolationSummary, ratio: Fraction,
                 has: Callable[[int], bool] = lambda i: False, pair_count: int | None = None):
        super().__init__(model, config, summary, has, pair_count)
        self.ratio = ratio
        per_pair = max(1, -(-ratio // 1))
        self.group_size = max(1, config.batch_size // per_pair)  # fixed groups: same model batches on resume

    def slots(self, pair: int) -> list[tuple[int, Fraction]]:
        """(output index, local t in [0, 1)) of the output frames between input frames `pair` and `pair`+1."""
        r = self.ratio
        first, end = -(-(pair * r) // 1), -(-((pair + 1) * r) // 1)  # ceil, exact on fractions
        return [(k, Fraction(k) / r - pair) for k in range(first, end)]

    def group_indices(self, pair: int) -> list[int]:
        g0 = pair // self.group_size * self.group_size
        g1 = g0 + self.group_size
        if self.pair_count is not None:
            g1 = min(g1, self.pair_count)
        return [k for p in range(g0, g1) for k, _ in self.slots(p)]

    def _closing_frame(self, last: _Pair) -> Iterator[_Out]:
        end = (last.index + 1) * self.ratio
        self.summary.output_frames = int(end) + 1
        if end.denominator == 1:  # the last output frame falls on the last input frame
            yield from self._original(int(end), last)

    def _group(self, group: list[_Pair], bar: Any) -> Iterator[_Out]:
        s = self.summary
        self._count_pairs(group, True)
        if all(pr.decision.kind == "done" for pr in group):
            s.kept_frames += sum(len(self.slots(pr.index)) for pr in group)
            if bar is not None:
                bar.update(len(group))
            return
        made = self.compute([pr for pr in group if pr.decision.kind == "interpolate"])
        for pr in group:
            for k, t in self.slots(pr.index):
                if self.has(k):
                    s.kept_frames += 1
                elif t == 0:
                    s.original_frames += 1
                    yield _Out(k, pr.frame0, "original")
                elif k in made.get(pr.index, {}):
                    s.model_frames += 1
                    yield _Out(k, made[pr.index][k], "model")
                else:
                    s.duplicated_frames += 1
                    yield _Out(k, pr.frame0 if t < 0.5 else pr.frame1, pr.decision.kind)
            if bar is not None:
                bar.update(1)

    def compute(self, pairs: list[_Pair]) -> dict[int, dict[int, torch.Tensor]]:
        """Output index -> (1,C,H,W) tensor for every non-original frame of `pairs`, in batches of batch_size."""
        jobs = [(pr, k, t) for pr in pairs for k, t in self.slots(pr.index) if t != 0]
        made: dict[int, dict[int, torch.Tensor]] = {pr.index: {} for pr in pairs}
        cache: dict[int, torch.Tensor] = {}

        def tensor(frame: np.ndarray) -> torch.Tensor:
            if id(frame) not in cache:
                cache[id(frame)] = _frame_tensor(frame, self.device)
            return cache[id(frame)]

        bs = self.config.batch_size
        for start in range(0, len(jobs), bs):
            chunk = jobs[start : start + bs]
            left = torch.cat([tensor(pr.frame0) for pr, _, _ in chunk])
            right = torch.cat([tensor(pr.frame1) for pr, _, _ in chunk])
            t = torch.tensor([float(t) for _, _, t in chunk], dtype=torch.float32, device=self.device)
            out = _call_model(self.model, left, right, t, self.config)
            self.summary.model_calls += 1
            for j, (pr, k, _) in enumerate(chunk):
                made[pr.index][k] = out[j : j + 1]
        return made


# ----------------------------------------------------------------------------- entry point


def _is_video_path(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _frame_size(src: FrameSource) -> tuple[int, int] | None:
    """(width, height) of a source's frames from its first frame's header, or None when unknown."""
    try:
        if isinstance(src, FolderSource):
            with Image.open(src.paths[0]) as im:
                return im.size
        if isinstance(src, ArraySource) and len(src.frames):
            h, w = np.asarray(src.frames[0]).shape[:2]
            return w, h
        if isinstance(src, VideoSource):
            info = clip_info(src.path)
            return int(info["width"]), int(info["height"])
    except (OSError, ValueError, DataError):
        pass
    return None


def _warn_if_large(src: FrameSource, frames: int | None, out: Path) -> None:
    """Log the output's frame count and raw size before starting; a warning above LARGE_OUTPUT_FRAMES."""
    if frames is None:
        return
    size = _frame_size(src)
    raw = f" of {size[0]}x{size[1]} ({frames * size[0] * size[1] * 3 / 1e9:.2f} GB as raw RGB)" if size else ""
    if frames > LARGE_OUTPUT_FRAMES:
        log.warning("this run writes %d frames%s to %s; stop it (Ctrl-C) if that is not what you meant", frames,
                    raw, out)
    else:
        log.info("writing %d frames%s to %s", frames, raw, out)


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
    config.validate()
    src = open_source(source, config.input_fps, allow_damaged=config.allow_damaged_input)
    out = Path(output)
    if src.path is not None and out.resolve() == src.path.resolve():
        raise DataError(f"the output {out} is the input; choose another folder or file")
    summary = InterpolationSummary(output=str(out))
    ratio = config.retime_ratio(src.fps)
    _check_alpha_output(src, out, config)
    if _is_video_path(out):
        summary.output_fps = config.fps or src.fps * (config.multi - 1)
        if ratio is not None:
            summary.output_fps = config.fps or float(_as_fraction(src.fps) * ratio)
        sink: Any = _VideoSink(out, summary.output_fps, config)
    else:
        manifest = {"input": src.describe(), **config.settings(), "model": model_info or {}}
        manifest.update(_extra_settings(src, ratio))
        sink = _FolderSink(out, config, manifest)
    expected = (src.count - 1) * (config.multi - 1) + 1 if src.count else None
    if ratio is not None:
        expected = retime_count(src.count, ratio) if src.count else None
    _warn_if_large(src, expected, out)
    sink.prepare()
    summary.removed_temp_files = len(sink.removed_temps)
    summary.recomputed_frames = len(getattr(sink, "recomputed", ()))
    pipe = _Pipeline(model, config, summary, sink.has, (src.count - 1) if src.count else None)
    if ratio is not None:
        pipe = _RetimePipeline(model, config, summary, ratio, sink.has, (src.count - 1) if src.count else None)
    write_bar = _progress(expected, "write", 2, config.progress, "frame")

    def write(item: _Out) -> None:
        sink.write(item.index, _to_frame(item.data))
        summary.written_frames += 1
        write_bar.update(1)
        if on_frame is not None:
            on_frame(item.index, item.kind)

    t0 = time.perf_counter()
    try:
        _run_stages(pipe, src, write, config)
        summary.seconds = time.perf_counter() - t0
        for damage in getattr(src, "damage", ()):
            summary.damaged_input = damage.describe()
            summary.lost_input_frames = list(damage.lost)
        sink.finish(summary)
    except BaseException:
        sink.abort()
        raise
    finally:
        write_bar.close()
    log.debug("interpolate: %s", summary.describe().replace("\n", "; "))
    return summary


# ----------------------------------------------------------------------------- model loading


def load_interpolation_model(args: argparse.Namespace) -> Any:
    """The model the CLI runs: `--backend` (rifelab.backends) with the engine switches, on `--device`."""
    return model_from_args(args, resolve_device(getattr(args, "device", "auto")))


# ----------------------------------------------------------------------------- benchmark


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
) -> "Any":
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
    with contextlib.ExitStack() as stack:
        root = Path(workdir) if workdir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        inp = root / "input"
        inp.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(frames):
            write_image(inp / output_frame_name(i), f)
        n_out = (len(frames) - 1) * (multi - 1) + 1

        # the pairs and decisions the pipeline will see, made once for the model-only row
        summary = InterpolationSummary()
        pipe = _Pipeline(model, cfg, summary)
        pairs = list(pipe.pairs(ArraySource(frames)))
        todo = [p for p in pairs if p.decision.kind == "interpolate"]
        groups: list[list[_Pair]] = []
        for p in todo:
            if not groups or groups[-1][0].index // pipe.group_size != p.index // pipe.group_size:
                groups.append([])
            groups[-1].append(p)

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
        for _, fn in modes:  # warm-up
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
        rows = []
        for name, _ in modes:
            timing = Timing.from_samples(samples[name], warmup=warmup)
            rows.append({
                "mode": name,
                "median_s": timing.median,
                "p10_s": timing.p10,
                "p90_s": timing.p90,
                "output_fps": n_out / timing.median,
                "output_fps_p10": n_out / timing.p90,
                "output_fps_p90": n_out / timing.p10,
                "repeats": timing.repeats,
            })
    df = pd.DataFrame(rows)
    base = df.loc[df["mode"] == "model only", "median_s"].iloc[0]
    df["model_share"] = base / df["median_s"]  # 1.0: I/O fully hidden behind the model
    h, w = frames.shape[1:3]
    df.insert(1, "input_frames", len(frames))
    df.insert(2, "output_frames", n_out)
    df.insert(3, "model_frames", len(todo) * (multi - 2))
    df.insert(4, "resolution", f"{w}x{h}")
    return df


# ----------------------------------------------------------------------------- command line


def _threshold(text: str) -> float | None:
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
    g.add_argument("--multi", type=int, default=3, metavar="N",
                   help="frames per input pair including both originals: 2 only copies, 3 (default) inserts 1 "
                   "(doubles the frame rate), N inserts N-2 at t = 1/(N-1), ..., (N-2)/(N-1)")
    g.add_argument("--recursive", action="store_true", help=RECURSIVE_HELP)
    g.add_argument("--scale", type=float, default=None, metavar="S",
                   help="flow scale, one of 0.25, 0.5, 1, 2, 4 (default 1; 0.5 with --uhd): smaller is faster and "
                   "suits large motion in high-resolution frames")
    g.add_argument("--uhd", action="store_true", help="4K input: sets --scale 0.5 unless --scale is given")
    g.add_argument("--ensemble", action="store_true",
                   help="average the flow with that of the swapped pair (slower, slightly smoother)")
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
    g = p.add_argument_group("frame-rate retiming (instead of --multi)")
    g.add_argument("--target-fps", type=float, default=None, metavar="F",
                   help="make output frames at times k/F (e.g. 60 for a 24 fps input): each is interpolated from the "
                   "two input frames around it at its own t, or copied when it falls on an input frame; "
                   "floor((T-1) x F / input fps) + 1 frames, none duplicated or dropped. Replaces --multi")
    g.add_argument("--fps-ratio", default=None, metavar="R",
                   help="output rate = input rate x R, as a fraction or decimal (5/2 turns 24 fps into 60, 6/5 "
                   "turns 25 into 30); same frames as --target-fps")
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
                   help="replace the frames an earlier run recorded in OUTPUT's manifest (a non-empty output is refused "
                   "otherwise, and so is any file rifelab did not write)")
    g.add_argument("--allow-damaged-input", action="store_true",
                   help="continue with the frames a damaged input video decodes, reporting the lost ones (by default "
                   "decode errors and frames missing from the container's count stop the run)")
    g = p.add_argument_group("model and pipeline")
    g.add_argument("--device", default="auto", help="auto (default: cuda, then mps, then cpu), cpu, cuda or mps")
    g.add_argument("--checkpoint", default=None, help="RIFE 4.x checkpoint (default: bundled RIFE 4.0 weights)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
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


def config_from_args(args: argparse.Namespace) -> InterpolateConfig:
    """InterpolateConfig from the parsed `interpolate` options (validated)."""
    scale = args.scale if args.scale is not None else (0.5 if args.uhd else 1.0)
    cfg = InterpolateConfig(
        multi=args.multi, recursive=args.recursive, scale=scale, ensemble=args.ensemble,
        thresholds=SceneThresholds(args.static_ssim, args.cut_ssim, args.cut_hist),
        batch_size=args.batch_size, queue_size=args.queue_size, ext=args.ext, input_fps=args.input_fps,
        fps=args.fps, crf=args.crf, lossless=args.lossless, resume=args.resume, overwrite=args.overwrite,
        threaded=not args.serial, progress=not args.no_progress, allow_damaged_input=args.allow_damaged_input,
    )
    cfg.target_fps, cfg.fps_ratio = getattr(args, "target_fps", None), getattr(args, "fps_ratio", None)
    cfg.validate()
    return cfg


def _cmd_interpolate(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.benchmark:
        if args.repeats < 1:
            raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
        src = open_source(args.input, cfg.input_fps)
        frames = np.stack(list(src))
        model = load_interpolation_model(args)
        df = benchmark_pipeline(model, frames, multi=cfg.multi, batch_size=cfg.batch_size, scale=cfg.scale,
                                repeats=args.repeats, thresholds=cfg.thresholds)

        print(to_markdown(df, floatfmt=".3f"))
        return 0
    if args.output is None:
        raise ValueError("give an OUTPUT folder or video file (or --benchmark)")
    try:
        model = load_interpolation_model(args)
        info = {"checkpoint": str(args.checkpoint) if args.checkpoint else "bundled rife40",
                "dtype": getattr(args, "dtype", "fp32")}
        summary = interpolate_sequence(args.input, args.output, model, cfg, model_info=info)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (rifelab.cli turns it into KeyboardInterrupt('SIGTERM'))
        if getattr(args, "verbose", 0) >= 2:
            raise
        print(stopped_message(args, f"stopped by {exc.args[0] if exc.args else 'Ctrl-C'}"), file=sys.stderr)
        return 130
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
    if _is_video_path(out):
        kept = f"the unfinished video was removed ({out} is as it was before)"
        again = shlex.join(["rifelab", *argv])
        return f"rifelab interpolate: {what}; {kept}; once fixed, run again: {again}"
    argv = [a for a in argv if not _is_flag(a, "--overwrite")]
    try:
        manifest = read_manifest(out)
    except DataError:
        manifest = None
    done = sum((out / n).is_file() for n in manifest["frames"]) if manifest else 0
    kept = f"{_count(done, 'complete frame')} kept in {out}" if done else f"no frames written to {out}"
    again = shlex.join(["rifelab", *argv, "--resume"])
    return f"rifelab interpolate: {what}; {kept}; once fixed, continue with: {again}"


def _is_flag(arg: str, flag: str) -> bool:
    """Whether a command-line word is `flag` or an abbreviation argparse accepts for it."""
    return len(arg) > 3 and flag.startswith(arg)


def _rebuild_argv(args: argparse.Namespace) -> list[str]:
    """The essential arguments of an `interpolate` call when the original command line is not known."""
    argv = ["interpolate", str(args.input), str(args.output), "--multi", str(args.multi)]
    return argv + (["--recursive"] if args.recursive else [])
