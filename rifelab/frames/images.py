"""Images: decode (EXIF orientation, alpha, bit depth checks), encode, numbered frame folders, tensor conversion."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Sequence

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from rifelab.publish.results import atomic_path

log = logging.getLogger(__name__)


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


EXIF_ORIENTATION = 0x0112


class DataError(ValueError):
    """Input frames or folders that cannot be used, with the reason and the fix."""


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
    p, arr = _decode_image(path)
    return to_rgb_uint8(arr, str(p))


def _decode_image(path: str | os.PathLike) -> tuple[Path, np.ndarray]:
    """The checked path and the decoded array of an image file, EXIF orientation applied (any channels)."""
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
    return p, _apply_orientation(np.asarray(arr), orientation)


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


def image_has_alpha(path: str | os.PathLike) -> bool:
    """True when the image file carries an alpha channel (RGBA or gray+alpha), transparent or not."""
    try:
        props = iio.improps(Path(path))
    except Exception:  # noqa: BLE001 - unreadable files are reported by the reader
        return False
    shape = props.shape
    return (len(shape) == 3 and shape[2] in (2, 4)) or _palette_transparency(Path(path))


def _palette_transparency(path: Path) -> bool:
    """True for a palette (or gray/RGB) image whose transparency is a tRNS entry, which imageio decodes as opaque."""
    try:
        with Image.open(path) as im:
            return im.mode in ("P", "L", "RGB") and "transparency" in im.info
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return False


def read_image_rgba(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGBA uint8 (H, W, 4), keeping its alpha (255 where the file has none); as `read_image`."""
    p, arr = _decode_image(path)
    if _palette_transparency(p):  # palette transparency: through Pillow's RGBA conversion, then as any RGBA
        with Image.open(p) as im:
            arr = _apply_orientation(np.asarray(im.convert("RGBA")), _inspect_image(p)[0])
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        colour, alpha = arr[:, :, :-1], arr[:, :, -1:]
    else:
        colour, alpha = arr, None
    rgb = to_rgb_uint8(colour, str(p))
    a = to_rgb_uint8(alpha, str(p))[:, :, :1] if alpha is not None else np.full(rgb.shape[:2] + (1,), 255, np.uint8)
    return np.ascontiguousarray(np.concatenate([rgb, a], axis=2))


def image_bit_depth(path: str | os.PathLike) -> int:
    """Bits per colour sample of an image file: 16 for 16-bit PNG or TIFF, else 8 (read from the header only)."""
    p = Path(path)
    try:
        if p.suffix.lower() == ".png":
            with open(p, "rb") as fh:
                head = fh.read(26)
            return 16 if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 26 and head[24] == 16 else 8
        if p.suffix.lower() in (".tif", ".tiff"):
            return 16 if iio.improps(p).dtype.itemsize == 2 else 8
    except Exception:  # noqa: BLE001 - unreadable files are reported by the reader
        return 8
    return 8


def read_image_deep(path: str | os.PathLike) -> np.ndarray:
    """Read a 16-bit image (PNG, TIFF; gray or RGB, opaque) as uint16 RGB (H, W, 3) at its full depth.

    Pillow, behind imageio, decodes 16-bit RGB PNG as 8 bits; FFmpeg's PNG decoder (PyAV) keeps them.
    """
    p = Path(path)
    orientation, _ = _inspect_image(p)
    if p.suffix.lower() == ".png":
        import av  # optional here: the GPU machine of the device run has no PyAV (tests/test_device_run.py)

        try:
            with av.open(str(p)) as c:
                frame = next(c.decode(video=0))
                alpha = "a" in frame.format.name.replace("gray", "")
                arr = frame.to_ndarray(format="rgba64le" if alpha else "rgb48le")
        except (av.error.FFmpegError, StopIteration) as exc:
            raise DataError(f"cannot read image {p}: the file is corrupt or not a 16-bit PNG ({exc})") from exc
    else:
        arr = np.asarray(iio.imread(p))
    arr = _apply_orientation(arr, orientation)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        if (arr[:, :, -1] != np.iinfo(arr.dtype).max).any():
            raise DataError(f"{p}: 16-bit image with transparency; rifelab keeps 16 bits for opaque frames only. "
                            "Flatten it, or pass --allow-8bit to interpolate it as 8-bit RGBA")
        arr = arr[:, :, :-1] if arr.shape[2] == 4 else np.repeat(arr[:, :, :1], 3, axis=2)
    if arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] != 3:
        raise DataError(f"{p}: expected a 16-bit gray or RGB image, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)


def write_image(path: str | os.PathLike, frame: np.ndarray) -> Path:
    """Write an RGB uint8 frame atomically (temporary name, then rename); format from the suffix."""
    p = Path(path)
    ext = p.suffix.lower()
    with atomic_path(p) as tmp:
        iio.imwrite(tmp, frame, extension=ext)
    return p


def encode_image(frame: np.ndarray, ext: str = "png") -> bytes:
    """An RGB uint8 frame encoded as an image file's bytes (format from `ext`: png, jpg, tif, bmp, webp).

    A uint16 RGB frame is written at 16 bits: PNG by FFmpeg's encoder (Pillow cannot), TIFF by imageio.
    """
    ext = ext.lower().lstrip(".")
    if frame.dtype == np.uint16:
        if ext == "png":
            return _encode_png16(frame)
        if ext not in ("tif", "tiff"):
            raise DataError(f"{ext} cannot store 16-bit frames; use png or tif")
    return iio.imwrite("<bytes>", frame, extension="." + ext)


def _encode_png16(frame: np.ndarray) -> bytes:
    """A uint16 (H, W, 3) frame as 16-bit RGB PNG bytes (FFmpeg's PNG encoder through PyAV)."""
    import av  # optional here: the GPU machine of the device run has no PyAV (tests/test_device_run.py)

    h, w = frame.shape[:2]
    ctx = av.codec.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "rgb48be"
    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb48le")
    return b"".join(bytes(p) for p in [*ctx.encode(vf), *ctx.encode(None)])


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


def to_tensor(frames: np.ndarray | Sequence[np.ndarray], device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (H,W,3) or (N,H,W,3) frames -> float32 (N,3,H,W) in [0, 1]; uint16 frames (16-bit) are divided by 65535."""
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise DataError(f"expected uint8 frames (N,H,W,3), got shape {arr.shape}")
    if arr.dtype == np.uint16:  # torch has no uint16 arithmetic on every version: widen first
        return torch.from_numpy(arr.astype(np.float32)).to(device).permute(0, 3, 1, 2).div_(65535.0)
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def rgb8_view(frame: np.ndarray) -> np.ndarray:
    """The RGB planes of a frame as uint8 (16-bit frames shifted down): what scene tests compare."""
    rgb = frame[..., :3]
    return rgb if rgb.dtype == np.uint8 else (rgb >> 8).astype(np.uint8)


def to_uint16(frames: torch.Tensor) -> np.ndarray:
    """float (N,3,H,W) in [0, 1] -> uint16 (N,H,W,3) (16-bit frames), rounded."""
    x = frames.detach().float().clamp(0, 1).mul(65535.0).round().to(torch.int32)
    return x.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint16)


def resize(frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """float (N,3,H,W) frames in [0, 1] resized (bicubic, clamped to [0, 1]) to width x height; same tensor if they fit."""
    if frames.shape[-2:] == (height, width):
        return frames
    return F.interpolate(frames, size=(height, width), mode="bicubic", align_corners=False).clamp_(0, 1)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """float (N,3,H,W) in [0, 1] -> uint8 (N,H,W,3), rounded as the official benchmark does."""
    x = frames.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
