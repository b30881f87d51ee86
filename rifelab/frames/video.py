"""Video decoding with PyAV that reports damage (decode errors, frames missing against the container's count)."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Sequence

import av
import av.logging
import numpy as np

from rifelab.frames.assets import ASSETS, CLIPS, fetch
from rifelab.frames.images import DataError

log = logging.getLogger(__name__)


MAX_REPORTED_ERRORS = 20


def _resolve_clip(name_or_path: str | os.PathLike) -> Path:
    s = str(name_or_path)
    if s in ASSETS:
        return fetch(s)
    p = Path(s).expanduser()
    if not p.exists():
        raise DataError(f"clip {s!r} is neither a bundled clip ({', '.join(CLIPS)}) nor an existing video file")
    return p


@dataclass
class VideoDamage:
    """What a damaged video lost: frames the container promised but did not decode, and decoder errors."""

    path: str
    expected: int | None  # frames the container states (its frame count, or duration x frame rate)
    decoded: int
    lost: list[int] = field(default_factory=list)  # input frame indices (by timestamp) that did not decode
    errors: list[str] = field(default_factory=list)  # decoder/demuxer error messages, first few
    error_frames: list[int] = field(default_factory=list)  # frames decoded while the decoder reported errors

    def describe(self) -> str:
        """One sentence: counts, the lost frames and the first error."""
        parts = [f"{self.path}: decoded {self.decoded} frames"
                 + (f" of the {self.expected} the container states" if self.expected is not None else "")]
        if self.lost:
            parts.append(f"lost input frames {_ranges(self.lost)}")
        if self.error_frames:
            parts.append(f"errors reported while decoding frames {_ranges(self.error_frames)} (kept with concealed "
                         "damage)")
        if self.errors:
            parts.append(f"first error: {self.errors[0]}")
        return "; ".join(parts)


def _ranges(indices: Sequence[int], limit: int = 8) -> str:
    """'3-5, 9, 12-19' for sorted unique indices (at most `limit` ranges, then '...')."""
    runs: list[list[int]] = []
    for i in sorted(set(indices)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    text = [f"{a}-{b}" if b > a else f"{a}" for a, b in runs[:limit]]
    return ", ".join(text) + (", ..." if len(runs) > limit else "")


def _expected_frames(container: Any, stream: Any) -> tuple[int | None, bool, float | None]:
    """(frames the container states, exact?, seconds it states): its frame count, or its duration x average rate
    when that is smaller (an edit list that trims frames, as `ffmpeg -ss ... -c copy` writes, keeps them in the
    count) or when there is no count (Matroska). A count from the duration is approximate (+-1 frame), and for a
    variable-frame-rate file it is no count at all: `read_video` then checks the decoded frames' time span instead."""
    counted = int(stream.frames) if stream.frames else None
    rate = stream.average_rate or stream.guessed_rate
    timed: int | None = None
    seconds: float | None = None
    if stream.duration is not None and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif _tag_seconds(stream.metadata.get("DURATION")) is not None:  # Matroska writes one per track
        seconds = _tag_seconds(stream.metadata.get("DURATION"))
    elif container.duration is not None and len(container.streams) == 1:  # else it may be the audio's
        seconds = container.duration / 1_000_000
    if rate and seconds is not None:
        timed = int(round(seconds * float(rate)))
    if counted is not None and (timed is None or counted <= timed):
        return counted, True, seconds
    return timed, False, seconds


