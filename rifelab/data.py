"""Frames in and out: clips through PyAV, image files, numbered folders, benchmark triplet layouts.

All readers return RGB uint8 arrays of shape (H, W, 3) (clips: (T, H, W, 3)). Gray images are
expanded to RGB, opaque alpha is dropped, 16-bit images are rounded to 8 bits, and an EXIF
orientation tag is applied (frames come out the way image viewers show them); anything else
(real transparency, CMYK, animated files, float or exotic modes, empty files) is refused with an
error that says what to do. A frame folder whose names give two frames one number (1.png and
01.png) is refused: its order would be a guess.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import av
import av.logging
import imageio.v3 as iio
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataError",
    "Triplet",
    "load_clip",
    "read_video",
    "VideoDamage",
    "clip_info",
    "clip_triplets",
    "read_image",
    "write_image",
    "encode_image",
    "list_frames",
    "natural_key",
    "check_same_size",
    "to_tensor",
    "to_uint8",
    "read_triplet_dataset",
    "detect_layout",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
EXIF_ORIENTATION = 0x0112
MAX_REPORTED_ERRORS = 20


class DataError(ValueError):
    """Input frames or folders that cannot be used, with the reason and the fix."""


@dataclass
class Triplet:
    """Two outer frames and the true middle one, uint8 (H, W, 3)."""

    name: str
    frame0: np.ndarray
    gt: np.ndarray
    frame2: np.ndarray


# ----------------------------------------------------------------------------- clips


def _resolve_clip(name_or_path: str | os.PathLike) -> Path:
    from .assets import ASSETS, CLIPS, fetch

    s = str(name_or_path)
    if s in ASSETS:
        return fetch(s)
    p = Path(s).expanduser()
    if not p.exists():
        raise DataError(f"clip {s!r} is neither a bundled clip ({', '.join(CLIPS)}) nor an existing video file")
    return p


def clip_info(name_or_path: str | os.PathLike) -> dict[str, float | int | str]:
    """Width, height, frame count and frame rate of a video (name of a bundled clip or a path)."""
    import av

    path = _resolve_clip(name_or_path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {
            "path": str(path),
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "frames": stream.frames,
            "fps": float(stream.average_rate) if stream.average_rate else float("nan"),
        }


def load_clip(
    name_or_path: str | os.PathLike, max_frames: int | None = None, start: int = 0
) -> np.ndarray:
    """Decode a video (bundled clip name or path) to uint8 RGB frames (T, H, W, 3) with PyAV (see `read_video`)."""
    if start < 0 or (max_frames is not None and max_frames < 1):
        raise DataError(f"start must be >= 0 and max_frames >= 1, got start={start}, max_frames={max_frames}")
    path = _resolve_clip(name_or_path)
    frames: list[np.ndarray] = []
    decoded = read_video(path)  # a damaged file raises DataError when it is read to its end
    with contextlib.closing(decoded):
        for i, frame in enumerate(decoded):
            if i < start:
                continue
            frames.append(frame)
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise DataError(f"video {path} yielded no frames from index {start}")
    return np.stack(frames)


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


def _expected_frames(container: Any, stream: Any) -> tuple[int | None, bool]:
    """(frames the container states, exact?): its frame count, or its duration x average rate when that is
    smaller (an edit list that trims frames, as `ffmpeg -ss ... -c copy` writes, keeps them in the count)
    or when there is no count (Matroska). A count from the duration is approximate (+-1 frame)."""
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
        return counted, True
    return timed, False


def _tag_seconds(tag: str | None) -> float | None:
    """Seconds of a 'HH:MM:SS.fraction' duration tag, or None."""
    m = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d*)?)", (tag or "").strip())
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)) if m else None


def read_video(
    name_or_path: str | os.PathLike, allow_damaged: bool = False, damage: list[VideoDamage] | None = None
) -> Iterator[np.ndarray]:
    """Decode every frame of a video as uint8 RGB (H, W, 3), checking that none was lost.

    A decode error, a demuxer error or fewer frames than the container states (its frame count, or its
    duration x frame rate) raises DataError once the stream ends, naming the lost frames; with
    `allow_damaged` the frames that did decode are used and the VideoDamage is logged and appended to
    `damage`. Bad packets are skipped, so decoding continues after a damaged stretch.
    """
    path = _resolve_clip(name_or_path)
    found = VideoDamage(str(path), None, 0)
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
            found.expected, exact = _expected_frames(container, stream)
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
                logged = new_errors()
                if logged:
                    found.errors.extend(logged)
                    found.error_frames.append(index)
                found.decoded += 1
                yield frame.to_ndarray(format="rgb24")
            found.errors.extend(new_errors())
    except av.error.FFmpegError as exc:
        raise DataError(f"cannot decode video {path}: {exc}; the file is damaged or not a video") from exc
    finally:
        av.logging.set_level(level)
        av.logging.set_skip_repeated(skip)
    del found.errors[MAX_REPORTED_ERRORS:]
    short = found.expected is not None and found.decoded < found.expected - (0 if exact else 1)
    if short:  # name the lost frames: gaps in the timestamps, then the missing tail
        found.lost = gaps + list(range(last_index + 1, found.expected))
    if short or found.errors:
        if not allow_damaged:
            raise DataError(
                f"damaged video: {found.describe()}. Repair or re-export the file, or pass --allow-damaged-input "
                "(API: allow_damaged=True) to continue with the frames that decoded"
            )
        log.warning("damaged video, continuing with the frames that decoded: %s", found.describe())
        if damage is not None:
            damage.append(found)


def clip_triplets(
    frames: np.ndarray, stride: int = 1, count: int | None = None, step: int | None = None, start: int = 0
) -> Iterator[Triplet]:
    """Triplets (I0, I1 ground truth, I2) = frames[i], frames[i+stride], frames[i+2*stride].

    Consecutive triplets start `step` frames apart (default: 2*stride, so they don't overlap).
    """
    if stride < 1:
        raise DataError(f"stride must be >= 1, got {stride}")
    step = step or 2 * stride
    if step < 1:
        raise DataError(f"step must be >= 1, got {step}")
    n = len(frames)
    if n < 2 * stride + 1:
        raise DataError(f"a clip of {n} frames has no triplet at stride {stride}; need at least {2 * stride + 1} frames")
    made = 0
    for i in range(start, n - 2 * stride, step):
        if count is not None and made >= count:
            return
        yield Triplet(f"{i:05d}", frames[i], frames[i + stride], frames[i + 2 * stride])
        made += 1


# ----------------------------------------------------------------------------- images


def natural_key(path: str | os.PathLike) -> list:
    """Sort key that orders 'frame2' before 'frame10' (numbers compared as numbers)."""
    name = Path(path).name
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def to_rgb_uint8(arr: np.ndarray, source: str = "image") -> np.ndarray:
    """Convert a decoded image array to RGB uint8 (H, W, 3) or raise DataError saying why not."""
    if arr.dtype == np.uint16 or arr.dtype == np.int32 and arr.max(initial=0) > 255:
        log.info("%s: 16-bit image rounded to 8 bits", source)
        arr = np.clip((arr.astype(np.float64) / 257.0).round(), 0, 255).astype(np.uint8)
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.integer) and arr.min(initial=0) >= 0 and arr.max(initial=0) <= 255:
            arr = arr.astype(np.uint8)
        else:
            raise DataError(
                f"{source}: unsupported pixel type {arr.dtype}; save the frames as 8- or 16-bit PNG/JPEG/TIFF"
            )
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 2:  # gray + alpha
        if (arr[:, :, 1] != 255).any():
            raise DataError(f"{source}: has transparency (gray+alpha); flatten it onto a background first")
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        if (arr[:, :, 3] != 255).any():
            raise DataError(
                f"{source}: RGBA image with real transparency; RIFE interpolates RGB only. "
                "Flatten it onto a background (e.g. `convert in.png -background white -flatten out.png`) first"
            )
        arr = arr[:, :, :3]
    elif not (arr.ndim == 3 and arr.shape[2] == 3):
        raise DataError(f"{source}: unsupported image shape {arr.shape}; expected gray, RGB or RGBA")
    return np.ascontiguousarray(arr)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3), converting gray, opaque RGBA and 16-bit images.

    An EXIF orientation tag is applied (the array is what an image viewer shows). Empty files, CMYK
    images and animated or multi-page files are refused with a DataError saying what to do.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"image not found: {p}")
    if p.suffix.lower() not in IMAGE_EXTENSIONS:
        raise DataError(f"{p}: not an image file (expected one of {', '.join(IMAGE_EXTENSIONS)})")
    orientation, pil_error = _inspect_image(p)
    try:
        arr = iio.imread(p)
    except Exception as exc:  # noqa: BLE001 - imageio raises many types for corrupt files
        reason = pil_error or str(exc)
        raise DataError(f"cannot read image {p}: the file is corrupt or not a {p.suffix} image ({reason})") from exc
    if arr.ndim == 3 and arr.shape[0] in (1,) and arr.shape[2] not in (1, 2, 3, 4):
        arr = arr[0]
    if arr.ndim == 4:  # multi-page TIFF or animated image
        raise DataError(f"{p}: holds {arr.shape[0]} pages/frames; save one image per file")
    return to_rgb_uint8(_apply_orientation(np.asarray(arr), orientation), str(p))


def _inspect_image(p: Path) -> tuple[int, str | None]:
    """Check an image file with Pillow before decoding: (EXIF orientation 1-8, Pillow's error or None).

    Raises DataError for an empty file, a CMYK image or an animated/multi-frame file.
    """
    if p.stat().st_size == 0:
        raise DataError(f"{p} is empty (0 bytes): a copy or export that did not complete; write the frame again")
    try:
        with Image.open(p) as im:
            mode, frames = im.mode, int(getattr(im, "n_frames", 1) or 1)
            orientation = int(im.getexif().get(EXIF_ORIENTATION, 1) or 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        return 1, f"Pillow: {exc}"
    if mode == "CMYK":
        raise DataError(
            f"{p}: CMYK image (a print colour space); RIFE interpolates RGB. Convert it to RGB first, e.g. "
            "`convert in.jpg -colorspace sRGB out.png`"
        )
    if frames > 1:
        raise DataError(
            f"{p}: holds {frames} pages/frames (an animation or multi-page file); save one image per file, e.g. "
            f"`ffmpeg -i {p.name} frames/%08d.png`, and pass that folder"
        )
    return (orientation if 1 <= orientation <= 8 else 1), None


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a decoded (H, W[, C]) array as its EXIF orientation tag says (same result as PIL's exif_transpose)."""
    if orientation == 1:
        return arr
    log.debug("EXIF orientation %d applied", orientation)
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, k=1),
    }
    return np.ascontiguousarray(ops[orientation](arr))


