"""What an interpolation run produces: the output slots of every input pair, `InterpolateConfig` and the run summary.

`make_schedule` gives the model calls inside one pair for `--multi` (direct or recursive); `OutputSchedule`
turns that, or a retiming ratio, into output slots (index, position, sources, timestep, level), which the
one pipeline (rifelab.interpolate.pipeline) consumes. `InterpolateConfig.output_count` is the frame count.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rifelab.frames.images import DataError
from rifelab.frames.scenes import SceneThresholds
from rifelab.rife.network import check_scale

log = logging.getLogger(__name__)


VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")


def is_video_path(path: Path) -> bool:
    """Whether `path` names a video file (by its suffix), as opposed to a folder of frames."""
    return path.suffix.lower() in VIDEO_EXTENSIONS


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
        """Every model call of a pair, level after level."""
        return tuple(s for level in self.levels for s in level)


def _check_multi(multi: int) -> int:
    """`multi` as an int, or ValueError saying what --multi means and its limits."""
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


@dataclass(frozen=True)
class Slot:
    """One output frame between input frames p and p+1, and where it comes from.

    `index` is its output frame number and `at` its position between the two input frames (0: the first,
    below 1). Level 0 is a copy of the first input frame; a slot of level L >= 1 is made by the model at
    local timestep `t` from the frames at positions `left` and `right` of the same pair (0 and 1 are the
    input frames, anything between is a slot of an earlier level).
    """

    index: int
    at: Fraction
    left: Fraction
    right: Fraction
    t: float
    level: int

    @property
    def is_original(self) -> bool:
        return self.level == 0


_FIRST, _SECOND = Fraction(0), Fraction(1)


@dataclass(frozen=True)
class OutputSchedule:
    """The output slots of every input pair, for `--multi` (direct or recursive) and retiming alike.

    `ratio` is output frames per input frame (N-1 for `--multi N`); `levels` the number of model-call
    levels (0: every output frame is a copy); `width` the model frames one pair needs in a level, which
    fixes how many pairs share a model batch. `--multi` repeats the slots of pair 0 (`pattern`) every N-1
    output frames; retiming derives each pair's slots from the ratio.
    """

    ratio: Fraction
    levels: int
    width: int
    pattern: tuple[Slot, ...] | None = None
    times: tuple[Fraction, ...] | None = None  # retiming a variable-rate input: frame i's position (input frames)

    @classmethod
    def for_multi(cls, schedule: Schedule) -> OutputSchedule:
        """Slots of `--multi`: the original, then one slot per model call of `schedule` (level = its depth + 1)."""
        n = schedule.multi
        made = {st.target: (st, depth + 1) for depth, level in enumerate(schedule.levels) for st in level}
        pattern = [Slot(0, _FIRST, _FIRST, _FIRST, 0.0, 0)]
        for k in range(1, n - 1):
            st, level = made[k]
            pattern.append(Slot(k, Fraction(k, n - 1), Fraction(st.left, n - 1), Fraction(st.right, n - 1), st.t,
                                level))
        width = len(schedule.levels[0]) if schedule.levels else 1
        return cls(Fraction(n - 1), len(schedule.levels), width, tuple(pattern))

    @classmethod
    def for_ratio(cls, ratio: Fraction, times: Sequence[Fraction] | None = None) -> OutputSchedule:
        """Slots of a retimed run: output frame k at input position k / ratio, made from the frames around it.

        `times`: where each input frame lies on the input's time axis, in input frames (a variable-frame-rate
        video's timestamps x its average rate); without them frame i lies at i.
        """
        return cls(ratio, 1, max(1, _ceil(ratio)), None, None if times is None else tuple(times))

    def position(self, frame: int) -> Fraction:
        """Where input frame `frame` lies on the input's time axis, in input frames."""
        if self.times is None:
            return Fraction(frame)
        if frame >= len(self.times):
            raise DataError(f"the input decoded more frames than its {len(self.times)} timestamps; re-export it at a "
                            "constant frame rate, or pass --input-fps to treat it as one")
        return self.times[frame]

    def slots(self, pair: int) -> list[Slot]:
        """The output slots between input frames `pair` and `pair`+1, in output order."""
        if self.pattern is not None:
            base = pair * int(self.ratio)
            return [Slot(base + s.index, s.at, s.left, s.right, s.t, s.level) for s in self.pattern]
        r = self.ratio
        a, b = self.position(pair), self.position(pair + 1)
        out = []
        for k in range(_ceil(a * r), _ceil(b * r)):
            at = (Fraction(k) / r - a) / (b - a)
            out.append(Slot(k, at, _FIRST, _FIRST, 0.0, 0) if at == 0 else Slot(k, at, _FIRST, _SECOND, float(at), 1))
        return out

    @property
    def makes_frames(self) -> bool:
        """Whether any slot comes from the model (`--multi 2` only copies)."""
        return self.levels > 0

    def pairs_per_group(self, batch_size: int) -> int:
        """Pairs sent to the model together: fixed groups, so a resumed run makes the same model calls."""
        return max(1, batch_size // max(1, self.width))

    def output_count(self, input_frames: int) -> int:
        """Output frames of `input_frames` input frames (see `retime_count`)."""
        if self.times is not None:
            return int(self.position(input_frames - 1) * self.ratio) + 1
        return retime_count(input_frames, self.ratio)

    def closing_index(self, pairs: int) -> int | None:
        """Output index of the last input frame after `pairs` pairs, or None when no output frame falls on it."""
        end = self.position(pairs) * self.ratio
        return int(end) if end.denominator == 1 else None


def _ceil(x: Fraction) -> int:
    """Exact ceiling of a fraction."""
    return int(-(-x // 1))


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
        """Check --target-fps / --fps-ratio (one of them, positive, not with --recursive)."""
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
            return as_fraction(self.target_fps) / as_fraction(input_fps)
        return None

    @property
    def schedule(self) -> Schedule:
        """The model calls inside one pair for `multi` (direct or recursive)."""
        return make_schedule(self.multi, self.recursive)

    def frame_ratio(self, input_fps: float = DEFAULT_INPUT_FPS) -> Fraction:
        """Output frames per input frame: the retiming ratio, or N-1 for --multi N."""
        ratio = self.retime_ratio(input_fps)
        return Fraction(self.multi - 1) if ratio is None else ratio

    def output_schedule(self, input_fps: float = DEFAULT_INPUT_FPS,
                        times: Sequence[Fraction] | None = None) -> OutputSchedule:
        """The output slots of a run on an input at `input_fps`.

        `times`: a variable-frame-rate video's frame times (seconds from the first frame); retiming places
        its output frames by them. --multi ignores them (its frames are placed between neighbours).
        """
        ratio = self.retime_ratio(input_fps)
        if ratio is None:
            return OutputSchedule.for_multi(self.schedule)
        positions = None if times is None else [t * as_fraction(input_fps) for t in times]
        return OutputSchedule.for_ratio(ratio, positions)

    def output_count(self, input_frames: int | None, input_fps: float = DEFAULT_INPUT_FPS,
                     times: Sequence[Fraction] | None = None) -> int | None:
        """Output frames of a run on `input_frames` frames at `input_fps` (None when the input count is unknown).

        The one frame-count formula (`OutputSchedule.output_count`): floor((T-1) x ratio) + 1, i.e.
        (N-1)(T-1)+1 for --multi N; a retimed variable-rate input counts to its last frame's time instead.
        """
        return self.output_schedule(input_fps, times).output_count(input_frames) if input_frames else None

    def output_fps(self, input_fps: float) -> float:
        """Frame rate of a video output: --fps, else the input rate times the frame ratio (same duration)."""
        ratio = self.retime_ratio(input_fps)
        if ratio is None:
            return self.fps or input_fps * (self.multi - 1)
        return self.fps or float(as_fraction(input_fps) * ratio)

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
        """The counts as a plain dict (JSON records), with frames_per_second."""
        d = asdict(self)
        d["frames_per_second"] = self.frames_per_second
        return d

    def describe(self) -> str:
        """The summary the CLI prints: a few lines of counts."""
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
            parts.append(f"{counted(self.recomputed_frames, 'frame')} of the earlier run no longer matched their "
                         "checksum and were computed again")
        if self.removed_temp_files:
            parts.append(f"removed {counted(self.removed_temp_files, 'temporary file')} left by an interrupted run")
        return "\n".join(parts)


def counted(n: int, noun: str) -> str:
    """'1 frame', '3 frames'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def as_fraction(value: float | Fraction | str) -> Fraction:
    """A frame rate as an exact fraction (30000/1001 stays 30000/1001 when given as a float)."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, str):
        return Fraction(value)
    return Fraction(value).limit_denominator(100000)


def parse_ratio(value: Fraction | str | float | int) -> Fraction:
    """A positive frame-rate ratio from "5/2", "2.5", 2.5 or Fraction(5, 2); ValueError otherwise."""
    try:
        r = as_fraction(value) if not isinstance(value, bool) else None
    except (ValueError, ZeroDivisionError, TypeError, OverflowError):
        r = None
    if r is None or r <= 0:
        raise ValueError(f"--fps-ratio must be a positive number or fraction such as 5/2 or 1.25, got {value!r}")
    return r


def retime_count(input_frames: int, ratio: Fraction) -> int:
    """Output frames at `ratio` output frames per input frame: every k with k / ratio <= T-1.

    That is floor((T-1) * ratio) + 1; `--multi N` is ratio N-1, giving (N-1)(T-1)+1.
    """
    return int((input_frames - 1) * ratio) + 1


def retime_positions(input_frames: int, ratio: Fraction) -> list[Fraction]:
    """Position of each output frame on the input's frame axis (k / ratio): frame k is shown at time k / output fps."""
    return [Fraction(k) / ratio for k in range(retime_count(input_frames, ratio))]
