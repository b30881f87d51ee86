"""RollingDepth snippets: dilation rules and `SnippetSet` (per-snippet inverse-depth predictions)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)


ArrayLike = Any  # np.ndarray | torch.Tensor


def max_dilation(num_frames: int, snippet_length: int = 3) -> int:
    """Largest dilation the reference allows for a video: ``int(T / L) - 1``."""
    return int(num_frames // snippet_length) - 1


def effective_dilation(dilation: int, num_frames: int, snippet_length: int = 3) -> int:
    """Requested dilation capped at :func:`max_dilation`, as the reference pipeline does."""
    if int(dilation) < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    cap = max_dilation(num_frames, snippet_length)
    if cap < 1:
        raise ValueError(
            f"a video of {num_frames} frames is too short for snippets of length {snippet_length}: "
            f"need at least {2 * snippet_length} frames"
        )
    return min(int(dilation), cap)


def snippet_frames(num_snippets: int, snippet_length: int, dilation: int, device: Any = None) -> torch.Tensor:
    """Frame index of every snippet slot, shape ``(S, L)``: snippet ``i`` covers ``i, i+d, i+2d, ...``."""
    i = torch.arange(num_snippets, device=device)[:, None]
    k = torch.arange(snippet_length, device=device)[None, :]
    return i + k * int(dilation)


def _as_tensor(a: ArrayLike) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach()
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"snippets must be numeric arrays, got dtype {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr))


def _infer_num_frames(counts: Mapping[int, int], snippet_length: int) -> int:
    """The video length consistent with every dilation's snippet count, or a ValueError."""
    L = snippet_length
    candidates: set[int] | None = None
    for d, S in counts.items():
        ok = set()
        for T in range(S + (L - 1), S + (L - 1) * d + 1):
            cap = max_dilation(T, L)
            if cap >= 1 and T - (L - 1) * min(d, cap) == S:
                ok.add(T)
        candidates = ok if candidates is None else candidates & ok
    if not candidates:
        longest = max(S + (L - 1) * d for d, S in counts.items())
        if longest < 2 * L:
            raise ValueError(
                f"a video of at most {longest} frames is too short for snippets of length {L}: "
                f"need at least {2 * L} frames"
            )
        detail = ", ".join(f"dilation {d}: {S} snippets" for d, S in counts.items())
        raise ValueError(
            f"the snippet counts ({detail}) fit no single video length with snippet length {L}; "
            f"each dilation d must hold S_d = T - (L-1)*min(d, T//L - 1) snippets. Check that every "
            f"array comes from the same video, or pass num_frames explicitly."
        )
    if len(candidates) > 1:
        raise ValueError(
            f"the video length is ambiguous from the snippet counts (could be any of {sorted(candidates)}); "
            f"pass num_frames explicitly or include dilation 1"
        )
    return candidates.pop()


