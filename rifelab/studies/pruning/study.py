"""The pruning study's run (notebook 03): every configuration evaluated on held-out triplets and Middlebury, timed side
by side in one interleaved run, judged against the target and the lite cut, and published. Each step returns a
dataclass; `run` reads as their list."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from rifelab.frames.clips import Triplet, read_triplet_dataset
from rifelab.frames.images import to_tensor
from rifelab.measure.evaluation import evaluate_triplets
from rifelab.measure.harness import Harness, InterleavedTiming, noise_limits
from rifelab.measure.profiling import speedup_ci
from rifelab.measure.workloads import FrameInputs, InterpolateWorkload, ModelSpec
from rifelab.publish import claims
from rifelab.pruning.apply import load_pruned, model_gmac, nonzero_parameters, prune_model, save_pruned
from rifelab.pruning.plans import ChannelPlan
from rifelab.pruning.sensitivity import allocate, group_latency_share, layer_latency_profile
from rifelab.rife.model import RIFE
from rifelab.studies.base import ParamError, StudyResult, StudyRun
from rifelab.studies.pruning.figures import plot_latency_share, plot_losses, plot_pareto, plot_sensitivity
from rifelab.studies.pruning.finetune import finetune_source, load_finetuned
from rifelab.studies.pruning.params import (
    PARAMS,
    FinetuneSpec,
    check_splits,
    config_name,
    split_table,
    split_triplets,
    timing_pair,
)
from rifelab.studies.pruning.planning import build_plan, fresh_tables, importance_for
from rifelab.studies.pruning.verdict import judge, sentences

__all__ = ["run", "mask_trap"]


@dataclass
class Inputs:
    """What every step reads: params, the unpruned model, held-out triplets, the timed pair, finetune outputs."""

    p: Mapping[str, Any]
    model: RIFE
    device: torch.device
    evals: list[Triplet]
    pair: tuple[torch.Tensor, torch.Tensor]
    finetuned: dict[str, tuple[RIFE, dict[str, Any], FinetuneSpec]]
    tables: dict[str, pd.DataFrame] | None
    limits: Any  # noise limits of the timing (measure.harness.noise_limits)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the timed pair."""
        h, w = self.pair[0].shape[-2:]
        return int(h), int(w)


@dataclass
class Config:
    """One evaluated model: its family and method, mode, value, and the configuration whose timing it shares."""

    model: RIFE
    family: str
    method: str
    mode: str
    value: float
    timed_as: str


@dataclass
class Lineup:
    """Every configuration by row name (unpruned first), and the importance-criterion comparison rows."""

    configs: dict[str, Config]
    lite_name: str
    comparison: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Quality:
    """Held-out scores per configuration, and Middlebury IE where the folder exists."""

    heldout: dict[str, pd.DataFrame]
    middlebury: dict[str, float]

    @property
    def unpruned_psnr(self) -> float:
        return float(self.heldout["unpruned"]["psnr"].to_numpy().mean())


@dataclass
class Speed:
    """One interleaved timing over the distinct architectures (each in its own worker process), checked."""

    timing: InterleavedTiming
    base_gmac: float

    @property
    def timings(self) -> dict[str, Any]:
        return self.timing.timings


#: a pruned model cannot run much faster than its MAC reduction allows (the non-conv time is not cut at all)
MAC_BOUND_TOLERANCE = 1.25


# ----------------------------------------------------------------------------- steps


