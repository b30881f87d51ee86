"""Frame sources of `rifelab interpolate`: a numbered image folder, a video, or arrays in memory."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import av
import numpy as np
from PIL import Image

from rifelab.frames.clips import clip_info
from rifelab.frames.images import (
    IMAGE_EXTENSIONS,
    DataError,
    image_bit_depth,
    image_has_alpha,
    list_frames,
    read_image,
    read_image_deep,
    read_image_rgba,
)
from rifelab.frames.video import VideoDamage, constant_rate, frame_times, read_video
from rifelab.interpolate.schedule import DEFAULT_INPUT_FPS

log = logging.getLogger(__name__)


class FrameSource:
    """Frames of an input, in order, as uint8 (H, W, 3); `count` may be None when unknown."""

    kind = "frames"
    alpha = False  # frames are RGBA (H, W, 4)
    depth = 8  # bits per sample of the input (10 for yuv420p10le video, 16 for 16-bit PNG)
    keep_depth = False  # set by the run when the output can hold `depth`: frames are then uint16
    rotation = 0  # a video's display rotation (degrees counter-clockwise): kept as a tag, or applied to frames
    has_audio = False
    path: Path | None = None
    fps: float = DEFAULT_INPUT_FPS
    count: int | None = None
    times: list | None = None  # a variable-frame-rate video's frame times (seconds from the first), else None

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
        self.depth = image_bit_depth(self.paths[0])

    def __iter__(self) -> Iterator[np.ndarray]:
        first: np.ndarray | None = None
        for p in self.paths:
            if self.keep_depth:
                frame = read_image_deep(p)
            else:
                frame = read_image_rgba(p) if self.alpha else read_image(p)
            if first is None:
                first = frame
            elif frame.shape != first.shape:
                raise _size_error(p.name, frame, self.paths[0].name, first)
            yield frame


class VideoSource(FrameSource):
    """A video file decoded with PyAV (first video stream)."""

    kind = "video"
    rotate_frames = False  # set by the run for a frame-folder output: frames are turned by `rotation`

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
                fmt = stream.codec_context.format
                self.depth = max((c.bits for c in fmt.components), default=8) if fmt is not None else 8
                self.count = int(stream.frames) or None
                self.has_audio = bool(container.streams.audio)  # copied into a video output that keeps the duration
                self.rotation = _display_rotation(container, stream)
        except av.error.FFmpegError as exc:
            raise DataError(
                f"cannot open {self.path} as a video ({exc}); pass a video file (mp4, mkv, mov, webm...) or a folder "
                "of numbered frames"
            ) from exc
        self.fps = float(fps) if fps else (rate or DEFAULT_INPUT_FPS)
        times = None if fps else frame_times(self.path)  # --input-fps: the user says the rate is constant
        if times is not None and not constant_rate(times):
            self.times = times
            self.count = self.count or len(times)
            log.info("%s has a variable frame rate (%d frames over %.3f s); its timestamps are used", self.path,
                     len(times), float(times[-1]))

    def __iter__(self) -> Iterator[np.ndarray]:
        frames = read_video(self.path, self.allow_damaged, self.damage, deep=self.keep_depth)  # damage -> DataError
        if not (self.rotate_frames and self.rotation % 360):
            yield from frames
            return
        for frame in frames:  # turned as a player shows them (the display matrix is counter-clockwise)
            yield np.ascontiguousarray(np.rot90(frame, k=round(self.rotation / 90) % 4))


def _display_rotation(container: Any, stream: Any) -> int:
    """Counter-clockwise display rotation of a video in degrees (its display matrix; 0 when none or not a
    multiple of 90), read from its first frame."""
    try:
        frame = next(container.decode(stream))
    except (StopIteration, av.error.FFmpegError):
        return 0
    rotation = int(round(getattr(frame, "rotation", 0) or 0))
    if rotation % 90:
        log.warning("display rotation of %d degrees is not a multiple of 90: ignored", rotation)
        return 0
    return rotation % 360


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

    `allow_damaged`: a damaged video gives the frames that decode (see `rifelab.frames.video.read_video`).
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


def frame_size(src: FrameSource) -> tuple[int, int] | None:
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
