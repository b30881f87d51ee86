"""Synthetic ground truth for co-alignment, and the ``.npz`` layout for real RollingDepth snippets.

The synthetic video is ray-cast: a pinhole camera moves and turns through a box-shaped room that
holds a static cube and a moving sphere, giving metric depth ``D`` per pixel (distance along the
optical axis). Snippets follow the RollingDepth co-alignment recipe: take ``1/D`` for the
frames of each snippet, normalise them jointly by their 2nd/98th percentiles to [-1, 1], then apply a
random per-snippet scale ``exp(U(-a, a))``, shift ``U(-b, b)`` and Gaussian pixel noise. The truth
is therefore known exactly: before noise, snippet ``i`` equals ``true_scale[i] / D + true_shift[i]``.

Real snippets: save them before alignment with one array per dilation, key ``dilation{d}``
(``d`` the *requested* dilation), shape ``(S_d, L, H, W)`` (or ``(S_d, L, 1, H, W)``), and optionally
an integer scalar ``num_frames``; :func:`load_snippets_npz` validates and returns a SnippetSet.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rifelab.depth.snippets import SnippetSet, effective_dilation, snippet_frames
from rifelab.publish.results import atomic_path

log = logging.getLogger(__name__)

__all__ = ["render_room_depth", "make_snippets", "SyntheticVideo", "synthetic_video", "save_snippets_npz", "load_snippets_npz"]

_ROOM_LO = np.array([-3.0, -1.5, -5.0])
_ROOM_HI = np.array([3.0, 1.5, 5.0])
_CUBE_LO = np.array([-2.4, -1.5, 0.5])
_CUBE_HI = np.array([-1.2, -0.3, 1.7])
_SPHERE_R = 0.7


def _rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _box_interior_exit(o: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Ray parameter where rays from ``o`` (inside the room) leave it."""
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.where(r > 0, _ROOM_HI, _ROOM_LO)
        lam = (bound - o) / r
    lam = np.where(np.abs(r) > 1e-12, lam, np.inf)
    return lam.min(-1)


def _box_entry(o: np.ndarray, r: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Ray parameter where rays enter an axis-aligned box from outside (inf where they miss)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - o) / r, (hi - o) / r
    t1 = np.where(np.isnan(t1), -np.inf, t1)
    t2 = np.where(np.isnan(t2), np.inf, t2)
    near = np.minimum(t1, t2).max(-1)
    far = np.maximum(t1, t2).min(-1)
    return np.where((near <= far) & (near > 1e-6), near, np.inf)