def write_image(path: str | os.PathLike, frame: np.ndarray) -> Path:
    """Write an RGB uint8 frame atomically (temporary name, then rename); format from the suffix."""
    import imageio.v3 as iio

    from .results import atomic_path

    p = Path(path)
    ext = p.suffix.lower()
    with atomic_path(p) as tmp:
        iio.imwrite(tmp, frame, extension=ext)
    return p


def encode_image(frame: np.ndarray, ext: str = "png") -> bytes:
    """An RGB uint8 frame encoded as an image file's bytes (format from `ext`: png, jpg, tif, bmp, webp)."""
    return iio.imwrite("<bytes>", frame, extension="." + ext.lower().lstrip("."))


def list_frames(folder: str | os.PathLike, allow_other_files: bool = False) -> list[Path]:
    """Image files of a folder in numeric order; an empty folder or stray non-image files are errors."""
    d = Path(folder)
    if not d.exists():
        raise DataError(f"folder not found: {d}")
    if not d.is_dir():
        raise DataError(f"{d} is not a folder of frames")
    files = [f for f in d.iterdir() if f.is_file() and not f.name.startswith(".")]
    images = [f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS]
    others = sorted(f.name for f in files if f.suffix.lower() not in IMAGE_EXTENSIONS)
    if others and not allow_other_files:
        raise DataError(
            f"{d} holds files that are not images: {', '.join(others[:5])}{' …' if len(others) > 5 else ''}; "
            "move them out of the frame folder"
        )
    if not images:
        raise DataError(f"{d} holds no image frames ({', '.join(IMAGE_EXTENSIONS)})")
    ordered = sorted(images, key=natural_key)
    clashes = [(a.name, b.name) for a, b in zip(ordered, ordered[1:]) if natural_key(a) == natural_key(b)]
    if clashes:
        pairs = ", ".join(f"{a} and {b}" for a, b in clashes[:3])
        raise DataError(
            f"{d}: {pairs} carry the same frame number, so their order is ambiguous; rename the frames with one "
            "numbering (e.g. zero-padded 00000001.png) or move the duplicates out"
        )
    return ordered