def prepare(run_: StudyRun, profile: str, results_root: str | os.PathLike | None) -> Inputs:
    """Check the splits, publish them, read the held-out triplets, the timed pair and the finetune stage's outputs."""
    p = run_.params
    check_splits(p)
    try:
        limits = noise_limits(p["noise"])
    except ValueError as exc:
        raise ParamError(f"pruning.{exc}") from None
    run_.table(split_table(p), "data_split")
    evals = split_triplets(p, "held-out evaluation")
    pair = timing_pair(p["timing_clip"])
    folder = finetune_source(p, profile, results_root)
    finetuned = load_finetuned(p, profile, folder, run_.device)
    tables = fresh_tables(p, folder) if p["budgets_db"] else None
    if p["budgets_db"] and tables is None:
        raise ParamError(f"the sensitivity tables in {folder} are missing or were made with other settings; run "
                         f"`python -m rifelab.studies.pruning --profile {profile}` first (`dvc repro` runs it as "
                         f"finetune@{profile})")
    return Inputs(p, run_.model(), run_.device, evals, pair, finetuned, tables, limits)


def _sweep(x: Inputs, lineup: Lineup, plans: dict[str, ChannelPlan]) -> None:
    """The naive-global and architecture-aware sweep over sparsities and modes (masks are timed as the unpruned)."""
    p, model = x.p, x.model
    for meth in p["methods"]:
        for s in p["sparsities"]:
            plan = plans.setdefault(f"{meth}/{s:g}", build_plan(model, p, meth, s, None))
            for mode in p["modes"]:
                name = config_name(meth, mode, s)
                timed = name if mode == "physical" else "unpruned"  # masks change no shape, no time
                lineup.configs[name] = Config(prune_model(model, plan, mode=mode), f"{meth}, {mode}", meth, mode, s,
                                              timed)


def _sensitivity_plans(x: Inputs, lineup: Lineup, plans: dict[str, ChannelPlan]) -> None:
    """One plan per loss budget, and the first budget's plan under the other importance criteria."""
    p, model = x.p, x.model
    for b in p["budgets_db"]:
        name = config_name("sensitivity", "physical", b)
        plans[name] = build_plan(model, p, "sensitivity", b, x.tables)
        lineup.configs[name] = Config(prune_model(model, plans[name]), "sensitivity", "sensitivity", "physical", b, name)
    if not p["budgets_db"]:
        return
    b0 = p["budgets_db"][0]
    ref = config_name("sensitivity", "physical", b0)
    for crit in p["compare_importance"]:
        if crit == p["importance"]:
            continue
        name = config_name("sensitivity", "physical", b0, crit)
        plan = build_plan(model, p, "sensitivity", b0, x.tables, importance=importance_for(model, p, crit))
        lineup.configs[name] = Config(prune_model(model, plan), f"sensitivity, {crit} importance", "sensitivity",
                                      "physical", b0, ref)
        same = np.mean([len(set(plan.keep[g]) & set(plans[ref].keep[g])) / len(plan.keep[g])
                        for g in plan.keep if len(plan.keep[g]) < plan.groups[g].width] or [1.0])
        lineup.comparison.append({"criterion": crit, "plan": name,
                                  "kept_channels_shared_with_" + p["importance"]: float(same)})


def _finetuned(x: Inputs, lineup: Lineup) -> None:
    """The fine-tuned checkpoints, timed as their unfine-tuned twin when the architecture is the same."""
    configs = lineup.configs
    for name, (m, _, spec) in x.finetuned.items():
        twin = spec.config(finetuned=False)
        family = {"lite": "lite", "sensitivity": "sensitivity"}.get(spec.kind, f"{spec.kind}, physical")
        if twin not in configs:  # a fine-tuned plan outside the sweep: time its own architecture
            configs[twin] = Config(prune_model(x.model, m.pruning_info.plan), family, spec.kind, "physical",
                                   spec.value, twin)
        same = configs[twin].model.pruning_info.plan.keep == m.pruning_info.plan.keep
        configs[name] = Config(m, family + " +ft", spec.kind, "physical", spec.value,
                               configs[twin].timed_as if same else name)