def _sphere_entry(o: np.ndarray, r: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    oc = o - centre
    a = (r * r).sum(-1)
    b = 2.0 * (r * oc).sum(-1)
    c = (oc * oc).sum(-1) - radius**2
    disc = b * b - 4 * a * c
    root = np.sqrt(np.maximum(disc, 0.0))
    lam = (-b - root) / (2 * a)
    return np.where((disc >= 0) & (lam > 1e-6), lam, np.inf)


def render_room_depth(frames: int, height: int, width: int, fov_deg: float = 60.0, seed: int = 0) -> np.ndarray:
    """Metric depth ``(T, H, W)`` float32 of a camera moving through a room with a cube and a moving sphere.

    The camera travels 5 m forward with a lateral sway and a slow turn; the sphere rolls across
    the room and bounces. ``seed`` shifts the phases of the motions.
    """
    if frames < 1 or height < 2 or width < 2:
        raise ValueError(f"need frames >= 1 and a frame of at least 2x2 px, got {frames}x{height}x{width}")
    rng = np.random.default_rng(seed)
    ph = rng.uniform(0, 2 * np.pi, size=4)
    f = 0.5 * width / np.tan(np.radians(fov_deg) / 2)
    u = np.arange(width) - (width - 1) / 2
    v = np.arange(height) - (height - 1) / 2
    rays = np.stack(np.broadcast_arrays(u[None, :] / f, -v[:, None] / f, np.ones((height, width))), -1)
    out = np.empty((frames, height, width), dtype=np.float32)
    for k in range(frames):
        tau = k / max(frames - 1, 1)
        cam = np.array([0.8 * np.sin(2 * np.pi * tau + ph[0]), 0.2 * np.sin(4 * np.pi * tau + ph[1]), -4.0 + 5.0 * tau])
        R = _rot_y(0.35 * np.sin(2 * np.pi * 0.7 * tau + ph[2])) @ _rot_x(0.08 * np.sin(2 * np.pi * tau))
        r = rays @ R.T  # camera-frame z is 1, so the ray parameter is the z-depth
        centre = np.array(
            [
                1.6 * np.cos(2 * np.pi * 1.3 * tau + ph[3]),
                _ROOM_LO[1] + _SPHERE_R + 0.9 * abs(np.sin(3 * np.pi * tau)),
                3.0 + 0.8 * np.sin(2 * np.pi * tau),
            ]
        )
        lam = _box_interior_exit(cam, r)
        lam = np.minimum(lam, _box_entry(cam, r, _CUBE_LO, _CUBE_HI))
        lam = np.minimum(lam, _sphere_entry(cam, r, centre, _SPHERE_R))
        out[k] = lam
    if not (np.isfinite(out).all() and (out > 0).all()):
        raise RuntimeError("renderer produced invalid depth; the camera left the room")
    return out


def make_snippets(
    depth: np.ndarray,
    dilations: Sequence[int] = (1, 10, 25),
    snippet_length: int = 3,
    scale_jitter: float = 0.2,
    shift_jitter: float = 0.1,
    noise_std: float = 0.02,
    dtype: str = "float32",
    seed: int = 0,
) -> tuple[SnippetSet, dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Snippets from metric depth ``(T, H, W)`` by the spec's recipe; returns (snippets, true_scale, true_shift).

    ``true_scale[d][i]``, ``true_shift[d][i]`` map the true inverse depth to snippet ``i`` of
    requested dilation ``d`` before noise: ``snippet = true_scale / depth + true_shift``.
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 3:
        raise ValueError(f"depth must be (T, H, W), got shape {depth.shape}")
    if min(scale_jitter, shift_jitter, noise_std) < 0:
        raise ValueError("scale_jitter, shift_jitter and noise_std must be >= 0")
    T = depth.shape[0]
    inv = 1.0 / depth
    rng = np.random.default_rng(seed)
    arrays: dict[int, np.ndarray] = {}
    scales: dict[int, np.ndarray] = {}
    shifts: dict[int, np.ndarray] = {}
    for d in dilations:
        de = effective_dilation(int(d), T, snippet_length)
        S = T - (snippet_length - 1) * de
        idx = snippet_frames(S, snippet_length, de).numpy()
        x = inv[idx]  # (S, L, H, W)
        lo, hi = np.percentile(x.reshape(S, -1), [2, 98], axis=1)
        span = np.maximum(hi - lo, 1e-12)
        s = np.exp(rng.uniform(-scale_jitter, scale_jitter, size=S))
        t = rng.uniform(-shift_jitter, shift_jitter, size=S)
        a = s * 2.0 / span  # snippet = a * inv + b
        b = s * (-2.0 * lo / span - 1.0) + t
        y = a[:, None, None, None] * x + b[:, None, None, None]
        if noise_std > 0:
            y = y + rng.normal(0.0, noise_std, size=y.shape)
        arrays[int(d)] = y.astype(dtype)
        scales[int(d)], shifts[int(d)] = a, b
    return SnippetSet.from_arrays(arrays, num_frames=T), scales, shifts


@dataclass
class SyntheticVideo:
    """A synthetic depth video, its snippets and the true per-snippet affine maps."""

    depth: np.ndarray  # (T, H, W) metric depth
    snippets: SnippetSet
    true_scale: dict[int, np.ndarray]
    true_shift: dict[int, np.ndarray]

    @property
    def inverse_depth(self) -> np.ndarray:
        return 1.0 / self.depth


def synthetic_video(
    frames: int,
    height: int,
    width: int,
    dilations: Sequence[int] = (1, 10, 25),
    snippet_length: int = 3,
    scale_jitter: float = 0.2,
    shift_jitter: float = 0.1,
    noise_std: float = 0.02,
    dtype: str = "float32",
    seed: int = 0,
) -> SyntheticVideo:
    """Render the room scene and make snippets from it (see module docstring)."""
    depth = render_room_depth(frames, height, width, seed=seed)
    snips, s, t = make_snippets(depth, dilations, snippet_length, scale_jitter, shift_jitter, noise_std, dtype, seed + 1)
    return SyntheticVideo(depth, snips, s, t)


def save_snippets_npz(path: str | os.PathLike, snippets: SnippetSet | Mapping[int, Any], num_frames: int | None = None) -> Path:
    """Save snippets as ``.npz``: ``dilation{d}`` arrays ``(S_d, L, H, W)`` plus ``num_frames``."""
    if isinstance(snippets, SnippetSet):
        num_frames = snippets.num_frames
        arrays = {d: a.numpy() for d, a in snippets.as_dict().items()}
    else:
        arrays = {int(d): np.asarray(a) for d, a in snippets.items()}
        SnippetSet.from_arrays(arrays, num_frames=num_frames)  # validate before writing
    payload: dict[str, Any] = {f"dilation{d}": a for d, a in arrays.items()}
    if num_frames is not None:
        payload["num_frames"] = np.asarray(int(num_frames))
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **payload)
    return path


def load_snippets_npz(path: str | os.PathLike, num_frames: int | None = None) -> SnippetSet:
    """Load snippets saved from a RollingDepth run (layout in the module docstring) and validate them."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"snippet file not found: {path}")
    arrays: dict[int, np.ndarray] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            m = re.fullmatch(r"dilation(\d+)", key)
            if m:
                arrays[int(m.group(1))] = data[key]
            elif key == "num_frames" and num_frames is None:
                num_frames = int(data[key])
            elif key != "num_frames":
                log.warning("%s: ignoring array %r (expected keys dilation{d} and num_frames)", path, key)
    if not arrays:
        raise ValueError(f"{path} holds no 'dilation{{d}}' arrays (found {sorted(data.files)}); see rifelab.depth.synthetic")
    return SnippetSet.from_arrays(dict(sorted(arrays.items())), num_frames=num_frames)