def check_same_size(a: np.ndarray, b: np.ndarray, what: str = "frames") -> None:
    """Refuse two frames of different sizes, naming both."""
    if a.shape[:2] != b.shape[:2]:
        raise DataError(
            f"{what} differ in size: {a.shape[1]}x{a.shape[0]} vs {b.shape[1]}x{b.shape[0]} (WxH); "
            "every frame of a sequence must have the same size"
        )


# ----------------------------------------------------------------------------- tensors


def to_tensor(frames: np.ndarray | Sequence[np.ndarray], device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (H,W,3) or (N,H,W,3) frames -> float32 (N,3,H,W) in [0, 1]."""
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise DataError(f"expected uint8 frames (N,H,W,3), got shape {arr.shape}")
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """float (N,3,H,W) in [0, 1] -> uint8 (N,H,W,3), rounded as the official benchmark does."""
    x = frames.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


# ----------------------------------------------------------------------------- benchmark layouts


def detect_layout(root: str | os.PathLike) -> str:
    """'ucf101' | 'middlebury' | 'vimeo90k' for a dataset folder, or a DataError saying what was expected."""
    r = Path(root)
    if not r.is_dir():
        raise DataError(f"dataset folder not found: {r}")
    if (r / "tri_testlist.txt").exists() or (r / "sequences").is_dir() and any((r / "sequences").iterdir()):
        return "vimeo90k"
    if (r / "other-data").is_dir() or (r / "input").is_dir() and (r / "gt").is_dir():
        return "middlebury"
    if any((d / "frame_01_gt.png").exists() for d in r.iterdir() if d.is_dir()):
        return "ucf101"
    raise DataError(
        f"{r}: not a recognised triplet dataset. Expected UCF101/DVF (<triplet>/frame_00.png, frame_01_gt.png, "
        "frame_02.png), Middlebury other (other-data/<seq>/frame10.png, frame11.png + other-gt-interp/<seq>/"
        "frame10i11.png, or input/ + gt/), or Vimeo90K (sequences/<a>/<b>/im1..3.png + tri_testlist.txt)"
    )


def _load_triplet(name: str, p0: Path, pgt: Path, p2: Path) -> Triplet:
    a, gt, b = read_image(p0), read_image(pgt), read_image(p2)
    check_same_size(a, b, f"triplet {name}: outer frames")
    check_same_size(a, gt, f"triplet {name}: frame and ground truth")
    return Triplet(name, a, gt, b)


def read_triplet_dataset(
    root: str | os.PathLike, layout: str = "auto", limit: int | None = None
) -> Iterator[Triplet]:
    """Triplets of a UCF101 (DVF), Middlebury 'other' or Vimeo90K test set, in sorted order."""
    r = Path(root)
    layout = detect_layout(r) if layout == "auto" else layout
    entries: list[tuple[str, Path, Path, Path]] = []
    if layout == "ucf101":
        for d in sorted((d for d in r.iterdir() if d.is_dir()), key=natural_key):
            if (d / "frame_01_gt.png").exists():
                entries.append((d.name, d / "frame_00.png", d / "frame_01_gt.png", d / "frame_02.png"))
    elif layout == "middlebury":
        inp, gt = (r / "other-data", r / "other-gt-interp") if (r / "other-data").is_dir() else (r / "input", r / "gt")
        for d in sorted((d for d in gt.iterdir() if d.is_dir()), key=natural_key):
            entries.append((d.name, inp / d.name / "frame10.png", d / "frame10i11.png", inp / d.name / "frame11.png"))
    elif layout == "vimeo90k":
        listing = r / "tri_testlist.txt"
        if listing.exists():
            names = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
        else:
            names = sorted(f"{a.name}/{b.name}" for a in (r / "sequences").iterdir() if a.is_dir() for b in a.iterdir())
        for n in names:
            d = r / "sequences" / n
            entries.append((n, d / "im1.png", d / "im2.png", d / "im3.png"))
    else:
        raise DataError(f"unknown layout {layout!r}; expected auto, ucf101, middlebury or vimeo90k")
    if not entries:
        raise DataError(f"{r}: no triplets found in the {layout} layout")
    for i, (name, p0, pgt, p2) in enumerate(entries):
        if limit is not None and i >= limit:
            return
        missing = [p for p in (p0, pgt, p2) if not p.exists()]
        if missing:
            raise DataError(f"triplet {name}: missing {', '.join(str(m) for m in missing)}")
        yield _load_triplet(name, p0, pgt, p2)
