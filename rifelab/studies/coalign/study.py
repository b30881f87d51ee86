"""RollingDepth co-alignment study: report 004's early stopping and our closed-form solver, on a SYNTHETIC truth.

For each video length and resolution a synthetic depth video is rendered (`rifelab.depth.synthetic`: a ray-cast room,
so the truth is known exactly) and cut into snippets by the spec's recipe. On that input the study runs the
reference (Adam, `iterations` steps), every early-stopping rule, the reference at a second λ3, our least-squares
solver (optionally refined by Adam steps) and three baselines (naive mean, dilation 1 only, the oracle). Every
timed method is timed with `harness.time_interleaved` (in-process; one untimed first call, then `timing_repeats` interleaved
rounds), and every result is scored against the reference (report 004's agreement metrics) and against the
synthetic truth (AbsRel, δ1). Real snippets saved from a RollingDepth run (`snippets_npz`) are aligned too (no
truth there: agreement only). The algorithms live in `rifelab.depth`; this module holds the study glue.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch

from rifelab.publish import claims
from rifelab.measure.benchmark import parse_resolution
from rifelab.depth.coalign import (
    AlignConfig,
    AlignResult,
    align,
    evaluate_loss,
    identity_alignment,
    loss_memory_estimate,
    loss_step,
    merge,
    oracle_alignment,
    prepare,
)
from rifelab.depth.snippets import SnippetSet
from rifelab.depth.metrics import agreement_metrics, depth_metrics, normalise_video
from rifelab.depth.lsq import solve_lsq
from rifelab.depth.stopping import stopping_rule
from rifelab.measure.harness import time_interleaved
from rifelab.measure.profiling import PeakMemory, Timing, speedup_ci
from rifelab.depth.synthetic import load_snippets_npz, synthetic_video
from rifelab.studies.coalign.figures import case_name, frames_figure, loss_curves_figure, quality_vs_time_figure
from rifelab.studies.base import Param, ParamError, StudyResult, StudyRun, load_study_params

log = logging.getLogger(__name__)

__all__ = [
    "PARAMS", "RULE_PARAMS", "NOTEBOOK", "CaseResult", "check_params", "measure_case", "loss_curves_figure",
    "quality_vs_time_figure", "frames_figure", "report004_quantities", "targets", "summary_lines", "run",
]

NOTEBOOK = "04_coalign.ipynb"

PARAMS: dict[str, Param] = {
    "frames": Param("list", "lengths T of the synthetic video (frames)", item="int", low=6),
    "resolutions": Param("list", "frame sizes of the synthetic video", item="resolution"),
    "dilations": Param("list", "snippet dilations (must include 1); each capped at T//3 - 1", item="int", low=1),
    "snippet_dtype": Param("str", "dtype the snippets are stored in (the loss is fp32)",
                           choices=("float16", "float32", "float64")),
    "scale_jitter": Param("float", "synthetic snippets: per-snippet scale exp(U(-a, a))", low=0),
    "shift_jitter": Param("float", "synthetic snippets: per-snippet shift U(-b, b)", low=0),
    "noise_std": Param("float", "synthetic snippets: Gaussian pixel noise σ", low=0),
    "iterations": Param("int", "Adam steps of the reference", low=1),
    "lr": Param("float", "Adam learning rate", low=1e-12),
    "factor": Param("int", "optimise on every factor-th pixel", low=1),
    "border": Param("int", "pixels cropped on each side for the optimisation", low=0),
    "depth_loss_weight": Param("float", "weight of the depth-domain loss term", low=0),
    "lambda_scale": Param("float", "λ2: penalty on scales below 1", low=0),
    "lambda_shift": Param("float", "λ3: penalty on shifts", low=0),
    "compare_lambda_shift": Param("float", "a second λ3 also run and reported (null = skip)", low=0, nullable=True),
    "stopping_rules": Param("list", "early-stopping rules, mappings {rule: plateau|relative, tol: >0, patience: >=1}; "
                            "the first is judged against the targets", item="dict"),
    "refine_iterations": Param("list", "Adam steps after our solver (0 = closed form only); the first is judged",
                               item="int", low=0),
    "timing_repeats": Param("int", "interleaved timed rounds of every method (after one untimed call)", low=1),
    "check_every": Param("int", "read the loss every n steps (1 is exact)", low=1),
    "example_frames": Param("int", "frames shown in the figure of merged videos", low=1),
    "snippets_npz": Param("str", "optional .npz of real RollingDepth snippets (keys dilation{d})", nullable=True),
    "target_es_iteration_factor": Param("float", "target: early stopping runs at least this many times fewer "
                                        "iterations than the reference", low=0),
    "target_es_abs_rel_increase": Param("float", "target: early stopping's AbsRel at most this above the "
                                        "reference's", low=0),
    "target_solver_speedup": Param("float", "target: our solver at least this many times faster than the "
                                   "reference, AbsRel no worse", low=0),
    "progress": Param("bool", "tqdm progress bars", tracked=False),
}

#: Schema of one entry of `stopping_rules`.
RULE_PARAMS: dict[str, Param] = {
    "rule": Param("str", "plateau: |Δloss| < tol; relative: |Δloss| < tol·|loss|", choices=("plateau", "relative")),
    "tol": Param("float", "tolerance on the loss change per step", low=1e-15),
    "patience": Param("int", "consecutive small changes before stopping", low=1),
}

SYNTH = "synthetic"
METRIC_RENAME = {"abs_rel": "abs_rel_vs_synthetic", "delta1": "delta1_vs_synthetic",
                 "temporal_ratio_gt": "temporal_ratio_vs_synthetic"}
NAIVE, DIL1, ORACLE = "naive mean (no alignment)", "lsq, dilation 1 only", "oracle (per-snippet fit to truth)"


def check_params(p: Mapping[str, Any]) -> None:
    """Checks that span keys (or go inside a list of mappings); a ParamError naming the key, before anything runs."""
    if not p["stopping_rules"]:
        raise ParamError("coalign.stopping_rules is empty; give at least one rule (the first is judged)")
    for i, spec in enumerate(p["stopping_rules"]):
        where = f"coalign.stopping_rules[{i}]"
        unknown = sorted(set(spec) - set(RULE_PARAMS))
        if unknown:
            raise ParamError(f"{where}: unknown key {', '.join(map(repr, unknown))}; expected {list(RULE_PARAMS)}")
        missing = [k for k in RULE_PARAMS if k not in spec]
        if missing:
            raise ParamError(f"{where}: missing {', '.join(map(repr, missing))} "
                             f"({'; '.join(RULE_PARAMS[k].help for k in missing)})")
        for key, schema in RULE_PARAMS.items():
            schema.check(f"{where}.{key}", spec[key])
    for key in ("frames", "resolutions", "dilations", "refine_iterations"):
        if not p[key]:
            raise ParamError(f"coalign.{key} is empty; give at least one value ({PARAMS[key].help})")
    if 1 not in p["dilations"]:
        raise ParamError(f"coalign.dilations = {p['dilations']} lacks 1: dilation 1 is what covers every frame")
    for res in p["resolutions"]:
        w, h = parse_resolution(res)
        if min(w, h) - 2 * p["border"] < 1:
            raise ParamError(f"coalign.resolutions: {res} is too small for coalign.border = {p['border']} px")
    if p["snippets_npz"] and not Path(p["snippets_npz"]).is_file():
        raise ParamError(f"coalign.snippets_npz = {p['snippets_npz']!r}: file not found (null = skip real snippets)")


def _config(p: Mapping[str, Any]) -> AlignConfig:
    return AlignConfig(iterations=p["iterations"], lr=p["lr"], factor=p["factor"], border=p["border"],
                       depth_loss_weight=p["depth_loss_weight"], lambda_scale=p["lambda_scale"],
                       lambda_shift=p["lambda_shift"])


@dataclass
class CaseResult:
    """Rows (one per method), loss histories, stop points and example frames of one input."""

    rows: list[dict[str, Any]]
    loss_steps: list[dict[str, Any]]
    histories: dict[str, np.ndarray]
    scale_histories: dict[str, np.ndarray]
    stops: dict[str, dict[str, Any]]
    examples: dict[str, np.ndarray]
    ref_method: str
    es_methods: list[str]
    solver_methods: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass
class _Method:
    label: str
    family: str
    fn: Callable[[], AlignResult] | None  # None: not an optimisation (nothing to time)
    snippets: SnippetSet
    config: AlignConfig
    result: AlignResult | None = None


def _methods(snips: SnippetSet, cfg: AlignConfig, p: Mapping[str, Any], dev: torch.device,
             gt_depth: np.ndarray | None) -> list[_Method]:
    """Every method of one input, in table order (the reference first)."""
    ce = p["check_every"]

    def adam(c: AlignConfig, label: str, rule: Any = None) -> Callable[[], AlignResult]:
        return lambda: align(snips, c, stopping=rule, device=dev, check_every=ce, method=label)

    def lsq(s: SnippetSet, n: int) -> Callable[[], AlignResult]:
        return lambda: solve_lsq(s, cfg, device=dev, refine_iterations=n)

    ref = f"adam {cfg.iterations} (λ3={cfg.lambda_shift:g})"
    out = [_Method(ref, "reference", adam(cfg, ref), snips, cfg)]
    for spec in p["stopping_rules"]:
        label = f"early stop {stopping_rule(spec).describe()}"
        out.append(_Method(label, "early stopping", adam(cfg, label, spec), snips, cfg))
    other = p["compare_lambda_shift"]
    if other is not None and other != cfg.lambda_shift:
        cfg0 = replace(cfg, lambda_shift=float(other))
        label0 = f"adam {cfg.iterations} (λ3={other:g})"
        out.append(_Method(label0, "adam, other λ3", adam(cfg0, label0), snips, cfg0))
        spec = p["stopping_rules"][0]
        label = f"early stop {stopping_rule(spec).describe()} (λ3={other:g})"
        out.append(_Method(label, "early stopping", adam(cfg0, label, spec), snips, cfg0))
    for n in p["refine_iterations"]:
        label = "lsq (ours)" if n == 0 else f"lsq + {n} adam (ours)"
        out.append(_Method(label, "fast solver", lsq(snips, n), snips, cfg))
    if len(snips.requested) > 1:
        d1 = snips.subset([1])
        out.append(_Method(DIL1, "baseline", lsq(d1, 0), d1, cfg))
    out.append(_Method(NAIVE, "baseline", None, snips, cfg, identity_alignment(snips)))
    if gt_depth is not None:
        out.append(_Method(ORACLE, "baseline", None, snips, cfg, oracle_alignment(snips, 1.0 / gt_depth)))
    return out


def _time_loss_steps(snips: SnippetSet, cfg: AlignConfig, dev: torch.device, rounds: int,
                     progress: bool) -> list[dict[str, Any]]:
    """One loss + backward + Adam step, dense (the reference's) versus scatter (ours), timed interleaved."""
    problem = prepare(snips, cfg, dev)
    steps = {impl: loss_step(problem, cfg, impl) for impl in ("dense", "vectorised")}
    # a step takes milliseconds: many short interleaved samples keep the medians steady on a busy machine
    timing = time_interleaved(steps, dev, warmup=2, rounds=max(20, rounds), repeats=3, progress=progress)
    T, (H, W) = snips.num_frames, snips.frame_size
    rows = []
    for impl, step in steps.items():
        peak = math.nan
        if dev.type == "cuda":  # a measured peak; elsewhere the estimate of the large buffers only
            with PeakMemory(dev) as mem:
                step()
            peak = mem.peak_mib
        t = timing.timings[impl]
        rows.append({"frames": T, "height": H, "width": W, "pixels_per_frame": problem.num_pixels, "loss": impl,
                     "step_ms": t.median * 1e3, "step_p10_ms": t.p10 * 1e3, "step_p90_ms": t.p90 * 1e3,
                     "memory_estimate_mib": loss_memory_estimate(problem, impl) / 2**20,
                     "peak_mib": peak})
    return rows


def measure_case(
    snips: SnippetSet,
    p: Mapping[str, Any],
    dev: torch.device,
    gt_depth: np.ndarray | None = None,
    example_idx: np.ndarray | None = None,
    progress: bool = False,
) -> CaseResult:
    """Run, time and score every method on one input (`gt_depth`: the synthetic truth, or None for real snippets).

    Timed methods go through `time_interleaved` (one untimed first call, then `timing_repeats` interleaved rounds);
    Adam and the solver are deterministic, so the result of the last call is the method's result. Times exclude
    the merge, which is the same for every method.
    """
    cfg = _config(p)
    methods = _methods(snips, cfg, p, dev, gt_depth)
    ref = methods[0]
    notes: list[str] = []

    def keep(m: _Method) -> Callable[[], None]:
        def call() -> None:
            m.result = m.fn()
        return call

    timed = {m.label: keep(m) for m in methods if m.fn is not None}
    timing = time_interleaved(timed, dev, warmup=0, rounds=p["timing_repeats"], progress=progress)
    if ref.label in timing.stopped:
        raise RuntimeError(f"the reference {ref.label} failed: {timing.stopped[ref.label]}")
    for label, why in timing.stopped.items():
        notes.append(f"{label} was not timed: {why}")
    methods = [m for m in methods if m.label not in timing.stopped]
    ref_t: Timing = timing.timings[ref.label]

    ref_video = merge(snips, ref.result, device=dev).cpu().numpy()
    T, (H, W) = snips.num_frames, snips.frame_size
    rows, examples = [], {}
    for m in methods:
        res, t = m.result, timing.timings.get(m.label)
        video = ref_video if m is ref else merge(m.snippets, res, device=dev).cpu().numpy()
        ratio, lo, hi = speedup_ci(ref_t, t) if t is not None else (math.nan,) * 3
        row: dict[str, Any] = {
            "frames": T, "height": H, "width": W, "method": m.label, "family": m.family,
            "iterations": res.iterations,
            "time_s": t.median if t else math.nan,
            "time_p10_s": t.p10 if t else math.nan,
            "time_p90_s": t.p90 if t else math.nan,
            "speedup_vs_ref": ratio, "speedup_ci95_low": lo, "speedup_ci95_high": hi,
            "ms_per_iteration": 1e3 * t.median / res.iterations if t and res.iterations else math.nan,
            # data terms only (no penalties), so runs with different λ3 and the solver compare fairly
            "data_loss": evaluate_loss(m.snippets, res, replace(cfg, lambda_scale=0.0, lambda_shift=0.0), dev),
        }
        row.update(agreement_metrics(video, ref_video))
        if gt_depth is not None:
            row.update({METRIC_RENAME[k]: v for k, v in depth_metrics(video, gt_depth).items()})
        rows.append(row)
        if example_idx is not None:
            examples[m.label] = normalise_video(video)[example_idx]

    histories = {m.label: m.result.loss_history for m in methods if m.family in ("reference", "adam, other λ3")}
    scale_hist = {m.label: m.result.scale_mean_history for m in methods if m.label in histories}
    full_run = {m.config.lambda_shift: m.label for m in methods if m.label in histories}
    stops = {m.label: {"history": full_run.get(m.config.lambda_shift, ref.label), "iterations": m.result.iterations}
             for m in methods if m.family == "early stopping"}
    loss_steps = _time_loss_steps(snips, cfg, dev, p["timing_repeats"], progress)
    return CaseResult(rows, loss_steps, histories, scale_hist, stops, examples, ref.label,
                      [m.label for m in methods if m.family == "early stopping"],
                      [m.label for m in methods if m.family == "fast solver"], notes)


# ------------------------------------------------------------------------------------------------ figures


def _pick(methods: pd.DataFrame, method: str) -> pd.DataFrame:
    sub = methods[methods["method"] == method]
    if sub.empty:
        raise KeyError(f"no rows for method {method!r}; have {sorted(methods['method'].unique())}")
    return sub.reset_index(drop=True)


def report004_quantities(methods: pd.DataFrame, ref: str, es: str) -> pd.DataFrame:
    """Report 004's quantities as measured here, one column per synthetic case (the claims are in `claims`)."""
    r, e = _pick(methods, ref), _pick(methods, es)
    rows = {
        "iterations, reference": r["iterations"],
        "iterations, early stopping": e["iterations"],
        "co-alignment time, reference": r["time_s"],
        "co-alignment time, early stopping": e["time_s"],
        "speed-up of early stopping": e["speedup_vs_ref"],
        "MAE vs reference": e["mae"],
        "RMSE vs reference": e["rmse"],
        "P90 abs. error vs reference": e["p90"],
        "temporal-consistency ratio vs reference": e["temporal_ratio"],
        "AbsRel vs synthetic truth, reference": r["abs_rel_vs_synthetic"],
        "AbsRel vs synthetic truth, early stopping": e["abs_rel_vs_synthetic"],
        "δ1 vs synthetic truth, early stopping": e["delta1_vs_synthetic"],
    }
    cols = [f"ours: {case_name(T, W, H)} ({SYNTH})" for T, W, H in zip(r["frames"], r["width"], r["height"])]
    table = pd.DataFrame({q: list(v) for q, v in rows.items()}, index=cols).T
    table.index.name = "quantity"
    return table


def targets(methods: pd.DataFrame, ref: str, es: str, solver: str, p: Mapping[str, Any]) -> dict[str, Any]:
    """Target verdicts over all synthetic cases, with the worst case of each criterion.

    Early stopping meets its target when, in every case, it runs at least `target_es_iteration_factor` times
    fewer iterations than the reference with AbsRel at most `target_es_abs_rel_increase` above the reference's.
    The solver meets its target when, in every case, it is at least `target_solver_speedup` times faster than
    the reference with AbsRel no worse.
    """
    r, e, s = _pick(methods, ref), _pick(methods, es), _pick(methods, solver)
    it_factor = r["iterations"] / e["iterations"]
    es_increase = e["abs_rel_vs_synthetic"] - r["abs_rel_vs_synthetic"]
    lsq_speedup = s["speedup_vs_ref"]
    lsq_delta = s["abs_rel_vs_synthetic"] - r["abs_rel_vs_synthetic"]
    return {
        "min_es_iteration_factor": float(it_factor.min()),
        "max_es_abs_rel_increase": float(es_increase.max()),
        "min_solver_speedup": float(lsq_speedup.min()),
        "max_solver_abs_rel_change": float(lsq_delta.max()),
        "target_early_stopping_met": bool((it_factor >= p["target_es_iteration_factor"]).all()
                                          and (es_increase <= p["target_es_abs_rel_increase"]).all()),
        "target_solver_met": bool((lsq_speedup >= p["target_solver_speedup"]).all() and (lsq_delta <= 0).all()),
    }


def _span(values: pd.Series, fmt: str) -> str:
    lo, hi = float(values.min()), float(values.max())
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{format(lo, fmt)}–{format(hi, fmt)}"


def _speed(ratios: pd.Series) -> str:
    """'4.4× faster', '2.0× slower' or 'at 0.9–1.2× the speed of' for ratios (> 1: faster) of one comparison."""
    if (ratios >= 1).all():
        return f"{_span(ratios, '.1f')}× faster than"
    if (ratios < 1).all():
        return f"{_span(1 / ratios, '.1f')}× slower than"
    return f"at {_span(ratios, '.2f')}× the speed of"


def summary_lines(methods: pd.DataFrame, loss_step: pd.DataFrame, verdict: Mapping[str, Any], ref: str, es: str,
                  solver: str, p: Mapping[str, Any], env: Mapping[str, Any]) -> list[str]:
    """Result sentences, every number taken from this run's tables."""
    r, e, s = _pick(methods, ref), _pick(methods, es), _pick(methods, solver)
    cases = ", ".join(case_name(T, W, H) for T, W, H in zip(r["frames"], r["width"], r["height"]))
    claim = claims.claims("coalign").set_index("metric")["value"]
    pct = lambda v: _span(100 * v, ".2f") + "%"  # noqa: E731
    met = lambda ok: "**met**" if ok else "**missed**"  # noqa: E731
    lines = [
        f"Input: a **{SYNTH}** depth video (ray-cast room, known truth), {cases}, dilations {p['dilations']}; "
        f"{env['device_name']}, {env.get('cpu_threads', '?')} CPU thread(s). Times: median of "
        f"{p['timing_repeats']} interleaved rounds after one untimed call.",
        f"Early stopping ({es.removeprefix('early stop ')}) ran {_span(e['iterations'], '.0f')}"
        f" of {int(r['iterations'].iloc[0])} steps ({_span(r['iterations'] / e['iterations'], '.1f')}× fewer) and "
        f"was {_speed(e['speedup_vs_ref'])} the reference; report 004 claims {claim['iterations, early stopping']} "
        f"steps and {claim['speed-up of early stopping']}× faster on its own real video (not this input).",
        f"Against the reference it differs by MAE {_span(e['mae'], '.3f')}, P90 {_span(e['p90'], '.3f')}, temporal "
        f"ratio {_span(e['temporal_ratio'], '.3f')} (report 004 on its video: MAE {claim['MAE vs reference']}, "
        f"ratio {claim['temporal-consistency ratio vs reference']}).",
        f"AbsRel against the {SYNTH} truth: reference {pct(r['abs_rel_vs_synthetic'])}, early stopping "
        f"{pct(e['abs_rel_vs_synthetic'])}, our solver ({solver.removesuffix(' (ours)')}) "
        f"{pct(s['abs_rel_vs_synthetic'])}, oracle "
        f"{pct(_pick(methods, ORACLE)['abs_rel_vs_synthetic'])}, naive mean "
        f"{pct(_pick(methods, NAIVE)['abs_rel_vs_synthetic'])}.",
        f"Target early stopping (≥ {p['target_es_iteration_factor']:g}× fewer iterations and AbsRel at most "
        f"{100 * p['target_es_abs_rel_increase']:g} points above the reference's, in every case): worst "
        f"{verdict['min_es_iteration_factor']:.2f}× and {100 * verdict['max_es_abs_rel_increase']:+.2f} points — "
        f"{met(verdict['target_early_stopping_met'])}.",
        f"Target solver (≥ {p['target_solver_speedup']:g}× faster than the reference, AbsRel no worse, in every "
        f"case): slowest {verdict['min_solver_speedup']:.0f}×, AbsRel change "
        f"{100 * verdict['max_solver_abs_rel_change']:+.2f} points at worst — {met(verdict['target_solver_met'])}.",
    ]
    other = methods[methods["family"] == "adam, other λ3"]
    if not other.empty:
        lines.append(f"With λ3 = {p['compare_lambda_shift']:g} instead of {p['lambda_shift']:g} the "
                     f"{p['iterations']}-step Adam run reaches AbsRel {pct(other['abs_rel_vs_synthetic'])} on the "
                     f"{SYNTH} truth (λ3 = {p['lambda_shift']:g}: {pct(r['abs_rel_vs_synthetic'])}).")
    for rule in [m for m in methods["method"].unique() if m.startswith("early stop") and m != es]:
        x = _pick(methods, rule)
        lines.append(f"{rule}: {_span(r['iterations'] / x['iterations'], '.1f')}× fewer iterations, AbsRel "
                     f"{pct(x['abs_rel_vs_synthetic'])} on the {SYNTH} truth.")
    d, v = (loss_step[loss_step["loss"] == impl].reset_index() for impl in ("dense", "vectorised"))
    lines.append(f"One loss step (loss + backward + Adam): our scatter form was {_speed(d['step_ms'] / v['step_ms'])} "
                 f"the reference's dense grid ({_span(v['step_ms'], '.2f')} vs {_span(d['step_ms'], '.2f')} ms, "
                 "medians of interleaved samples).")
    return lines


# ------------------------------------------------------------------------------------------------ run


@dataclass
class Synthetic:
    """Every synthetic case measured: results by (frames, width, height), the largest case, its truth at `idx`."""

    cases: dict[tuple[int, int, int], CaseResult]
    largest: tuple[int, int, int]
    idx: np.ndarray
    truth: np.ndarray

    @property
    def methods(self) -> tuple[str, str, str]:
        """(reference, early-stopping, solver) method names."""
        first = next(iter(self.cases.values()))
        return first.ref_method, first.es_methods[0], first.solver_methods[0]


def _study_params(profile: str, overrides: Mapping[str, Any] | None,
                  params_path: str | os.PathLike | None) -> dict[str, Any]:
    params = load_study_params("coalign", PARAMS, profile, overrides, params_path)
    check_params(params)
    if params["threads"] is None and profile == "cpu":
        # ~1e5-element tensors: intra-op threads mostly add overhead (two threads were ~30x slower than one on a
        # busy 2-core machine), so the cpu profile runs this study on one thread unless `threads` says otherwise
        params["threads"] = 1
    return params


def measure_synthetic(run: StudyRun) -> Synthetic:
    """Every method on every synthetic case (frames x resolutions); examples and truth of the largest case."""
    p, dev = run.params, run.device
    cases: dict[tuple[int, int, int], CaseResult] = {}
    largest = max(((T, *parse_resolution(r)) for T in p["frames"] for r in p["resolutions"]),
                  key=lambda c: c[0] * c[1] * c[2])
    idx = np.linspace(0, largest[0] - 1, p["example_frames"]).round().astype(int)
    truth = None
    for T in p["frames"]:
        for res in p["resolutions"]:
            W, H = parse_resolution(res)
            video = synthetic_video(T, H, W, p["dilations"], scale_jitter=p["scale_jitter"],
                                    shift_jitter=p["shift_jitter"], noise_std=p["noise_std"],
                                    dtype=p["snippet_dtype"], seed=p["seed"])
            big = (T, W, H) == largest
            cases[(T, W, H)] = measure_case(video.snippets, p, dev, gt_depth=video.depth,
                                            example_idx=idx if big else None, progress=run.progress)
            if big:
                truth = normalise_video(video.inverse_depth)[idx]
            log.info("coalign: %s done", case_name(T, W, H))
    return Synthetic(cases, largest, idx, truth)


def publish_synthetic(run: StudyRun, syn: Synthetic) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Methods and loss-step tables, the figures, report 004's quantities beside ours. Returns (methods, loss_step,
    the largest case's rows)."""
    ref, es, solver = syn.methods
    cases, largest = syn.cases, syn.largest
    methods = run.table(pd.DataFrame([row for cr in cases.values() for row in cr.rows])
                        .assign(device=str(run.device)), "methods_synthetic")
    loss_step = run.table(pd.DataFrame([row for cr in cases.values() for row in cr.loss_steps]), "loss_step")
    run.figure(loss_curves_figure(cases), "loss_curves")
    run.figure(quality_vs_time_figure(methods, run.env["device_name"]), "quality_vs_time")
    big = cases[largest]
    big_rows = methods[(methods["frames"] == largest[0]) & (methods["width"] == largest[1])
                       & (methods["height"] == largest[2])]
    run.figure(frames_figure(syn.truth, {k: big.examples[k] for k in [NAIVE, ref, es, solver]}, syn.idx,
                             dict(zip(big_rows["method"], big_rows["abs_rel_vs_synthetic"])),
                             f"{SYNTH} video, {case_name(*largest)}"), "frames")
    quantities = run.table(report004_quantities(methods, ref, es), "report004_quantities_synthetic")
    ours = {("RollingDepth co-alignment", col, q): float(v) for col in quantities.columns
            for q, v in quantities[col].items()}
    run.table(claims.beside_ours(claims.claims("coalign"), ours, "ours"), "published_vs_ours")
    return methods, loss_step, big_rows


def measure_real(run: StudyRun, ref: str, es: str, notes: list[str]) -> list[str]:
    """The methods on `snippets_npz` (no truth), when given: its table, and the summary line."""
    p = run.params
    if not p["snippets_npz"]:
        return []
    real_case = measure_case(load_snippets_npz(p["snippets_npz"]), p, run.device, progress=run.progress)
    real = run.table(pd.DataFrame(real_case.rows).assign(device=str(run.device)), "real_snippets")
    notes += real_case.notes
    rr, re_ = _pick(real, ref), _pick(real, es)
    return [f"Real snippets ({Path(p['snippets_npz']).name}, no truth): early stopping ran "
            f"{int(re_['iterations'].iloc[0])} steps, {float(re_['speedup_vs_ref'].iloc[0]):.1f}× "
            f"faster than {int(rr['iterations'].iloc[0])}, MAE {float(re_['mae'].iloc[0]):.3f} vs the reference."]


def _headline(big_rows: pd.DataFrame, methods: tuple[str, str, str], verdict: Mapping[str, Any]) -> dict[str, Any]:
    r, e, s = (_pick(big_rows, m).iloc[0] for m in methods)
    return {
        "es_iterations": int(e["iterations"]),
        "es_speedup": round(float(e["speedup_vs_ref"]), 2),
        "solver_speedup": round(float(s["speedup_vs_ref"]), 1),
        "synthetic_abs_rel_ref": round(float(r["abs_rel_vs_synthetic"]), 5),
        "synthetic_abs_rel_es": round(float(e["abs_rel_vs_synthetic"]), 5),
        "synthetic_abs_rel_solver": round(float(s["abs_rel_vs_synthetic"]), 5),
        "target_es_met": verdict["target_early_stopping_met"],
        "target_solver_met": verdict["target_solver_met"],
    }


def _metrics(syn: Synthetic, big_rows: pd.DataFrame, verdict: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    ref, es, solver = syn.methods
    return {
        "ground_truth": f"{SYNTH} (rifelab.depth.synthetic ray-cast room)",
        "largest_case": case_name(*syn.largest),
        "reference": ref, "early_stopping": es, "solver": solver,
        "targets": verdict,
        "largest": {m: {k: v for k, v in row.items() if k not in ("frames", "width", "height", "method")}
                    for m, row in big_rows.set_index("method").to_dict("index").items()},
        "cases": [case_name(*c) for c in syn.cases],
        "notes": notes,
    }


def _plot_data(syn: Synthetic, big_rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    ref_hist = syn.cases[syn.largest].histories[syn.methods[0]]
    return {
        "abs_rel_per_method": big_rows[["method", "abs_rel_vs_synthetic"]],
        "time_per_method": big_rows[big_rows["time_s"] > 0][["method", "time_s"]],
        "loss_curve": pd.DataFrame({"step": np.arange(1, len(ref_hist) + 1), "loss": ref_hist}),
    }


def run(
    profile: str = "cpu",
    overrides: Mapping[str, Any] | None = None,
    results_root: str | os.PathLike | None = None,
    params_path: str | os.PathLike | None = None,
) -> StudyResult:
    """Every method on every synthetic case (and on `snippets_npz`, if given): tables, figures, targets, publish."""
    with StudyRun("coalign", profile, _study_params(profile, overrides, params_path), results_root) as run:
        syn = measure_synthetic(run)
        ref, es, solver = syn.methods
        methods, loss_step, big_rows = publish_synthetic(run, syn)
        notes = [n for cr in syn.cases.values() for n in cr.notes]
        real_lines = measure_real(run, ref, es, notes)
        verdict = targets(methods, ref, es, solver, run.params)
        lines = summary_lines(methods, loss_step, verdict, ref, es, solver, run.params, run.env) + real_lines + notes
        return run.finish(_metrics(syn, big_rows, verdict, notes), _headline(big_rows, syn.methods, verdict),
                          _plot_data(syn, big_rows), lines)