def build_lineup(x: Inputs) -> Lineup:
    """Every configuration: the sweep, the lite cut, the sensitivity plans (and criteria), the fine-tuned models."""
    p, model = x.p, x.model
    lite_name = config_name("lite", "physical", p["lite_ratio"])
    lineup = Lineup({"unpruned": Config(model, "unpruned", "unpruned", "none", 0.0, "unpruned")}, lite_name)
    plans: dict[str, ChannelPlan] = {}
    _sweep(x, lineup, plans)
    lite_plan = build_plan(model, p, "lite", p["lite_ratio"], None)
    lineup.configs[lite_name] = Config(prune_model(model, lite_plan), "lite", "lite", "physical", p["lite_ratio"],
                                       lite_name)
    _sensitivity_plans(x, lineup, plans)
    _finetuned(x, lineup)
    return lineup


def score_quality(x: Inputs, lineup: Lineup, notes: list[str]) -> Quality:
    """Held-out PSNR/SSIM of every configuration; Middlebury 'other' IE of the unpruned, lite and fine-tuned ones."""
    heldout = {k: _quality(c.model, x.evals, "held-out") for k, c in lineup.configs.items()}
    mb: dict[str, float] = {}
    mb_path = x.p["middlebury_path"]
    if mb_path and Path(mb_path).is_dir():
        mb_trip = list(read_triplet_dataset(mb_path, limit=x.p["middlebury_limit"]))
        for k in ["unpruned", lineup.lite_name] + list(x.finetuned):
            mb[k] = float(evaluate_triplets(lineup.configs[k].model, mb_trip, "middlebury", methods=("rife",),
                                            progress=False)[0]["ie"].mean())
    else:
        notes.append(f"Middlebury 'other' IE skipped: {mb_path!r} not found (optional; set "
                     "pruning.middlebury_path to your copy).")
    return Quality(heldout, mb)


def _timing_workloads(lineup: Lineup, names: Sequence[str], p: Mapping[str, Any], dev: torch.device,
                      folder: str) -> dict[str, InterpolateWorkload]:
    """One worker workload per timed architecture: pruned models saved to `folder` and rebuilt in their worker."""
    out = {}
    for k in names:
        m = lineup.configs[k].model
        if getattr(m, "pruning_info", None) is None:
            spec = ModelSpec(checkpoint=p["checkpoint"], device=str(dev), threads=p["threads"], plain=True, name=k)
        else:
            path = save_pruned(m, Path(folder) / f"model{len(out)}.pt")
            spec = ModelSpec(checkpoint=str(path), device=str(dev), threads=p["threads"], pruned=True, name=k)
        out[k] = InterpolateWorkload(spec)
    return out


def mac_bound_check(gmac: Mapping[str, float]):
    """Ratios inside physical bounds: no architecture faster than its MAC ratio to the unpruned one allows."""
    def check(t: InterleavedTiming) -> list[str]:
        base = t.timings["unpruned"].median
        out = []
        for k, tm in t.timings.items():
            bound = gmac["unpruned"] / gmac[k] * MAC_BOUND_TOLERANCE
            if base / tm.median > bound:
                out.append(f"{k}: {base / tm.median:.2f}x the unpruned model, beyond its MAC bound of {bound:.2f}x")
        return out
    return check


def time_lineup(x: Inputs, lineup: Lineup, progress: bool, notes: list[str]) -> Speed:
    """One interleaved run over every distinct architecture (masks and same-plan checkpoints share a timing), each in
    its own worker process, checked against the noise limits and the MAC bound."""
    timed_names = list(dict.fromkeys(c.timed_as for c in lineup.configs.values()))
    gmacs = {k: model_gmac(lineup.configs[k].model, *x.size)[0] for k in timed_names}
    with tempfile.TemporaryDirectory(prefix="rifelab-pruning-") as tmp, \
            Harness.isolated(_timing_workloads(lineup, timed_names, x.p, x.device, tmp), progress) as harness:
        harness.prepare({k: FrameInputs.from_tensors([x.pair]) for k in timed_names})
        timing = harness.measure_checked(x.limits, mac_bound_check(gmacs), warmup=x.p["timing_warmup"],
                                         rounds=x.p["timing_rounds"], baseline="unpruned")
    for k, why in timing.stopped.items():
        notes.append(f"{k} was not timed: {why}")
    return Speed(timing, model_gmac(x.model, *x.size)[0])