@dataclass(frozen=True)
class SnippetSet:
    """Validated snippets of one video: one ``(S_d, L, H, W)`` tensor per requested dilation.

    Build it with :meth:`from_arrays`; ``requested`` keeps the dilations as asked for (the key of a
    saved ``.npz``), ``dilations`` the effective ones after capping at ``T // L - 1``.
    """

    arrays: tuple[torch.Tensor, ...]
    requested: tuple[int, ...]
    dilations: tuple[int, ...]
    num_frames: int

    @classmethod
    def from_arrays(cls, arrays: Mapping[int, ArrayLike], num_frames: int | None = None) -> "SnippetSet":
        """Validate ``{dilation: array}``; arrays are ``(S_d, L, H, W)`` or ``(S_d, L, 1, H, W)``.

        Raises ValueError with the reason when sizes mismatch, a dilation does not fit the video
        length, a frame is covered by no snippet, or values are NaN/inf.
        """
        if not arrays:
            raise ValueError("no snippets given: pass {dilation: array of shape (S_d, L, H, W)}")
        tensors: dict[int, torch.Tensor] = {}
        for key, a in arrays.items():
            d = int(key)
            if d < 1:
                raise ValueError(f"dilation keys must be integers >= 1, got {key!r}")
            t = _as_tensor(a)
            if t.ndim == 5 and t.shape[2] == 1:
                t = t[:, :, 0]
            if t.ndim != 4:
                raise ValueError(
                    f"dilation {d}: expected an array of shape (S_d, L, H, W) or (S_d, L, 1, H, W), "
                    f"got shape {tuple(t.shape)}"
                )
            if min(t.shape) < 1:
                raise ValueError(f"dilation {d}: empty array of shape {tuple(t.shape)}")
            if not t.is_floating_point():
                t = t.float()
            tensors[d] = t
        shapes = {d: tuple(t.shape[1:]) for d, t in tensors.items()}
        if len(set(shapes.values())) > 1:
            detail = ", ".join(f"dilation {d}: (L, H, W) = {s}" for d, s in shapes.items())
            raise ValueError(
                f"snippets of mismatched sizes ({detail}); all dilations must share the snippet length and "
                f"frame size. Resize the snippets to one resolution before aligning."
            )
        L = next(iter(shapes.values()))[0]
        if L < 2:
            raise ValueError(f"snippet length must be >= 2 frames to link frames, got L={L}")
        counts = {d: int(t.shape[0]) for d, t in tensors.items()}
        T = int(num_frames) if num_frames is not None else _infer_num_frames(counts, L)
        effective = []
        for d, S in counts.items():
            de = effective_dilation(d, T, L)
            expected = T - (L - 1) * de
            if S != expected:
                raise ValueError(
                    f"dilation {d} does not fit a video of {T} frames: it has {S} snippets but "
                    f"S = T - (L-1)*min(d, T//L - 1) = {T} - {L - 1}*{de} = {expected}. "
                    f"Check num_frames and that this array was made with this dilation."
                )
            effective.append(de)
        covered = torch.zeros(T, dtype=torch.bool)
        for (d, S), de in zip(counts.items(), effective):
            covered[snippet_frames(S, L, de).flatten()] = True
        if not bool(covered.all()):
            missing = torch.nonzero(~covered).flatten().tolist()
            raise ValueError(f"frames {missing[:10]} are covered by no snippet; include dilation 1")
        for d, t in tensors.items():
            finite = torch.isfinite(t)
            if not bool(finite.all()):
                bad = (~finite).flatten(1).any(1).nonzero().flatten().tolist()
                raise ValueError(
                    f"dilation {d}: {int((~finite).sum())} NaN/inf values in snippets {bad[:10]}; "
                    f"the co-alignment loss has no masking, so replace or drop these snippets first"
                )
        return cls(tuple(tensors.values()), tuple(counts), tuple(effective), T)

    @property
    def snippet_length(self) -> int:
        return int(self.arrays[0].shape[1])

    @property
    def frame_size(self) -> tuple[int, int]:
        return int(self.arrays[0].shape[2]), int(self.arrays[0].shape[3])

    @property
    def counts(self) -> tuple[int, ...]:
        """Number of snippets per dilation."""
        return tuple(int(a.shape[0]) for a in self.arrays)

    @property
    def num_snippets(self) -> int:
        return sum(self.counts)

    def as_dict(self) -> dict[int, torch.Tensor]:
        """``{requested dilation: (S_d, L, H, W) tensor}``."""
        return dict(zip(self.requested, self.arrays))

    def subset(self, requested: Sequence[int]) -> "SnippetSet":
        """The same video with only some of the (requested) dilations."""
        have = self.as_dict()
        missing = [d for d in requested if d not in have]
        if missing:
            raise KeyError(f"dilations {missing} not in this snippet set (have {list(have)})")
        return SnippetSet.from_arrays({d: have[d] for d in requested}, num_frames=self.num_frames)
