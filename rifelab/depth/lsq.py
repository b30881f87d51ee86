"""Closed-form least-squares co-alignment (the reference solution of the same objective)."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any, Mapping

import torch

from rifelab.depth.coalign import AlignConfig, AlignResult, Problem, align, prepare
from rifelab.depth.snippets import SnippetSet
from rifelab.depth.stopping import StoppingRule
from rifelab.measure.profiling import resolve_device, synchronize

log = logging.getLogger(__name__)


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


def _system_matrix(problem: Problem, dev: torch.device, work: torch.dtype) -> torch.Tensor:
    """The (2K, 2K) matrix of the quadratic form in (s, t): per-frame Gram matrices scattered with `index_add`."""
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
    return H


def _solve_with_gauge(H: torch.Tensor, K: int, dev: torch.device, work: torch.dtype) -> torch.Tensor:
    """(s, t) minimising the form with mean(s) = 1 and mean(t) = 0, by one Cholesky solve (float32, on `dev`)."""
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
    return theta


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
    K = problem.num_snippets
    theta = _solve_with_gauge(_system_matrix(problem, dev, work), K, dev, work)
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
