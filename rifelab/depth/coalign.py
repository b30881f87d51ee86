"""RollingDepth snippet co-alignment: loss, Adam aligner, stopping rules, fast solver, merge, metrics.

RollingDepth predicts affine-invariant inverse depth for 3-frame snippets taken at several
dilations and then finds one scale ``s`` and one shift ``t`` per snippet so that all snippets
agree on the frames they share. This module implements:

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
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from rifelab.depth.metrics import _np
from rifelab.depth.snippets import ArrayLike, SnippetSet, snippet_frames
from rifelab.depth.stopping import NoStopping, StoppingRule, stopping_rule
from rifelab.measure.profiling import resolve_device, synchronize

log = logging.getLogger(__name__)


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


def _initial_params(init: tuple[torch.Tensor, torch.Tensor] | None, K: int, dev: torch.device
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-snippet (scale, shift) to optimise: ones and zeros, or copies of `init` (checked to be K long)."""
    if init is None:
        scale = torch.ones(K, device=dev)
        shift = torch.zeros(K, device=dev)
    else:
        scale = init[0].detach().to(dev, torch.float32).clone()
        shift = init[1].detach().to(dev, torch.float32).clone()
        if scale.shape != (K,) or shift.shape != (K,):
            raise ValueError(f"init must be two tensors of shape ({K},), got {tuple(scale.shape)}, {tuple(shift.shape)}")
    return scale.requires_grad_(True), shift.requires_grad_(True)


def _check_finite(scale: torch.Tensor, shift: torch.Tensor, hist: torch.Tensor, lr: float) -> None:
    """Refuse a diverged run, naming the iteration where the loss became non-finite."""
    if not (torch.isfinite(scale).all() and torch.isfinite(shift).all()):
        first = next((i + 1 for i, v in enumerate(hist.tolist()) if not math.isfinite(v)), None)
        raise ValueError(
            f"co-alignment diverged: non-finite scales/shifts after {len(hist)} iterations"
            + (f" (the loss became non-finite at iteration {first})" if first else "")
            + f"; lower lr (now {lr}) or check the snippets for extreme values"
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
    scale, shift = _initial_params(init, K, dev)
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
    _check_finite(scale, shift, hist[:ran], config.lr)
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


def evaluate_loss(snippets: SnippetSet, result: AlignResult, config: AlignConfig = AlignConfig(), device: Any = "cpu") -> float:
    """The co-alignment loss (with ``config``'s weights) at a result's (s, t)."""
    problem = prepare(snippets, config, device)
    with torch.no_grad():
        return float(coalign_loss(problem, result.scale.to(problem.device), result.shift.to(problem.device), config))