def sweep_table(x: Inputs, lineup: Lineup, quality: Quality, speed: Speed) -> pd.DataFrame:
    """One row per configuration: size, cost, measured speedup (95% interval), held-out quality, Middlebury IE."""
    base_t, base_psnr, mb = speed.timings["unpruned"], quality.heldout["unpruned"]["psnr"].to_numpy(), quality.middlebury
    rows = []
    for k, c in lineup.configs.items():
        t = speed.timings.get(c.timed_as)
        ratio, lo, hi = speedup_ci(base_t, t, paired=True) if t is not None else (float("nan"),) * 3
        gmac, params = model_gmac(c.model, *x.size)
        q = quality.heldout[k]
        d = q["psnr"].to_numpy() - base_psnr
        pi = getattr(c.model, "pruning_info", None)
        rows.append({
            "config": k, "family": c.family, "method": c.method, "mode": c.mode,
            "sparsity": pi.plan.removed_fraction if pi else 0.0, "value": c.value,
            "finetuned": k.endswith("+ft"), "params_m": params / 1e6,
            "nonzero_params_m": nonzero_parameters(c.model.net) / 1e6, "gmac": gmac,
            "gmac_ratio": gmac / speed.base_gmac,
            "latency_ms": t.median * 1e3 if t else float("nan"), "latency_timed_as": c.timed_as,
            "worker": speed.timing.workers.get(c.timed_as), "noisy": speed.timing.noisy,
            "speedup": ratio, "speedup_ci_low": lo, "speedup_ci_high": hi,
            "psnr": float(q["psnr"].mean()), "ssim": float(q["ssim"].mean()), "dpsnr": float(d.mean()),
            "dpsnr_min": float(d.min()), "n_eval": len(d),
            "middlebury_ie": mb.get(k, float("nan")),
            "middlebury_die": mb[k] - mb["unpruned"] if k in mb else float("nan"),
        })
    return pd.DataFrame(rows)


@dataclass
class Extras:
    """The tables beside the sweep that the summary and metrics quote."""

    profile: pd.DataFrame
    shares: pd.DataFrame
    sensitivity: pd.DataFrame | None
    trap: pd.DataFrame