def frame_times(path: str | os.PathLike) -> list[Fraction] | None:
    """Presentation times (seconds, exact, from the first frame) of a video's frames, read from its packets
    without decoding; None when the container gives no timestamps."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size)
            base = stream.time_base
    except (av.error.FFmpegError, IndexError):
        return None
    if not pts or base is None:
        return None
    return [Fraction(p - pts[0]) * base for p in pts]


def constant_rate(times: Sequence[Fraction]) -> bool:
    """True when frame times are evenly spaced (within a timestamp tick and 1%), i.e. not variable frame rate."""
    steps = [b - a for a, b in zip(times, times[1:])]
    if len(steps) < 2:
        return True
    mean = (times[-1] - times[0]) / len(steps)
    tick = min((st for st in steps if st > 0), default=mean) / 50
    return all(abs(st - mean) <= max(mean / 100, tick, Fraction(1, 1000)) for st in steps)


def _tag_seconds(tag: str | None) -> float | None:
    """Seconds of a 'HH:MM:SS.fraction' duration tag, or None."""
    m = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d*)?)", (tag or "").strip())
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)) if m else None


def _find_lost(found: VideoDamage, exact: bool, gaps: list[int], last_index: int, span: list[float],
               stated_seconds: float | None, rate: Any) -> bool:
    """Fill `found.lost` (and `expected`) and say whether frames were lost.

    With a stated frame count, or decode errors, frames missing by timestamp are lost. Without a count
    (Matroska, WebM) gaps between timestamps are a variable frame rate, not a loss: only a decoded span
    shorter than the stated duration (a cut-off tail) is.
    """
    if exact or found.errors:
        short = found.expected is not None and found.decoded < found.expected - (0 if exact else 1)
        if short:  # name the lost frames: gaps in the timestamps, then the missing tail
            found.lost = gaps + list(range(last_index + 1, found.expected))
        return short
    tail = 0
    if rate and span and stated_seconds is not None:
        tail = int(round((stated_seconds - (span[1] - span[0])) * float(rate)))
    found.expected = last_index + 1 + tail if tail >= 2 else None
    if tail >= 2:
        found.lost = list(range(last_index + 1, last_index + 1 + tail))
    return tail >= 2


def read_video(
    name_or_path: str | os.PathLike, allow_damaged: bool = False, damage: list[VideoDamage] | None = None,
    deep: bool = False,
) -> Iterator[np.ndarray]:
    """Decode every frame of a video as uint8 RGB (H, W, 3), checking that none was lost.

    A decode error, a demuxer error or fewer frames than the container states (its frame count, or its
    duration x frame rate) raises DataError once the stream ends, naming the lost frames; with
    `allow_damaged` the frames that did decode are used and the VideoDamage is logged and appended to
    `damage`. Bad packets are skipped, so decoding continues after a damaged stretch.
    `deep`: frames are uint16 RGB (rgb48), keeping 10-, 12- or 16-bit samples.
    """
    path = _resolve_clip(name_or_path)
    found = VideoDamage(str(path), None, 0)
    span: list[float] = []  # [first pts, last pts + its duration] in seconds
    gaps: list[int] = []  # frame indices skipped by the timestamps (a VFR video has such gaps too)
    last_index = -1
    level, skip = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_level(av.logging.ERROR)  # libav reports concealed decode errors only in its log
    av.logging.set_skip_repeated(False)  # else a second read of the same file would see no errors
    try:
        with av.logging.Capture(False) as logs, av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path} has no video stream")
            stream = container.streams.video[0]
            found.expected, exact, stated_seconds = _expected_frames(container, stream)
            rate = stream.average_rate or stream.guessed_rate
            step = float(1 / (rate * stream.time_base)) if rate and stream.time_base else None
            first_pts: int | None = None
            scanned = 0
            ours = {container.format.name, stream.codec_context.name}  # not the encoder of an output, say

            def new_errors() -> list[str]:
                nonlocal scanned
                fresh, scanned = list(logs[scanned:]), len(logs)
                return [m.strip() for lv, name, m in fresh if lv <= av.logging.ERROR and name in ours]

            def frames() -> Iterator[Any]:
                try:
                    for packet in container.demux(stream):
                        try:
                            yield from packet.decode()
                        except av.error.FFmpegError as exc:  # skip the bad packet, go on with the next
                            found.errors.append(f"decoding a packet failed: {exc}")
                except av.error.FFmpegError as exc:
                    found.errors.append(f"reading the file failed: {exc}")

            for frame in frames():
                index = last_index + 1
                if step and frame.pts is not None:
                    first_pts = frame.pts if first_pts is None else first_pts
                    index = max(index, int(round((frame.pts - first_pts) / step)))
                gaps.extend(range(last_index + 1, index))
                last_index = index
                if frame.pts is not None and stream.time_base:
                    start = float(frame.pts * stream.time_base)
                    length = float(frame.duration * stream.time_base) if frame.duration else (step or 0) * float(
                        stream.time_base)
                    span[:] = [span[0] if span else start, start + length]
                logged = new_errors()
                if logged:
                    found.errors.extend(logged)
                    found.error_frames.append(index)
                found.decoded += 1
                yield frame.to_ndarray(format="rgb48le" if deep else "rgb24")
            found.errors.extend(new_errors())
    except av.error.FFmpegError as exc:
        raise DataError(f"cannot decode video {path}: {exc}; the file is damaged or not a video") from exc
    finally:
        av.logging.set_level(level)
        av.logging.set_skip_repeated(skip)
    del found.errors[MAX_REPORTED_ERRORS:]
    short = _find_lost(found, exact, gaps, last_index, span, stated_seconds, rate)
    if short or found.errors:
        if not allow_damaged:
            raise DataError(
                f"damaged video: {found.describe()}. Repair or re-export the file, or pass --allow-damaged-input "
                "(API: allow_damaged=True) to continue with the frames that decoded"
            )
        log.warning("damaged video, continuing with the frames that decoded: %s", found.describe())
        if damage is not None:
            damage.append(found)
