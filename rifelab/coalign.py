"""RollingDepth snippet co-alignment: loss, Adam aligner, stopping rules, fast solver, merge, metrics.

RollingDepth predicts affine-invariant inverse depth for 3-frame snippets taken at several
dilations and then finds one scale ``s`` and one shift ``t`` per snippet so that all snippets
agree on the frames they share (see ``shared/spec/coalign.md``). This module implements:

- :class:`SnippetSet`: validated input (one ``(S_d, L, H, W)`` array per dilation).
- :func:`prepare`: global-minimum subtraction, border crop and sub-sampling, flattened to
  one row per (snippet, frame) *entry* so that the loss is a scatter (``index_add``) problem.
- :func:`coalign_loss` (vectorised) and :func:`coalign_loss_dense` (the reference's dense
  ``(dilations*L, frames, pixels)`` formulation, kept as the ground truth for tests and timing).
- :func:`align`: Adam with the reference settings, a :class:`StoppingRule`, a per-iteration
  loss history/callback and correctly synchronised timing on cpu/cuda/mps.
- :func:`solve_lsq`: a closed-form, gauge-constrained weighted least-squares solver for all
  ``(s, t)`` at once, optionally refined by a few Adam steps.
- :func:`merge` and depth metrics (:func:`depth_metrics`, :func:`agreement_metrics`).
- :func:`loss_step` (one optimiser step, to time), :func:`replay_stopping`, :func:`evaluate_loss`.

The study that runs, times and reports all of this is ``rifelab.studies.coalign``.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .profiling import resolve_device, synchronize

log = logging.getLogger(__name__)

__all__ = [
    "max_dilation",
    "effective_dilation",
    "snippet_frames",
    "SnippetSet",
    "AlignConfig",
    "Problem",
    "prepare",
    "coalign_loss",
    "coalign_loss_dense",
    "StoppingRule",
    "NoStopping",
    "LossPlateau",
    "RelativeTolerance",
    "stopping_rule",
    "AlignResult",
    "align",
    "solve_lsq",
    "identity_alignment",
    "oracle_alignment",
    "merge",
    "normalise_video",
    "affine_fit",
    "depth_metrics",
    "agreement_metrics",
    "temporal_change",
    "loss_step",
    "loss_memory_estimate",
    "replay_stopping",
    "evaluate_loss",
]

ArrayLike = Any  # np.ndarray | torch.Tensor


# ----------------------------------------------------------------------------------------------
# Snippet geometry
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Configuration and prepared problem
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlignConfig:
    """Settings of the co-alignment (defaults are the reference's)."""

    iterations: int = 2000
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.9)
    factor: int = 10  # keep every `factor`-th pixel for the optimisation
    border: int = 2  # crop this many pixels on each side for the optimisation
    depth_loss_weight: float = 1.0
    lambda_scale: float = 0.1  # λ2: penalty on scales below 1
    lambda_shift: float = 10.0  # λ3: penalty on shifts
    depth_clip: float = 1e-3  # depth domain uses 1 / clip(x*s + t, depth_clip)

    def __post_init__(self) -> None:
        floats = {"lr": self.lr, "depth_loss_weight": self.depth_loss_weight, "lambda_scale": self.lambda_scale,
                  "lambda_shift": self.lambda_shift, "depth_clip": self.depth_clip,
                  "betas[0]": self.betas[0], "betas[1]": self.betas[1]}
        bad = {k: v for k, v in floats.items() if not isinstance(v, (int, float)) or not math.isfinite(v)}
        if bad:
            raise ValueError(f"AlignConfig needs finite numbers, got {', '.join(f'{k}={v!r}' for k, v in bad.items())}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.factor < 1 or self.border < 0:
            raise ValueError(f"factor must be >= 1 and border >= 0, got factor={self.factor}, border={self.border}")
        if self.depth_clip <= 0:
            raise ValueError(f"depth_clip must be > 0, got {self.depth_clip}")
        if min(self.depth_loss_weight, self.lambda_scale, self.lambda_shift) < 0:
            raise ValueError("depth_loss_weight, lambda_scale and lambda_shift must be >= 0")


@dataclass
class Problem:
    """Optimisation input on a device: one row of ``values`` per (snippet, slot) entry.

    Entries are ordered dilation by dilation, snippet by snippet, slot by slot; entry ``e`` belongs
    to snippet ``entry_snippet[e]`` (a global index over all dilations) and covers frame
    ``entry_frame[e]``.
    """

    values: torch.Tensor  # (N, P) float32, min-subtracted, cropped, sub-sampled
    entry_frame: torch.Tensor  # (N,) long
    entry_snippet: torch.Tensor  # (N,) long
    frame_count: torch.Tensor  # (T,) float32: entries covering each frame
    snippet_weight: torch.Tensor  # (K,) float32: 1/S_d, turns per-dilation means into one sum
    counts: tuple[int, ...]  # snippets per dilation
    dilations: tuple[int, ...]  # effective dilations
    num_frames: int
    snippet_length: int
    offset: float  # the global minimum that was subtracted

    @property
    def num_pixels(self) -> int:
        return int(self.values.shape[1])

    @property
    def num_snippets(self) -> int:
        return int(sum(self.counts))

    @property
    def device(self) -> torch.device:
        return self.values.device


def prepare(snippets: SnippetSet, config: AlignConfig = AlignConfig(), device: Any = "cpu") -> Problem:
    """Subtract the global minimum, crop ``border`` px, keep every ``factor``-th pixel, flatten."""
    dev = resolve_device(device)
    H, W = snippets.frame_size
    b, f = config.border, config.factor
    if H - 2 * b < 1 or W - 2 * b < 1:
        raise ValueError(f"frames of {H}x{W} px are too small for a border crop of {b} px; lower border")
    offset = float(min(float(a.min()) for a in snippets.arrays))
    L, T = snippets.snippet_length, snippets.num_frames
    rows, frames, snips, weights = [], [], [], []
    base = 0
    for a, d, S in zip(snippets.arrays, snippets.dilations, snippets.counts):
        x = a[:, :, b : H - b, b : W - b][:, :, ::f, ::f]
        x = x.to(device=dev, dtype=torch.float32) - offset
        rows.append(x.reshape(S * L, -1))
        frames.append(snippet_frames(S, L, d, device=dev).reshape(-1))
        snips.append((torch.arange(S, device=dev) + base).repeat_interleave(L))
        weights.append(torch.full((S,), 1.0 / S, device=dev))
        base += S
    entry_frame = torch.cat(frames)
    frame_count = torch.zeros(T, device=dev).index_add_(0, entry_frame, torch.ones_like(entry_frame, dtype=torch.float32))
    return Problem(
        values=torch.cat(rows).contiguous(),
        entry_frame=entry_frame,
        entry_snippet=torch.cat(snips),
        frame_count=frame_count,
        snippet_weight=torch.cat(weights),
        counts=snippets.counts,
        dilations=snippets.dilations,
        num_frames=T,
        snippet_length=L,
        offset=offset,
    )


# ----------------------------------------------------------------------------------------------
# Loss: vectorised and dense reference
# ----------------------------------------------------------------------------------------------


def _regulariser(problem: Problem, scale: torch.Tensor, shift: torch.Tensor, config: AlignConfig) -> torch.Tensor:
    w = problem.snippet_weight
    return config.lambda_scale * (w * (1 - scale).clamp_min(0) ** 2).sum() + config.lambda_shift * (w * shift**2).sum()


class _ScatterLoss(torch.autograd.Function):
    """Data terms of the loss with their analytic gradient w.r.t. (s, t), computed in one pass.

    Forward forms ``a = x*s + t`` once per entry, the per-frame targets with ``index_add`` and the
    residuals, and returns the loss while keeping only the K-sized gradients for backward (no
    autograd graph over the (entries, pixels) tensors). The gradient equals autograd's: the targets
    and per-frame norms are detached, d|r|/dr = sign(r) (0 at 0), and the clip passes the gradient
    where ``a >= clip`` as ``clamp_min`` does.
    """

    @staticmethod
    def forward(ctx: Any, scale: torch.Tensor, shift: torch.Tensor, problem: "Problem", config: "AlignConfig") -> torch.Tensor:
        K, L, T, P = problem.num_snippets, problem.snippet_length, problem.num_frames, problem.num_pixels
        frame, count = problem.entry_frame, problem.frame_count[:, None]
        x = problem.values.view(K, L, P)
        a = (x * scale[:, None, None] + shift[:, None, None]).view(K * L, P)
        grid = len(problem.dilations) * L * T * P

        def term(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            target = torch.zeros(T, P, device=v.device).index_add_(0, frame, v).div_(count)
            w = target.abs().mean(1).reciprocal_().div_(grid).index_select(0, frame)  # (N,)
            r = v - target.index_select(0, frame)
            value = (r.abs().sum(1) * w).sum()
            return value, r.sign_().mul_(w[:, None])  # d value / d v

        data, g = term(a)
        keep = a >= config.depth_clip
        a_depth = a.clamp_min(config.depth_clip).reciprocal_()
        data_depth, g_depth = term(a_depth)
        # d(1/clip(a))/da = -1/a^2 = -a_depth^2 where a >= clip, else 0
        g.sub_(g_depth.mul_(a_depth.square_()).mul_(keep).mul_(config.depth_loss_weight))
        g = g.view(K, L, P)
        ctx.save_for_backward((g * x).sum((1, 2)), g.sum((1, 2)))
        return data + config.depth_loss_weight * data_depth

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        grad_scale, grad_shift = ctx.saved_tensors
        return grad_out * grad_scale, grad_out * grad_shift, None, None


def coalign_loss(problem: Problem, scale: torch.Tensor, shift: torch.Tensor, config: AlignConfig = AlignConfig()) -> torch.Tensor:
    """The co-alignment loss in its scatter form: one ``index_add`` per domain, no dense grid.

    Equal to :func:`coalign_loss_dense` in value and gradient: the mean over the reference's dense
    ``(dilations*L, frames, pixels)`` grid only has non-zero terms at covered entries, so it is
    the sum over the N = sum_d S_d*L entries divided by the grid size.
    """
    return _ScatterLoss.apply(scale, shift, problem, config) + _regulariser(problem, scale, shift, config)


def coalign_loss_dense(problem: Problem, scale: torch.Tensor, shift: torch.Tensor, config: AlignConfig = AlignConfig()) -> torch.Tensor:
    """The loss as the reference builds it: dense ``(dilations*L, frames, pixels)`` tensors every call.

    Kept as the ground truth for :func:`coalign_loss` and for timing; not used for solving.
    """
    dev = problem.device
    L, T, P = problem.snippet_length, problem.num_frames, problem.num_pixels
    rows = len(problem.dilations) * L
    M = torch.zeros(rows, T, P, device=dev)
    M_depth = torch.zeros(rows, T, P, device=dev)
    B = torch.zeros(rows, T, P, device=dev)
    entry = snip = 0
    for g, (d, S) in enumerate(zip(problem.dilations, problem.counts)):
        x = problem.values[entry : entry + S * L].view(S, L, P)
        a = x * scale[snip : snip + S, None, None] + shift[snip : snip + S, None, None]
        idx = snippet_frames(S, L, d, device=dev)  # (S, L)
        r = torch.arange(g * L, (g + 1) * L, device=dev)[:, None]
        M[r, idx.T] = a.permute(1, 0, 2)
        M_depth[r, idx.T] = a.clamp_min(config.depth_clip).reciprocal().permute(1, 0, 2)
        B[r, idx.T] = 1.0
        entry += S * L
        snip += S
    with torch.no_grad():
        target = M.sum(0) / B.sum(0)
        target_depth = M_depth.sum(0) / B.sum(0)
        norm = target.abs().mean(-1, keepdim=True)
        norm_depth = target_depth.abs().mean(-1, keepdim=True)
    data = ((M - target) * B / norm).abs().mean()
    data_depth = ((M_depth - target_depth) * B / norm_depth).abs().mean()
    reg = scale.new_zeros(())
    snip = 0
    for S in problem.counts:
        s, t = scale[snip : snip + S], shift[snip : snip + S]
        reg = reg + config.lambda_scale * ((1 - s).clamp_min(0) ** 2).mean() + config.lambda_shift * (t**2).mean()
        snip += S
    return data + config.depth_loss_weight * data_depth + reg


def loss_memory_estimate(problem: Problem, impl: str = "vectorised") -> int:
    """Rough bytes of the large float32 tensors one loss evaluation (with autograd) allocates."""
    L, T, P, N = problem.snippet_length, problem.num_frames, problem.num_pixels, problem.values.shape[0]
    if impl == "dense":
        grid = len(problem.dilations) * L * T * P
        return 4 * (3 * grid + 4 * grid + 4 * T * P)  # M, M_depth, B + differences/abs + targets
    if impl == "vectorised":
        return 4 * (6 * N * P + 4 * T * P)  # a, a_depth, gathered targets, differences + targets
    raise ValueError(f"impl must be 'vectorised' or 'dense', got {impl!r}")


# ----------------------------------------------------------------------------------------------
# Stopping rules
# ----------------------------------------------------------------------------------------------


class StoppingRule(ABC):
    """Decides after each optimiser step, from the loss of that step, whether to stop."""

    name: str = "rule"

    @abstractmethod
    def reset(self) -> None:
        """Forget all losses seen (called at the start of every run)."""

    @abstractmethod
    def update(self, loss: float) -> bool:
        """Record the loss of the next iteration; True means stop after this iteration."""

    def describe(self) -> str:
        return self.name


class NoStopping(StoppingRule):
    """Run all iterations (the reference)."""

    name = "none"

    def reset(self) -> None:
        pass

    def update(self, loss: float) -> bool:
        return False


class _DeltaRule(StoppingRule):
    def __init__(self, tol: float, patience: int) -> None:
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        if int(patience) < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.tol, self.patience = float(tol), int(patience)
        self.reset()

    def reset(self) -> None:
        self._prev: float | None = None
        self._streak = 0

    def _small(self, loss: float, prev: float) -> bool:
        raise NotImplementedError

    def update(self, loss: float) -> bool:
        prev, self._prev = self._prev, float(loss)
        if prev is None:
            return False
        self._streak = self._streak + 1 if self._small(float(loss), prev) else 0
        return self._streak >= self.patience


class LossPlateau(_DeltaRule):
    """Stop when ``|loss_i - loss_{i-1}| < tol`` for ``patience`` consecutive iterations (report 004)."""

    name = "plateau"

    def _small(self, loss: float, prev: float) -> bool:
        return abs(loss - prev) < self.tol

    def describe(self) -> str:
        return f"plateau(tol={self.tol:g}, patience={self.patience})"


class RelativeTolerance(_DeltaRule):
    """Stop when ``|loss_i - loss_{i-1}| < tol * |loss_{i-1}|`` for ``patience`` consecutive iterations."""

    name = "relative"

    def _small(self, loss: float, prev: float) -> bool:
        return abs(loss - prev) < self.tol * abs(prev)

    def describe(self) -> str:
        return f"relative(rtol={self.tol:g}, patience={self.patience})"


def stopping_rule(spec: StoppingRule | str | Mapping[str, Any] | None) -> StoppingRule:
    """Build a rule from ``None``/``'none'``, ``{'rule': 'plateau'|'relative', 'tol': x, 'patience': n}``."""
    if isinstance(spec, StoppingRule):
        return spec
    if spec is None or (isinstance(spec, str) and spec.lower() == "none"):
        return NoStopping()
    if isinstance(spec, Mapping):
        opts = dict(spec)
        kind = str(opts.pop("rule", "plateau")).lower()
        tol = opts.pop("tol", opts.pop("rtol", 1e-4))
        patience = opts.pop("patience", 30)
        if opts:
            raise ValueError(f"unknown stopping-rule keys {sorted(opts)}; expected rule, tol, patience")
        if kind == "none":
            return NoStopping()
        if kind == "plateau":
            return LossPlateau(float(tol), int(patience))
        if kind == "relative":
            return RelativeTolerance(float(tol), int(patience))
        raise ValueError(f"unknown stopping rule {kind!r}; expected none, plateau or relative")
    raise TypeError(f"cannot build a stopping rule from {spec!r}")


# ----------------------------------------------------------------------------------------------
# Results and merge
# ----------------------------------------------------------------------------------------------


@dataclass
class AlignResult:
    """Per-snippet scales/shifts (flat over dilations, CPU float32) and how they were found."""

    scale: torch.Tensor
    shift: torch.Tensor
    offset: float
    counts: tuple[int, ...]
    method: str
    loss_history: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scale_mean_history: np.ndarray = field(default_factory=lambda: np.zeros(0))
    iterations: int = 0  # optimiser steps run
    stop_iteration: int | None = None  # steps run when the stopping rule fired
    prepare_s: float = 0.0
    solve_s: float = 0.0
    device: str = "cpu"

    @property
    def time_s(self) -> float:
        """Synchronised wall time of preparation + solving (merge excluded)."""
        return self.prepare_s + self.solve_s

    def per_dilation(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``[(scale, shift)]`` per dilation, in the snippet set's order."""
        out, k = [], 0
        for S in self.counts:
            out.append((self.scale[k : k + S], self.shift[k : k + S]))
            k += S
        return out


def merge(snippets: SnippetSet, result: AlignResult, device: Any = "cpu") -> torch.Tensor:
    """Full-resolution merged inverse-depth video ``(T, H, W)``: mean of all aligned snippets per frame.

    Uses the same global-minimum offset as the optimisation; computed in float32 one
    (dilation, slot) at a time, so memory stays O(T*H*W).
    """
    dev = resolve_device(device)
    if tuple(result.counts) != snippets.counts:
        raise ValueError(f"result was computed for snippet counts {result.counts}, not {snippets.counts}")
    H, W = snippets.frame_size
    T, L = snippets.num_frames, snippets.snippet_length
    out = torch.zeros(T, H, W, device=dev)
    count = torch.zeros(T, device=dev)
    for a, d, (s, t) in zip(snippets.arrays, snippets.dilations, result.per_dilation()):
        S = a.shape[0]
        s, t = s.to(dev)[:, None, None], t.to(dev)[:, None, None]
        for k in range(L):
            x = a[:, k].to(device=dev, dtype=torch.float32) - result.offset
            out[k * d : k * d + S] += x * s + t
            count[k * d : k * d + S] += 1
    return out / count[:, None, None]


def normalise_video(video: ArrayLike) -> np.ndarray:
    """Min-max normalise a whole video to [-1, 1] (as the RollingDepth pipeline does)."""
    v = _np(video)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return np.zeros_like(v)
    return 2.0 * (v - lo) / (hi - lo) - 1.0


def identity_alignment(snippets: SnippetSet) -> AlignResult:
    """s = 1, t = 0 for every snippet: merging this is the naive mean (no alignment)."""
    K = snippets.num_snippets
    offset = float(min(float(a.min()) for a in snippets.arrays))
    return AlignResult(torch.ones(K), torch.zeros(K), offset, snippets.counts, method="naive mean")


def oracle_alignment(snippets: SnippetSet, gt_inverse_depth: ArrayLike) -> AlignResult:
    """Per-snippet least-squares fit of ``x*s + t`` to the true inverse depth (needs the truth)."""
    gt = torch.as_tensor(_np(gt_inverse_depth), dtype=torch.float64)
    if gt.shape != (snippets.num_frames, *snippets.frame_size):
        raise ValueError(f"ground truth has shape {tuple(gt.shape)}, expected {(snippets.num_frames, *snippets.frame_size)}")
    offset = float(min(float(a.min()) for a in snippets.arrays))
    scales, shifts = [], []
    for a, d in zip(snippets.arrays, snippets.dilations):
        S, L = a.shape[:2]
        x = (a.double() - offset).reshape(S, -1)
        y = gt[snippet_frames(S, L, d)].reshape(S, -1)
        xm, ym = x.mean(1, keepdim=True), y.mean(1, keepdim=True)
        s = ((x - xm) * (y - ym)).sum(1) / ((x - xm) ** 2).sum(1).clamp_min(1e-12)
        scales.append(s)
        shifts.append(ym[:, 0] - s * xm[:, 0])
    return AlignResult(torch.cat(scales).float(), torch.cat(shifts).float(), offset, snippets.counts, method="oracle")


# ----------------------------------------------------------------------------------------------
# Adam aligner
# ----------------------------------------------------------------------------------------------


def _check_not_degenerate(problem: Problem) -> None:
    """Refuse snippets the loss cannot use: a frame whose every covering value equals the global minimum.

    The loss divides by each frame's mean |target|, which is 0 there at the start (scale 1, shift 0),
    so every scale and shift would become NaN. Constant snippets are the common case.
    """
    per_frame = torch.zeros(problem.num_frames, device=problem.device).index_add_(
        0, problem.entry_frame, problem.values.abs().sum(1))
    flat = (per_frame == 0).nonzero().flatten().tolist()
    if not flat:
        return
    if len(flat) == problem.num_frames:
        raise ValueError(
            f"every snippet is constant (all values {problem.offset:g} after the border crop and subsampling): "
            "there is no depth structure to align, scales and shifts are undefined. Check the depth predictions"
        )
    shown = ", ".join(str(f) for f in flat[:10]) + (", ..." if len(flat) > 10 else "")
    raise ValueError(
        f"frames {shown} are constant at the global minimum ({problem.offset:g}) in every snippet covering them: the "
        "loss normalises each frame by its mean inverse depth, which is 0 there, so the alignment would be NaN. "
        "Check the depth predictions of those frames, or drop them"
    )


def align(
    snippets: SnippetSet,
    config: AlignConfig = AlignConfig(),
    *,
    stopping: StoppingRule | str | Mapping[str, Any] | None = None,
    device: Any = "cpu",
    loss: str = "vectorised",
    check_every: int = 1,
    callback: Callable[[int, float], None] | None = None,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: bool = False,
    method: str | None = None,
) -> AlignResult:
    """Find per-snippet (s, t) with Adam (reference settings), optionally stopping early.

    ``loss`` is 'vectorised' (default) or 'dense' (the reference formulation, same result).
    The stopping rule and ``callback(step, loss)`` (step counts from 1) see every iteration's loss.
    Reading a loss forces a device sync, so on cuda/mps losses are fetched in batches of
    ``check_every`` iterations; a rule that fires inside a batch is reported at the step where it
    fired (``stop_iteration``) while ``iterations`` counts the steps actually run. Times are
    measured with the device synchronised.
    """
    if loss not in ("vectorised", "dense"):
        raise ValueError(f"loss must be 'vectorised' or 'dense', got {loss!r}")
    if check_every < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every}")
    rule = stopping_rule(stopping)
    rule.reset()
    dev = resolve_device(device)
    loss_fn = coalign_loss if loss == "vectorised" else coalign_loss_dense

    synchronize(dev)
    t0 = time.perf_counter()
    problem = prepare(snippets, config, dev)
    _check_not_degenerate(problem)
    K = problem.num_snippets
    if init is None:
        scale = torch.ones(K, device=dev)
        shift = torch.zeros(K, device=dev)
    else:
        scale = init[0].detach().to(dev, torch.float32).clone()
        shift = init[1].detach().to(dev, torch.float32).clone()
        if scale.shape != (K,) or shift.shape != (K,):
            raise ValueError(f"init must be two tensors of shape ({K},), got {tuple(scale.shape)}, {tuple(shift.shape)}")
    scale.requires_grad_(True)
    shift.requires_grad_(True)
    opt = torch.optim.Adam([scale, shift], lr=config.lr, betas=config.betas)
    synchronize(dev)
    t1 = time.perf_counter()

    n = config.iterations
    hist = torch.empty(n, device=dev)
    smean = torch.empty(n, device=dev)
    watch = not isinstance(rule, NoStopping) or callback is not None
    checked = 0
    ran = 0
    stop_at: int | None = None
    steps = range(n)
    if progress:
        steps = tqdm(steps, desc=f"co-align ({loss})", leave=False)
    for i in steps:
        opt.zero_grad(set_to_none=True)
        value = loss_fn(problem, scale, shift, config)
        value.backward()
        opt.step()
        hist[i] = value.detach()
        smean[i] = scale.detach().mean()
        ran = i + 1
        if watch and (ran - checked >= check_every or ran == n):
            for j, v in enumerate(hist[checked:ran].tolist(), start=checked + 1):
                if callback is not None:
                    callback(j, v)
                if stop_at is None and rule.update(v):
                    stop_at = j
                    break
            checked = ran
            if stop_at is not None:
                break
    synchronize(dev)
    t2 = time.perf_counter()
    if stop_at is not None:
        log.info("%s stopped after %d of %d iterations", rule.describe(), stop_at, n)
    if not (torch.isfinite(scale).all() and torch.isfinite(shift).all()):
        first = next((i + 1 for i, v in enumerate(hist[:ran].tolist()) if not math.isfinite(v)), None)
        raise ValueError(
            f"co-alignment diverged: non-finite scales/shifts after {ran} iterations"
            + (f" (the loss became non-finite at iteration {first})" if first else "")
            + f"; lower lr (now {config.lr}) or check the snippets for extreme values"
        )
    return AlignResult(
        scale=scale.detach().float().cpu(),
        shift=shift.detach().float().cpu(),
        offset=problem.offset,
        counts=problem.counts,
        method=method or (f"adam {rule.describe()}" if stop_at is not None or watch else f"adam {n}"),
        loss_history=hist[:ran].cpu().numpy(),
        scale_mean_history=smean[:ran].cpu().numpy(),
        iterations=ran,
        stop_iteration=stop_at,
        prepare_s=t1 - t0,
        solve_s=t2 - t1,
        device=str(dev),
    )


# ----------------------------------------------------------------------------------------------
# Fast solver: gauge-constrained weighted least squares
# ----------------------------------------------------------------------------------------------


def _frame_table(problem: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T, n_max)`` table of the entries covering each frame (-1 padded) and its validity mask."""
    dev = problem.device
    frame = problem.entry_frame
    order = torch.argsort(frame, stable=True)
    counts = problem.frame_count.long()
    start = torch.cumsum(counts, 0) - counts
    pos = torch.arange(frame.numel(), device=dev) - start[frame[order]]
    n_max = int(counts.max())
    table = torch.full((problem.num_frames, n_max), -1, dtype=torch.long, device=dev)
    table[frame[order], pos] = order
    return table, table >= 0


def solve_lsq(
    snippets: SnippetSet,
    config: AlignConfig = AlignConfig(),
    *,
    device: Any = "cpu",
    refine_iterations: int = 0,
    stopping: StoppingRule | str | Mapping[str, Any] | None = None,
    progress: bool = False,
) -> AlignResult:
    """Closed-form co-alignment: all (s, t) from one Cholesky solve, then optional Adam refinement.

    Minimises ``sum_f w_f sum_{e covers f} ||x_e s_e + t_e - mean_{e' covers f}(x_e' s_e' + t_e')||^2``
    with ``w_f = 1 / mean|mean_e x_e|^2`` (the per-frame normalisation of the Adam loss, at s=1, t=0).
    The objective is a quadratic form in (s, t) that is blind to one global affine map, so the gauge
    is fixed by mean(s) = 1 and mean(t) = 0 (no shift penalty) and the 2K x 2K system is solved by
    Cholesky. Its matrix is built from per-frame Gram matrices of the entries covering each frame
    (``bmm``), scattered into (2K, 2K) with ``index_add``. The depth-domain term and
    the soft penalties of the Adam loss are not part of it; ``refine_iterations`` Adam steps on the
    full loss can add them (they also reintroduce the shift penalty's bias).
    """
    dev = resolve_device(device)
    synchronize(dev)
    t0 = time.perf_counter()
    problem = prepare(snippets, config, dev)
    synchronize(dev)
    t1 = time.perf_counter()

    work = torch.float32 if dev.type == "mps" else torch.float64
    K, P, T = problem.num_snippets, problem.num_pixels, problem.num_frames
    table, valid = _frame_table(problem)  # (T, n)
    X = problem.values.to(work)[table.clamp_min(0)] * valid[..., None]  # (T, n, P)
    n_f = valid.sum(1).to(work)  # (T,)
    mean_frame = X.sum(1) / n_f[:, None]
    w = mean_frame.abs().mean(1).clamp_min(1e-12) ** -2  # (T,)
    gram = torch.bmm(X, X.transpose(1, 2))  # (T, n, n)
    sx = X.sum(2)  # (T, n)
    n = table.shape[1]
    eye = torch.eye(n, device=dev, dtype=work)
    coef = w[:, None, None] * (eye - 1.0 / n_f[:, None, None])  # (T, n, n)
    pair = valid[:, :, None] & valid[:, None, :]
    snip = problem.entry_snippet[table.clamp_min(0)]  # (T, n)
    ka = snip[:, :, None].expand(T, n, n)[pair]
    kb = snip[:, None, :].expand(T, n, n)[pair]
    c = coef[pair]
    H = torch.zeros(2 * K, 2 * K, device=dev, dtype=work)
    flat = H.view(-1)
    flat.index_add_(0, ka * 2 * K + kb, c * gram[pair])  # s_a s_b
    flat.index_add_(0, ka * 2 * K + (kb + K), c * sx[:, :, None].expand(T, n, n)[pair])  # s_a t_b
    flat.index_add_(0, (ka + K) * 2 * K + kb, c * sx[:, None, :].expand(T, n, n)[pair])  # t_a s_b
    flat.index_add_(0, (ka + K) * 2 * K + (kb + K), c * P)  # t_a t_b
    # Gauge: H is blind to (s, t) -> (a*s, a*t + b). Penalising sum(s) - K and sum(t) makes the
    # system positive definite; its minimiser is the constrained one (mean s = 1, mean t = 0) up to
    # a global factor close to 1, which the final division by mean(s) removes exactly.
    H = H / H.diagonal().abs().mean()  # conditioning; the minimiser is unchanged
    ones = torch.zeros(2, 2 * K, device=dev, dtype=work)
    ones[0, :K] = 1.0
    ones[1, K:] = 1.0
    system = H + ones.T @ ones
    rhs = K * ones[0]
    if dev.type == "mps":  # small (2K x 2K) system: solve it on the CPU in float64
        system, rhs = system.cpu().double(), rhs.cpu().double()
    chol, info = torch.linalg.cholesky_ex(system)
    if int(info) != 0:
        raise FloatingPointError(
            "least-squares system is not positive definite: the snippets may be constant, or some "
            "snippets share no frame with the others (include dilation 1)"
        )
    theta = torch.cholesky_solve(rhs[:, None], chol)[:, 0]
    theta = (theta / theta[:K].mean()).to(dev, torch.float32)
    scale, shift = theta[:K], theta[K : 2 * K]
    synchronize(dev)
    t2 = time.perf_counter()
    if not bool(torch.isfinite(theta).all()):
        raise FloatingPointError("least-squares solve produced NaN/inf: the snippets may be constant or degenerate")

    result = AlignResult(
        scale.cpu(),
        shift.cpu(),
        problem.offset,
        problem.counts,
        method="lsq",
        prepare_s=t1 - t0,
        solve_s=t2 - t1,
        device=str(dev),
    )
    if refine_iterations > 0:
        refined = align(
            snippets,
            replace(config, iterations=int(refine_iterations)),
            stopping=stopping,
            device=dev,
            init=(scale, shift),
            progress=progress,
        )
        refined.method = f"lsq + {refined.iterations} adam"
        refined.prepare_s += result.prepare_s
        refined.solve_s += result.solve_s
        return refined
    return result


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------


def _np(a: ArrayLike) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def affine_fit(pred: ArrayLike, target: ArrayLike) -> tuple[float, float]:
    """Least-squares ``(a, b)`` with ``a * pred + b ≈ target`` over all values."""
    p, y = _np(pred).ravel(), _np(target).ravel()
    if p.shape != y.shape:
        raise ValueError(f"pred and target differ in size: {p.size} vs {y.size}")
    pm, ym = p.mean(), y.mean()
    var = ((p - pm) ** 2).sum()
    a = float(((p - pm) * (y - ym)).sum() / var) if var > 0 else 0.0
    return a, float(ym - a * pm)


def depth_metrics(pred_inverse: ArrayLike, gt_depth: ArrayLike, fit: str = "inverse") -> dict[str, float]:
    """AbsRel and δ1 of a predicted inverse-depth video after one least-squares affine fit to the truth.

    ``fit='inverse'`` (default) fits in inverse depth (the prediction's own domain) and converts to
    depth; ``fit='depth'`` fits ``1/pred`` to depth. Fitted inverse depth is clipped at half the
    smallest true inverse depth so no prediction is farther than twice the farthest true depth.
    Also returns temporal_ratio_gt: frame-to-frame change of the fitted inverse depth over that of
    the true inverse depth (1 = as smooth as the truth, > 1 = flicker).
    """
    gt = _np(gt_depth)
    pred = _np(pred_inverse)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    if not (np.isfinite(gt).all() and (gt > 0).all()):
        raise ValueError("ground-truth depth must be finite and > 0 everywhere")
    if fit == "inverse":
        gt_inv = 1.0 / gt
        a, b = affine_fit(pred, gt_inv)
        depth = 1.0 / np.maximum(a * pred + b, 0.5 * gt_inv.min())
    elif fit == "depth":
        inv = 1.0 / np.maximum(pred - pred.min() + 1e-3 * max(np.ptp(pred), 1e-12), 1e-12)
        a, b = affine_fit(inv, gt)
        depth = np.clip(a * inv + b, 0.5 * gt.min(), 2.0 * gt.max())
    else:
        raise ValueError(f"fit must be 'inverse' or 'depth', got {fit!r}")
    ratio = np.maximum(depth / gt, gt / depth)
    gt_change = temporal_change(1.0 / gt)
    return {
        "abs_rel": float(np.mean(np.abs(depth - gt) / gt)),
        "delta1": float(np.mean(ratio < 1.25)),
        "temporal_ratio_gt": temporal_change(1.0 / depth) / gt_change if gt_change > 0 else math.nan,
    }


def temporal_change(video: ArrayLike) -> float:
    """Mean absolute frame-to-frame change ``mean |v[t+1] - v[t]|``."""
    v = _np(video)
    return float(np.abs(np.diff(v, axis=0)).mean()) if v.shape[0] > 1 else 0.0


def agreement_metrics(candidate: ArrayLike, reference: ArrayLike) -> dict[str, float]:
    """Report 004's comparison of two merged videos, both min-max normalised to [-1, 1] first.

    mae, rmse, p90 (90th percentile of the absolute difference) and temporal_ratio =
    temporal_change(candidate) / temporal_change(reference) (1 = equally smooth, < 1 smoother).
    Report 004 does not define its ratio; this is our definition.
    """
    c, r = normalise_video(candidate), normalise_video(reference)
    if c.shape != r.shape:
        raise ValueError(f"candidate shape {c.shape} differs from reference {r.shape}")
    diff = np.abs(c - r)
    ref_change = temporal_change(r)
    return {
        "mae": float(diff.mean()),
        "rmse": float(np.sqrt((diff**2).mean())),
        "p90": float(np.percentile(diff, 90)),
        "temporal_ratio": float(temporal_change(c) / ref_change) if ref_change > 0 else math.nan,
    }


# ----------------------------------------------------------------------------------------------
# One optimiser step (to time) and replay of stopping rules
# ----------------------------------------------------------------------------------------------


def loss_step(problem: Problem, config: AlignConfig = AlignConfig(), impl: str = "vectorised") -> Callable[[], None]:
    """One loss + backward + Adam step of ``impl`` ('vectorised' or 'dense') on ``problem``, as a callable to time.

    Each call advances its own (s, t), starting from s = 1, t = 0, exactly as :func:`align` does.
    """
    if impl not in ("vectorised", "dense"):
        raise ValueError(f"impl must be 'vectorised' or 'dense', got {impl!r}")
    fn = coalign_loss if impl == "vectorised" else coalign_loss_dense
    K = problem.num_snippets
    scale = torch.ones(K, device=problem.device, requires_grad=True)
    shift = torch.zeros(K, device=problem.device, requires_grad=True)
    opt = torch.optim.Adam([scale, shift], lr=config.lr, betas=config.betas)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        fn(problem, scale, shift, config).backward()
        opt.step()

    return step


def replay_stopping(rule: StoppingRule | str | Mapping[str, Any] | None, losses: Sequence[float]) -> int | None:
    """Steps after which ``rule`` would stop on a recorded loss history (None: never).

    Adam runs are deterministic, so this equals the stop point of a live run on the same input.
    """
    r = stopping_rule(rule)
    r.reset()
    for j, v in enumerate(losses, start=1):
        if r.update(float(v)):
            return j
    return None


def evaluate_loss(snippets: SnippetSet, result: AlignResult, config: AlignConfig = AlignConfig(), device: Any = "cpu") -> float:
    """The co-alignment loss (with ``config``'s weights) at a result's (s, t)."""
    problem = prepare(snippets, config, device)
    with torch.no_grad():
        return float(coalign_loss(problem, result.scale.to(problem.device), result.shift.to(problem.device), config))