def publish_extras(run_: StudyRun, x: Inputs, lineup: Lineup, table: pd.DataFrame) -> Extras:
    """Latency profile, sensitivity and allocations, importance comparison, fine-tuning, Pareto, mask trap, claims."""
    p = x.p
    prof = layer_latency_profile(x.model, *x.size, rounds=max(3, p["timing_rounds"] // 2))
    shares = run_.table(group_latency_share(prof), "latency_share_per_group")
    run_.table(prof, "latency_profile_per_layer")
    run_.figure(plot_latency_share(shares, prof.attrs["forward_ms"]), "latency_share")
    sens = None
    if x.tables is not None:
        sens = run_.table(x.tables["sensitivity"], "sensitivity")
        run_.table(x.tables["latency_savings"], "latency_savings")
        run_.figure(plot_sensitivity(sens), "sensitivity")
        allocs = [allocate(x.tables["sensitivity"], x.tables["latency_savings"], b).table.assign(budget_db=b)
                  for b in p["budgets_db"]]
        run_.table(pd.concat(allocs, ignore_index=True), "allocations")
    if lineup.comparison:
        run_.table(pd.DataFrame(lineup.comparison).merge(table[["config", "psnr", "dpsnr"]], left_on="plan",
                                                         right_on="config").drop(columns="config"),
                   "importance_comparison")
    _publish_finetuning(run_, x)
    run_.figure(plot_pareto(table, p), "pareto")
    trap_plan = build_plan(x.model, p, "architecture_aware", p["trap_sparsity"], None)
    trap = run_.table(mask_trap(x.model, trap_plan, x.evals), "mask_trap")
    run_.table(claims.claims("pruning"), "published_claims")
    return Extras(prof, shares, sens, trap)


def _publish_finetuning(run_: StudyRun, x: Inputs) -> None:
    rows = [{"config": k, "steps": meta.get("steps"), "lr": meta.get("lr"),
             "first_loss": meta["losses"][0] if meta.get("losses") else None,
             "final_loss": float(np.mean(meta["losses"][-max(1, len(meta["losses"]) // 10):]))
             if meta.get("losses") else None,
             "train_seconds": meta.get("train_seconds"), "device": meta.get("device")}
            for k, (_, meta, _) in x.finetuned.items()]
    if rows:
        run_.table(pd.DataFrame(rows), "finetuning")
        run_.figure(plot_losses({k: meta.get("losses", []) for k, (_, meta, _) in x.finetuned.items()}),
                    "finetuning_loss")


def save_best(run_: StudyRun, x: Inputs, lineup: Lineup, verdict: Mapping[str, Any]) -> float | None:
    """Save the best fine-tuned model as best.pt, reload it, and return the largest output difference (or None)."""
    if not verdict.get("best_config"):
        return None
    best = lineup.configs[verdict["best_config"]].model
    path = save_pruned(best, run_.out / "best.pt", meta={"config": verdict["best_config"]})
    again = load_pruned(path, device=x.device)
    a, b = (t.to(x.device) for t in x.pair)
    with torch.inference_mode():
        return float((again.interpolate(a, b) - best.interpolate(a, b)).abs().max())


def _metrics(x: Inputs, table: pd.DataFrame, verdict: Mapping[str, Any], quality: Quality, speed: Speed,
             extras: Extras, reload_diff: float | None, seconds: float, notes: list[str]) -> dict[str, Any]:
    keys = ("speedup", "speedup_ci_low", "speedup_ci_high", "dpsnr", "psnr", "ssim", "gmac", "params_m", "latency_ms",
            "sparsity", "finetuned", "middlebury_ie")
    configs = {r["config"]: {k: r[k] for k in keys} for r in table.to_dict("records")}
    mask_w = extras.trap.set_index("variant")["max_abs_diff_to_physical"]
    h, w = x.size
    return {
        "configs": configs, **verdict,
        "unpruned_psnr": quality.unpruned_psnr, "unpruned_latency_ms": speed.timings["unpruned"].median * 1e3,
        "unpruned_gmac": speed.base_gmac, "eval_triplets": len(x.evals), "timing_frame": f"{w}x{h}",
        "forward_ms_outside_convs_share": float(extras.profile.loc[extras.profile["layer"] == "other", "share"].iloc[0]),
        "mask_trap_max_abs_diff_weights_only": float(mask_w.iloc[0]),
        "mask_trap_max_abs_diff_with_bias": float(mask_w.iloc[1]),
        "reload_max_abs_diff": reload_diff, "timing_stopped": speed.timing.stopped, "noisy": speed.timing.noisy,
        "timing": {"noisy": speed.timing.noisy, "attempts": speed.timing.attempts, "failed_checks": speed.timing.problems,
                   "workers": speed.timing.workers, "load": speed.timing.load.as_dict() if speed.timing.load else None,
                   "history": speed.timing.history},
        "study_seconds": seconds, "notes": notes,
    }


def _headline(verdict: Mapping[str, Any], quality: Quality, speed: Speed) -> dict[str, Any]:
    out = {"target_met": verdict["target_met"], "unpruned_psnr": round(quality.unpruned_psnr, 3),
           "unpruned_ms": round(speed.timings["unpruned"].median * 1e3, 2), "noisy": speed.timing.noisy}
    if verdict.get("best_config"):
        out.update({"best_speedup": round(verdict["best_speedup"], 3), "best_dpsnr": round(verdict["best_dpsnr"], 3)})
    return out


def _plot_data(table: pd.DataFrame, sens: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    out = {"sweep": table[table["mode"] != "mask"][["config", "speedup", "psnr"]]}
    if sens is not None:
        out["sensitivity"] = sens.assign(probe=lambda d: d["group"] + "@" + d["ratio"].map("{:g}".format))[
            ["probe", "dpsnr"]]
    return out


def with_timing_lines(lines: list[str], timing: InterleavedTiming) -> list[str]:
    """The summary with how the timing was made at its end and, when it stayed noisy, a warning first."""
    warning = [f"**noisy timing**: after {timing.attempts} timings these checks still failed: "
               f"{'; '.join(timing.problems)}. The latencies, speedups and the target verdict below are "
               "published flagged, not as clean results; rerun on an idle machine."] if timing.noisy else []
    return warning + lines + [f"Timing: each architecture in its own worker process, {timing.attempts} timing(s); "
                              f"load: {timing.load.describe() if timing.load else 'not recorded'}."]


# ----------------------------------------------------------------------------- the study


def run(
    profile: str = "cpu",
    overrides: Mapping[str, Any] | None = None,
    results_root: str | os.PathLike | None = None,
    params_path: str | os.PathLike | None = None,
) -> StudyResult:
    """Evaluate and time every configuration side by side, judge the target, save best.pt, publish."""
    with StudyRun.start("pruning", PARAMS, profile, overrides, results_root, params_path) as run_:
        t_start, notes = time.perf_counter(), []
        x = prepare(run_, profile, results_root)
        lineup = build_lineup(x)
        quality = score_quality(x, lineup, notes)
        speed = time_lineup(x, lineup, run_.progress, notes)
        table = run_.table(sweep_table(x, lineup, quality, speed), "sweep")
        verdict = judge(table, x.p)
        extras = publish_extras(run_, x, lineup, table)
        reload_diff = save_best(run_, x, lineup, verdict)
        metrics = _metrics(x, table, verdict, quality, speed, extras, reload_diff, time.perf_counter() - t_start, notes)
        lines = with_timing_lines(sentences(table, verdict, x.p, extras.shares, extras.sensitivity, notes),
                                  speed.timing)
        return run_.finish(metrics, _headline(verdict, quality, speed), _plot_data(table, extras.sensitivity), lines)


# ----------------------------------------------------------------------------- measuring


def _quality(model: RIFE, triplets: Sequence[Triplet], source: str) -> pd.DataFrame:
    return evaluate_triplets(model, triplets, source, methods=("rife",), progress=False)[0]


def mask_trap(model: RIFE, plan: ChannelPlan, triplets: Sequence[Triplet]) -> pd.DataFrame:
    """Same channels, three ways: masked weights (bias kept, as report 001), masked weights and biases, removed."""
    variants = {
        "mask (weights only, as report 001)": prune_model(model, plan, "mask", mask_bias=False),
        "mask (weights and biases)": prune_model(model, plan, "mask", mask_bias=True),
        "physical (channels removed)": prune_model(model, plan, "physical"),
    }
    outs: dict[str, list[torch.Tensor]] = {k: [] for k in variants}
    with torch.inference_mode():
        for tr in triplets:
            a, b = to_tensor(tr.frame0[None], model.device), to_tensor(tr.frame2[None], model.device)
            for k, m in variants.items():
                outs[k].append(m.interpolate(a, b).float().cpu())
    phys = outs["physical (channels removed)"]
    return pd.DataFrame([{"variant": k, "psnr": float(_quality(variants[k], triplets, "trap")["psnr"].mean()),
                          "max_abs_diff_to_physical": float(max((x - y).abs().max() for x, y in zip(o, phys)))}
                         for k, o in outs.items()])
