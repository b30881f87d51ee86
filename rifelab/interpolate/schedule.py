"""What an interpolation run produces: output schedules, retiming ratios, `InterpolateConfig` and the run summary."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from rifelab.frames.scenes import SceneThresholds
from rifelab.rife.network import check_scale

log = logging.getLogger(__name__)


VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")


OUTPUT_IMAGE_EXTENSIONS = ("png", "jpg", "tif", "bmp", "webp")


MANIFEST_NAME = ".rifelab-interpolate.json"


JOURNAL_NAME = ".rifelab-interpolate.journal"  # the manifest's append-only part while a run writes frames


LOCK_NAME = ".rifelab-interpolate.lock"  # advisory lock of the run writing a folder (holds its pid and command)


MAX_MULTI = 256  # frames per pair: beyond this a run is almost surely a typo (1000 on 8x8 frames)


LARGE_OUTPUT_FRAMES = 10_000  # warn before writing more frames than this


FRAME_DIGITS = 8


DEFAULT_INPUT_FPS = 25.0


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
    allow_frame_drop: bool = False  # accept retiming below the input rate (input frames are skipped)
    allow_8bit: bool = False  # accept writing a 10/12/16-bit input at 8 bits where the output cannot hold its depth
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
        if self.retiming and self.multi != 3:
            raise ValueError(f"--multi {self.multi} and --target-fps/--fps-ratio both set how many frames are made; "
                             "pass one (retiming places each output frame at its own time)")
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
