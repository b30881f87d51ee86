"""The bundled real clips and triplet datasets (Middlebury/Vimeo layouts) as `Triplet`s."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import av.logging
import numpy as np

from rifelab.frames.images import DataError, check_same_size, natural_key, read_image
from rifelab.frames.video import _resolve_clip, read_video

log = logging.getLogger(__name__)


@dataclass
class Triplet:
    """Two outer frames and the true middle one, uint8 (H, W, 3)."""

    name: str
    frame0: np.ndarray
    gt: np.ndarray
    frame2: np.ndarray


def clip_info(name_or_path: str | os.PathLike) -> dict[str, float | int | str]:
    """Width, height, frame count and frame rate of a video (name of a bundled clip or a path)."""
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
