"""Pruning study: sensitivity-guided channel plans, distillation, and the lite width cut as the baseline to beat.

Two stages per device profile, both driven by the `pruning` section of the profile's params file:

- `finetune` (`python -m rifelab.studies.pruning --profile cpu`, DVC stage `finetune@cpu`): measures each prunable group's
  sensitivity (PSNR drop on held-out triplets when it alone is pruned) and latency savings (on this device),
  allocates per-group ratios within each loss budget, prunes the configurations named in `finetune`, and
  fine-tunes each by distillation from the unpruned model on real triplets that evaluation never sees. Each
  checkpoint (plan + state_dict + how it was trained) is written to `results/<profile>/finetune/`; a run that is
  interrupted resumes from its saved state, and a checkpoint whose settings have not changed is not trained again.
- `pruning` (`run`, notebook 03): evaluates every configuration (the naive-global and architecture-aware sweep, the
  lite cut, the sensitivity plans, other importance criteria, the fine-tuned checkpoints) on held-out triplets and
  Middlebury "other" (where present), times them side by side in one interleaved run, and judges the target.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from rifelab.publish import claims
from rifelab.frames.clips import Triplet, read_triplet_dataset
from rifelab.frames.images import to_tensor
from rifelab.frames.splits import SplitError, check_disjoint, clip_ranges, range_frames, range_triplets
from rifelab.pruning.distill import distill, distillation_targets, loss_gradients, task_data
from rifelab.measure.evaluation import evaluate_triplets
from rifelab.rife.model import RIFE
from rifelab.rife.checkpoints import load_rife
from rifelab.publish.notebooks import parse_set
from rifelab.measure.harness import Harness, InterleavedTiming, noise_limits
from rifelab.measure.workloads import FrameInputs, InterpolateWorkload, ModelSpec
from rifelab.measure.profiling import resolve_device, speedup_ci
from rifelab.publish.results import atomic_path, input_folders, results_base
from rifelab.pruning import prune as P
from rifelab.pruning import sensitivity as S
from rifelab.studies.base import Param, ParamError, StudyResult, StudyRun, load_study_params

log = logging.getLogger(__name__)

__all__ = ["PARAMS", "NOTEBOOK", "run", "finetune", "finetune_dir", "main", "FinetuneSpec",
           "parse_finetune"]

NOTEBOOK = "03_pruning.ipynb"
STATE_SUFFIX = ".state.pt"

PARAMS: dict[str, Param] = {
    "sparsities": Param("list", "sweep: share of prunable channels removed", item="float", low=0.0, high=0.95),
    "methods": Param("list", "sweep methods", item="str", choices=P.METHODS),
    "modes": Param("list", "sweep modes: mask (weights zeroed) | physical (channels removed)", item="str",
                   choices=P.MODES),
    "protected": Param("list", "layers kept whole (fnmatch over conv names)", item="str"),
    "ratio_scale": Param("dict", "architecture-aware: pattern -> multiplier of the sparsity"),
    "min_channels": Param("int", "architecture-aware: fewest channels a group keeps", low=1),
    "round_to": Param("int", "kept channel counts are multiples of this", low=1),
    "naive_min_channels": Param("int", "naive global: fewest channels a group keeps", low=1),
    "importance": Param("str", "importance criterion of the sensitivity plans", choices=P.IMPORTANCES),
    "compare_importance": Param("list", "other criteria tried on the first budget's plan", item="str",
                                choices=P.IMPORTANCES),
    "sensitivity_ratios": Param("list", "ratios each group alone is pruned at", item="float", low=0.01, high=0.95),
    "sensitivity_ranges": Param("dict", "clip -> [start, stop) frames of the sensitivity triplets"),
    "sensitivity_triplets": Param("int", "cut-free sensitivity triplets per clip", low=1),
    "budgets_db": Param("list", "loss budgets (summed single-group PSNR drops, dB) of the sensitivity plans",
                        item="float", low=0.0),
    "lite_ratio": Param("float", "lite baseline: uniform width cut (0.25: 192/128/96/64 -> 144/96/72/48)",
                        low=0.01, high=0.95),
    "latency_rounds": Param("int", "interleaved rounds of the per-group latency table", low=1),
    "finetune": Param("list", "configurations fine-tuned: lite | sensitivity@BUDGET | METHOD@SPARSITY", item="str"),
    "finetune_steps": Param("int", "distillation steps per configuration", low=0),
    "finetune_lr": Param("float", "AdamW learning rate (cosine decay to zero)", low=1e-7, high=1.0),
    "finetune_batch": Param("int", "crops per step", low=1),
    "finetune_crop": Param("int", "crop size in pixels (multiple of 64)", low=64),
    "flow_weight": Param("float", "loss = L1(frame) + flow_weight * L1(flow)", low=0.0),
    "finetune_save_every": Param("int", "steps between saved training states (resume points)", low=1, tracked=False),
    "train_ranges": Param("dict", "clip -> [start, stop) frames used for fine-tuning"),
    "train_triplets": Param("int", "cut-free training triplets per clip", low=1),
    "eval_ranges": Param("dict", "clip -> [start, stop) held-out evaluation frames"),
    "eval_triplets": Param("int", "cut-free held-out triplets per clip", low=1),
    "middlebury_path": Param("str", "Middlebury 'other' folder (optional; skipped with the reason if absent)",
                             nullable=True),
    "middlebury_limit": Param("int", "at most this many Middlebury triplets", low=1),
    "timing_clip": Param("str", "clip whose first frame pair is timed"),
    "timing_warmup": Param("int", "unrecorded calls per model before timing", low=0),
    "timing_rounds": Param("int", "interleaved timed rounds over all models", low=1),
    "noise": Param("dict", "when the timing counts as disturbed: max_spread (p90/p10), max_other_cpu (cores other "
                   "processes may use), max_steal (share), attempts (timings in all before publishing flagged noisy)"),
    "trap_sparsity": Param("float", "sparsity of the mask-trap comparison", low=0.0, high=0.95),
    "target_speedup": Param("float", "target: measured speedup at least this", low=1.0),
    "target_ci_low": Param("float", "target: lower end of the speedup's 95% interval at least this", low=0.0),
    "target_max_loss_db": Param("float", "target: PSNR loss on held-out triplets at most this (dB)", low=0.0),
    "progress": Param("bool", "tqdm progress bars", tracked=False),
}


# ----------------------------------------------------------------------------- what is fine-tuned


@dataclass(frozen=True)
class FinetuneSpec:
    """One fine-tuned configuration: its name in params, its row name in the sweep, and its file."""

    name: str
    kind: str  # lite | sensitivity | naive_global | architecture_aware
    value: float  # lite ratio, loss budget (dB) or sparsity

    @property
    def file(self) -> str:
        return self.name.replace("@", "-").replace("/", "-") + ".pt"

    def config(self, finetuned: bool = True) -> str:
        """Row name in the sweep table (`+ft` when fine-tuned)."""
        return config_name(self.kind, "physical", self.value) + ("+ft" if finetuned else "")


def config_name(kind: str, mode: str, value: float, importance: str | None = None) -> str:
    """Row name: 'architecture_aware/physical/0.25', 'lite/physical/0.25', 'sensitivity/physical/2dB[/taylor]'."""
    v = f"{value:g}dB" if kind == "sensitivity" else f"{value:g}"
    return f"{kind}/{mode}/{v}" + (f"/{importance}" if importance else "")


def parse_finetune(names: Sequence[str], p: Mapping[str, Any]) -> list[FinetuneSpec]:
    """`finetune` entries as specs; each must name something the study builds."""
    out = []
    for n in names:
        if n == "lite":
            out.append(FinetuneSpec(n, "lite", float(p["lite_ratio"])))
            continue
        kind, _, val = n.partition("@")
        try:
            v = float(val)
        except ValueError:
            raise ParamError(f"finetune entry {n!r}: expected 'lite', 'sensitivity@BUDGET_DB' or 'METHOD@SPARSITY'") from None
        if kind == "sensitivity":
            if v not in [float(b) for b in p["budgets_db"]]:
                raise ParamError(f"finetune entry {n!r}: budget {v:g} dB is not in budgets_db {p['budgets_db']}")
        elif kind in P.METHODS:
            if v not in [float(s) for s in p["sparsities"]] or kind not in p["methods"]:
                raise ParamError(f"finetune entry {n!r} is not in the sweep's methods/sparsities")
        else:
            raise ParamError(f"finetune entry {n!r}: unknown kind {kind!r}; expected lite, sensitivity or one of "
                             f"{list(P.METHODS)}")
        out.append(FinetuneSpec(n, kind, v))
    if len({s.name for s in out}) != len(out):
        raise ParamError(f"finetune lists a configuration twice: {list(names)}")
    return out


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


PLANNING_KEYS = ("checkpoint", "seed", "protected", "round_to", "importance", "sensitivity_ratios",
                 "sensitivity_ranges", "sensitivity_triplets", "latency_rounds", "timing_clip")
TRAINING_KEYS = ("checkpoint", "seed", "finetune_steps", "finetune_lr", "finetune_batch", "finetune_crop",
                 "flow_weight", "train_ranges", "train_triplets", "protected", "round_to", "min_channels",
                 "ratio_scale", "naive_min_channels", "lite_ratio", "importance")


def planning_fingerprint(p: Mapping[str, Any]) -> str:
    """What the sensitivity and latency tables depend on."""
    return _hash({k: p[k] for k in PLANNING_KEYS})


def spec_fingerprint(p: Mapping[str, Any], spec: FinetuneSpec) -> str:
    """What one fine-tuned checkpoint depends on (a sensitivity plan also on the planning tables)."""
    return _hash({"spec": spec.name, "training": {k: p[k] for k in TRAINING_KEYS},
                  "planning": planning_fingerprint(p) if spec.kind == "sensitivity" else None})


def finetune_dir(profile: str, results_root: str | os.PathLike | None = None) -> Path:
    """Folder the finetune stage writes its checkpoints and planning tables to (the pipeline's: committed results)."""
    return results_base(profile, results_root) / "finetune"


def finetune_source(p: Mapping[str, Any], profile: str, results_root: str | os.PathLike | None) -> Path:
    """Where the study reads the fine-tuned checkpoints: the run's own root if it holds all of them up to date, else
    the committed results (a trial run anywhere uses the pipeline's), else the run's root (whose error names it)."""
    specs = parse_finetune(p["finetune"], p)
    for folder in input_folders(profile, results_root, "finetune"):
        fresh = all(_finished_meta(folder / s.file, p, s) for s in specs)
        if fresh and (not p["budgets_db"] or _fresh_tables(p, folder) is not None):
            return folder
    return finetune_dir(profile, results_root)


# ----------------------------------------------------------------------------- data


SPLITS = {"fine-tuning": ("train_ranges", "train_triplets"),
          "sensitivity (plans)": ("sensitivity_ranges", "sensitivity_triplets"),
          "held-out evaluation": ("eval_ranges", "eval_triplets")}


def _check_splits(p: Mapping[str, Any]) -> None:
    """Refuse malformed ranges, and training, sensitivity and evaluation ranges that share frames."""
    try:
        check_disjoint({use: range_frames(p[key], key) for use, (key, _) in SPLITS.items()})
    except SplitError as exc:
        raise ParamError(f"pruning: training, sensitivity and evaluation frames must not overlap: {exc}") from None


def _triplets(p: Mapping[str, Any], use: str) -> list[Triplet]:
    """The cut-free triplets of one split (`SPLITS`), spread evenly over its ranges."""
    key, count = SPLITS[use]
    return range_triplets(p[key], p[count], name=key)


def _split_table(p: Mapping[str, Any]) -> pd.DataFrame:
    return pd.DataFrame([{"use": use, "clip": r.clip, "frames": f"[{r.start}, {r.stop})", "triplets_per_clip": p[n]}
                         for use, (key, n) in SPLITS.items() for r in clip_ranges(p[key], key)])


#: a pruned model cannot run much faster than its MAC reduction allows (the non-conv time is not cut at all)
MAC_BOUND_TOLERANCE = 1.25


def _timing_workloads(models: Mapping[str, RIFE], names: Sequence[str], p: Mapping[str, Any], dev: torch.device,
                      folder: str) -> dict[str, InterpolateWorkload]:
    """One worker workload per timed architecture: pruned models saved to `folder` and rebuilt in their worker."""
    out = {}
    for k in names:
        if getattr(models[k], "pruning_info", None) is None:
            spec = ModelSpec(checkpoint=p["checkpoint"], device=str(dev), threads=p["threads"], plain=True, name=k)
        else:
            path = P.save_pruned(models[k], Path(folder) / f"model{len(out)}.pt")
            spec = ModelSpec(checkpoint=str(path), device=str(dev), threads=p["threads"], pruned=True, name=k)
        out[k] = InterpolateWorkload(spec)
    return out


def _mac_bound_check(gmac: Mapping[str, float]):
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


def _timing_pair(clip: str) -> tuple[torch.Tensor, torch.Tensor]:
    tr = range_triplets({clip: [0, 3]}, 1)[0]
    return to_tensor(tr.frame0[None]), to_tensor(tr.frame2[None])


# ----------------------------------------------------------------------------- planning (sensitivity, latency)


def _fresh_tables(p: Mapping[str, Any], folder: Path) -> dict[str, pd.DataFrame] | None:
    """The sensitivity and latency-savings tables in `folder` if they were made with the current settings."""
    meta_path = folder / "planning.json"
    names = ("sensitivity", "latency_savings")
    if not meta_path.is_file() or not all((folder / f"{n}.csv").is_file() for n in names):
        return None
    if json.loads(meta_path.read_text()).get("fingerprint") != planning_fingerprint(p):
        return None
    return {n: pd.read_csv(folder / f"{n}.csv") for n in names}


def _planning_tables(model: RIFE, p: Mapping[str, Any], folder: Path, progress: bool) -> dict[str, pd.DataFrame]:
    """Sensitivity and latency-savings tables, read from `folder` when made with the same settings, else measured
    (on this device) and written there with their fingerprint."""
    fresh = _fresh_tables(p, folder)
    if fresh is not None:
        return fresh
    t0 = time.perf_counter()
    sens_triplets = _triplets(p, "sensitivity (plans)")
    sens = S.group_sensitivity(model, sens_triplets, p["sensitivity_ratios"], importance=_importance(model, p, p["importance"]),
                               protected=p["protected"], round_to=p["round_to"], progress=progress)
    t1 = time.perf_counter()
    h, w = _timing_pair(p["timing_clip"])[0].shape[-2:]
    save = S.group_latency_savings(model, p["sensitivity_ratios"], h, w, protected=p["protected"],
                                   round_to=p["round_to"], rounds=p["latency_rounds"], progress=progress)
    t2 = time.perf_counter()
    for n, df in (("sensitivity", sens), ("latency_savings", save)):
        with atomic_path(folder / f"{n}.csv") as tmp:
            df.to_csv(tmp, index=False)
    with atomic_path(folder / "planning.json") as tmp:
        tmp.write_text(json.dumps({"fingerprint": planning_fingerprint(p), "sensitivity_seconds": round(t1 - t0, 1),
                                   "latency_seconds": round(t2 - t1, 1), "frame": f"{w}x{h}",
                                   "sensitivity_triplets": [t.name for t in sens_triplets]}, indent=2))
    return {"sensitivity": sens, "latency_savings": save}


def _importance(model: RIFE, p: Mapping[str, Any], criterion: str) -> str | dict[str, np.ndarray]:
    """A criterion name, or for Taylor the scores from the task loss's gradients on the training triplets."""
    if criterion != "taylor":
        return criterion
    work = copy.deepcopy(model)
    loss_gradients(work, task_data(_triplets(p, "fine-tuning")),
                   crop=min(256, p["finetune_crop"]))
    return P.importance_scores(work.net, "taylor")


def _build_plan(model: RIFE, p: Mapping[str, Any], kind: str, value: float, tables: Mapping[str, pd.DataFrame] | None,
                importance: str | Mapping[str, np.ndarray] | None = None) -> P.ChannelPlan:
    net = model.net
    if kind == "lite":
        return P.plan_lite(net, value, round_to=p["round_to"])
    if kind == "sensitivity":
        assert tables is not None
        alloc = S.allocate(tables["sensitivity"], tables["latency_savings"], value)
        return S.plan_from_allocation(net, alloc, importance=importance or _importance(model, p, p["importance"]),
                                      round_to=p["round_to"],
                                      protected=p["protected"])
    aware = {"protected": p["protected"], "ratio_scale": p["ratio_scale"], "min_channels": p["min_channels"],
             "round_to": p["round_to"], "naive_min_channels": p["naive_min_channels"]}
    return P.make_plan(net, kind, value, **(aware if kind == "architecture_aware" else
                                            {"naive_min_channels": p["naive_min_channels"]}))


# ----------------------------------------------------------------------------- the finetune stage


def finetune(
    profile: str = "cpu",
    overrides: Mapping[str, Any] | None = None,
    results_root: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """The `finetune` stage: plan and fine-tune every configuration in `finetune`; one row per checkpoint.

    A checkpoint whose fingerprint (its plan's and its training's settings) matches is left as it is, so a forced
    rerun with finished checkpoints ends in seconds; an interrupted training resumes from its `.state.pt` file.
    """
    p = load_study_params("pruning", PARAMS, profile, overrides)
    _check_splits(p)
    specs = parse_finetune(p["finetune"], p)
    torch.manual_seed(p["seed"])
    np.random.seed(p["seed"])
    if p.get("threads"):
        torch.set_num_threads(int(p["threads"]))
    device = resolve_device(p["device"])
    folder = finetune_dir(profile, results_root)
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    pending = []
    for spec in specs:
        path = folder / spec.file
        fp = spec_fingerprint(p, spec)
        meta = P.read_pruned_meta(path) if path.is_file() else {}
        if meta.get("fingerprint") == fp and meta.get("finished"):
            rows.append({"config": spec.config(), "file": spec.file, "status": "up to date",
                         "steps": meta.get("steps"), "train_seconds": meta.get("train_seconds")})
        else:
            pending.append((spec, fp))
    need_tables = bool(p["budgets_db"]) and _fresh_tables(p, folder) is None
    if not pending and not need_tables:
        log.info("finetune: every checkpoint in %s is up to date", folder)
        return pd.DataFrame(rows)
    teacher = load_rife(p["checkpoint"], device=device)
    tables = _planning_tables(teacher, p, folder, p["progress"]) if p["budgets_db"] else None
    if not pending:
        return pd.DataFrame(rows)
    train = _triplets(p, "fine-tuning")
    data = distillation_targets(teacher, train, progress=p["progress"])
    for spec, fp in pending:
        plan = _build_plan(teacher, p, spec.kind, spec.value, tables)
        student = P.prune_model(teacher, plan, mode="physical")
        state = folder / (spec.file[: -len(".pt")] + STATE_SUFFIX)
        res = distill(student, data, steps=p["finetune_steps"], lr=p["finetune_lr"], batch_size=p["finetune_batch"],
                      crop=p["finetune_crop"], flow_weight=p["flow_weight"], seed=p["seed"], progress=p["progress"],
                      state_path=state, save_every=p["finetune_save_every"])
        meta = {"fingerprint": fp, "finished": True, "spec": spec.name, "steps": res.steps, "lr": res.lr,
                "losses": [round(x, 6) for x in res.losses], "train_seconds": round(res.seconds, 1),
                "resumed_at": res.resumed_at, "train_triplets": [t.name for t in train], "device": str(device)}
        P.save_pruned(student, folder / spec.file, meta=meta)
        state.unlink(missing_ok=True)
        rows.append({"config": spec.config(), "file": spec.file, "status": "trained" if not res.resumed_at else
                     f"resumed at step {res.resumed_at}", "steps": res.steps, "train_seconds": round(res.seconds, 1)})
    return pd.DataFrame(rows)


def _finished_meta(path: Path, p: Mapping[str, Any], spec: FinetuneSpec) -> dict[str, Any] | None:
    """The checkpoint's metadata if it is finished and trained with the current settings, else None."""
    meta = P.read_pruned_meta(path) if path.is_file() else {}
    return meta if meta.get("fingerprint") == spec_fingerprint(p, spec) and meta.get("finished") else None


def _load_finetuned(p: Mapping[str, Any], profile: str, folder: Path,
                    device: torch.device) -> dict[str, tuple[RIFE, dict[str, Any], FinetuneSpec]]:
    """Every checkpoint of `finetune` in `folder`, checked against the current settings (else: run the finetune stage)."""
    out = {}
    for spec in parse_finetune(p["finetune"], p):
        path = folder / spec.file
        meta = _finished_meta(path, p, spec)
        if meta is None:
            raise ParamError(f"the fine-tuned checkpoint {path} is missing or was trained with other settings; run "
                             f"`python -m rifelab.studies.pruning --profile {profile}` first (`dvc repro` runs it as finetune@{profile})")
        out[spec.config()] = (P.load_pruned(path, device=device), meta, spec)
    return out


# ----------------------------------------------------------------------------- measuring


def _quality(model: RIFE, triplets: Sequence[Triplet], source: str) -> pd.DataFrame:
    return evaluate_triplets(model, triplets, source, methods=("rife",), progress=False)[0]


def mask_trap(model: RIFE, plan: P.ChannelPlan, triplets: Sequence[Triplet]) -> pd.DataFrame:
    """Same channels, three ways: masked weights (bias kept, as report 001), masked weights and biases, removed."""
    variants = {
        "mask (weights only, as report 001)": P.prune_model(model, plan, "mask", mask_bias=False),
        "mask (weights and biases)": P.prune_model(model, plan, "mask", mask_bias=True),
        "physical (channels removed)": P.prune_model(model, plan, "physical"),
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


# ----------------------------------------------------------------------------- figures


def plot_sensitivity(sens: pd.DataFrame) -> Any:
    """Heatmap: PSNR drop per group (rows) and ratio (columns) when that group alone is pruned."""
    grid = sens.pivot(index="group", columns="ratio", values="dpsnr").reindex(list(dict.fromkeys(sens["group"])))
    fig, ax = plt.subplots(figsize=(6, max(4, 0.22 * len(grid))))
    im = ax.imshow(grid.to_numpy(), aspect="auto", cmap="magma", vmax=0)
    ax.set_xticks(range(len(grid.columns)), [f"{c:g}" for c in grid.columns])
    ax.set_yticks(range(len(grid)), grid.index, fontsize=6)
    for (i, j), v in np.ndenumerate(grid.to_numpy()):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=5, color="w" if v < grid.to_numpy().min() / 2 else "k")
    ax.set_xlabel("share of the group's channels removed (that group alone)")
    ax.set_title("Sensitivity: PSNR change on held-out triplets (dB)")
    fig.colorbar(im, ax=ax, label="dPSNR (dB)")
    fig.tight_layout()
    return fig


def plot_latency_share(shares: pd.DataFrame, forward_ms: float) -> Any:
    """Per group: share of the measured forward time beside its share of MACs."""
    fig, ax = plt.subplots(figsize=(10, 4))
    x = np.arange(len(shares))
    ax.bar(x - 0.2, 100 * shares["share"], 0.4, label="measured time (profile on this device)")
    ax.bar(x + 0.2, 100 * shares["mac_share"], 0.4, label="MACs")
    ax.set_xticks(x, shares["group"], rotation=90, fontsize=6)
    ax.set_ylabel("% of the forward pass")
    ax.set_title(f"Where the time goes: measured time vs MACs per channel group (forward {forward_ms:.0f} ms)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_pareto(table: pd.DataFrame, p: Mapping[str, Any]) -> Any:
    """Held-out PSNR against measured speedup (95% intervals), target box shaded, physical points only."""
    fig, ax = plt.subplots(figsize=(8, 5))
    t = table[(table["mode"] != "mask")]
    for fam, g in t.groupby("family", sort=False):
        ax.errorbar(g["speedup"], g["psnr"], xerr=[g["speedup"] - g["speedup_ci_low"], g["speedup_ci_high"] - g["speedup"]],
                    fmt="*" if fam.endswith("+ft") else "o", markersize=10 if fam.endswith("+ft") else 5, capsize=2,
                    label=fam)
    base = float(table.loc[table["config"] == "unpruned", "psnr"].iloc[0])
    ax.axhline(base - p["target_max_loss_db"], color="g", linestyle=":",
               label=f"target: >= {p['target_speedup']:g}x at <= {p['target_max_loss_db']:g} dB loss")
    ax.axvline(p["target_speedup"], color="g", linestyle=":")
    ax.set_xlabel("measured speedup over the unpruned model (median ratio, 95% interval)")
    ax.set_ylabel("PSNR on held-out triplets (dB)")
    ax.set_title("Quality against measured speed")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_losses(losses: Mapping[str, Sequence[float]]) -> Any:
    """Distillation loss per step (moving average over 20 steps) of every fine-tuned checkpoint."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, ls in losses.items():
        if len(ls):
            k = min(20, len(ls))
            ax.plot(np.convolve(ls, np.ones(k) / k, mode="valid"), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("distillation loss (moving average)")
    ax.set_yscale("log")
    ax.set_title("Fine-tuning: loss curves")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- verdicts


def judge(table: pd.DataFrame, p: Mapping[str, Any]) -> dict[str, Any]:
    """The target check over the pruned configurations, and whether each fine-tuned point beats the lite cut."""
    pruned = table[table["config"] != "unpruned"]
    meets = pruned[(pruned["speedup"] >= p["target_speedup"]) & (pruned["speedup_ci_low"] >= p["target_ci_low"])
                   & (pruned["dpsnr"] >= -p["target_max_loss_db"])]
    within = pruned[pruned["dpsnr"] >= -p["target_max_loss_db"]]
    ft = pruned[pruned["finetuned"]]
    lite = ft[ft["method"] == "lite"]
    out: dict[str, Any] = {
        "target_met": bool(len(meets)),
        "target_config": meets.sort_values("speedup").iloc[-1]["config"] if len(meets) else None,
        "fastest_within_loss_budget": within.sort_values("speedup").iloc[-1]["config"] if len(within) else None,
        "fastest_within_loss_budget_speedup": float(within["speedup"].max()) if len(within) else None,
    }
    if len(ft):
        # the best fine-tuned point: meeting the target if any, else the fastest within the loss budget, else the
        # one with the smallest loss among those at least as fast as the target asks
        cand = meets if len(meets) else ft[ft["dpsnr"] >= -p["target_max_loss_db"]]
        best = cand.sort_values("speedup").iloc[-1] if len(cand) else ft.sort_values("dpsnr").iloc[-1]
        out.update({"best_config": best["config"], "best_speedup": float(best["speedup"]),
                    "best_speedup_ci_low": float(best["speedup_ci_low"]), "best_dpsnr": float(best["dpsnr"])})
    if len(lite):
        lt = lite.iloc[0]
        verdicts = {}
        for _, r in ft[ft["method"] != "lite"].iterrows():
            faster, better = r["speedup"] >= lt["speedup"], r["psnr"] >= lt["psnr"]
            verdicts[r["config"]] = ("beats lite" if faster and better else "loses to lite" if not faster and not better
                                     else "trade-off (faster, lower PSNR)" if faster else "trade-off (slower, higher PSNR)")
        out["vs_lite"] = verdicts
    return out


def _sentences(table: pd.DataFrame, verdict: Mapping[str, Any], p: Mapping[str, Any], profile_share: pd.DataFrame,
               sens: pd.DataFrame | None, notes: list[str]) -> list[str]:
    base = table.set_index("config").loc["unpruned"]
    lines = [f"Unpruned RIFE 4.0: {base['psnr']:.2f} dB on {int(base['n_eval'])} held-out triplets, "
             f"{base['latency_ms']:.1f} ms per frame pair ({p['timing_clip']}, median of {p['timing_rounds']} "
             f"interleaved rounds)."]
    tgt = f">= {p['target_speedup']:g}x (95% interval from >= {p['target_ci_low']:g}x) at <= {p['target_max_loss_db']:g} dB"
    if verdict["target_met"]:
        r = table.set_index("config").loc[verdict["target_config"]]
        lines.append(f"**Target met** ({tgt}): {verdict['target_config']} runs {r['speedup']:.2f}x "
                     f"[{r['speedup_ci_low']:.2f}, {r['speedup_ci_high']:.2f}] at {r['dpsnr']:+.2f} dB.")
    else:
        lines.append(f"**Target missed** ({tgt}): no pruned configuration reaches it in this run.")
        if verdict.get("best_config"):
            lines.append(f"Best fine-tuned point (saved as best.pt): {verdict['best_config']} at {verdict['best_speedup']:.2f}x "
                         f"(interval from {verdict['best_speedup_ci_low']:.2f}x), {verdict['best_dpsnr']:+.2f} dB.")
        if verdict["fastest_within_loss_budget"]:
            lines.append(f"Fastest configuration within {p['target_max_loss_db']:g} dB: "
                         f"{verdict['fastest_within_loss_budget']} at {verdict['fastest_within_loss_budget_speedup']:.2f}x.")
        else:
            lines.append(f"No pruned configuration stays within {p['target_max_loss_db']:g} dB of the unpruned model.")
        fast = table[(table["config"] != "unpruned") & (table["speedup"] >= p["target_speedup"])]
        if len(fast):
            r = fast.sort_values("dpsnr").iloc[-1]
            why = (f"the distillation budget does not recover the last {-r['dpsnr'] - p['target_max_loss_db']:.2f} dB"
                   if r["dpsnr"] < -p["target_max_loss_db"] else
                   f"its interval's lower end, {r['speedup_ci_low']:.2f}x, is below {p['target_ci_low']:g}x")
            lines.append(f"Among the configurations at >= {p['target_speedup']:g}x, the smallest loss is {r['dpsnr']:+.2f} dB "
                         f"({r['config']}): {why}.")
    other = profile_share[profile_share["group"] == "other"]
    if len(other):
        lead = "Why, in part: " if not verdict["target_met"] else "Where the time goes: "
        lines.append(f"{lead}{100 * float(other['share'].iloc[0]):.0f}% of the measured forward "
                     "time is outside the convs (warps, resizes, concatenations), which no channel cut shortens; "
                     + ", ".join(f"block {int(b)} {100 * s:.0f}% of the time for {100 * m:.0f}% of the MACs"
                                 for b, s, m in profile_share[profile_share["block"] >= 0].groupby("block")[["share", "mac_share"]]
                                 .sum().itertuples()) + ".")
    if sens is not None and len(sens):
        worst = sens.sort_values("dpsnr").iloc[0]
        mild = sens[sens["ratio"] == sens["ratio"].max()].sort_values("dpsnr", ascending=False).iloc[0]
        lines.append(f"Sensitivity: the most fragile group is {worst['group']} ({worst['dpsnr']:+.2f} dB at "
                     f"{worst['ratio']:g} alone); {mild['group']} loses only {mild['dpsnr']:+.2f} dB at {mild['ratio']:g}.")
    for cfg, v in (verdict.get("vs_lite") or {}).items():
        lines.append(f"{cfg} vs the lite cut (fine-tuned alike): {v}.")
    return lines + notes


# ----------------------------------------------------------------------------- the study


def run(
    profile: str = "cpu",
    overrides: Mapping[str, Any] | None = None,
    results_root: str | os.PathLike | None = None,
    params_path: str | os.PathLike | None = None,
) -> StudyResult:
    """Evaluate and time every configuration side by side, judge the target, save best.pt, publish."""
    with StudyRun.start("pruning", PARAMS, profile, overrides, results_root, params_path) as run_:
        p, model, dev, notes = run_.params, run_.model(), run_.device, []
        _check_splits(p)
        try:
            limits = noise_limits(p["noise"])
        except ValueError as exc:
            raise ParamError(f"pruning.{exc}") from None
        t_start = time.perf_counter()
        run_.table(_split_table(p), "data_split")
        evals = _triplets(p, "held-out evaluation")
        img0, img1 = _timing_pair(p["timing_clip"])
        h, w = img0.shape[-2:]
        folder = finetune_source(p, profile, results_root)
        finetuned = _load_finetuned(p, profile, folder, dev)
        tables = _fresh_tables(p, folder) if p["budgets_db"] else None
        if p["budgets_db"] and tables is None:
            raise ParamError(f"the sensitivity tables in {folder} are missing or were made with other settings; run "
                             f"`python -m rifelab.studies.pruning --profile {profile}` first (`dvc repro` runs it as finetune@{profile})")

        # every configuration: (model, family, method, mode, value, timed as)
        models: dict[str, RIFE] = {"unpruned": model}
        info: dict[str, dict[str, Any]] = {"unpruned": {"family": "unpruned", "method": "unpruned", "mode": "none",
                                                          "value": 0.0, "timed_as": "unpruned"}}
        plans: dict[str, P.ChannelPlan] = {}

        def add(name: str, m: RIFE, family: str, method: str, mode: str, value: float, timed_as: str) -> None:
            models[name] = m
            info[name] = {"family": family, "method": method, "mode": mode, "value": value, "timed_as": timed_as}

        for meth in p["methods"]:
            for s in p["sparsities"]:
                plan = plans.setdefault(f"{meth}/{s:g}", _build_plan(model, p, meth, s, None))
                for mode in p["modes"]:
                    name = config_name(meth, mode, s)
                    timed = name if mode == "physical" else "unpruned"  # masks change no shape, no time
                    add(name, P.prune_model(model, plan, mode=mode), f"{meth}, {mode}", meth, mode, s, timed)
        lite_plan = _build_plan(model, p, "lite", p["lite_ratio"], None)
        lite_name = config_name("lite", "physical", p["lite_ratio"])
        add(lite_name, P.prune_model(model, lite_plan), "lite", "lite", "physical", p["lite_ratio"], lite_name)
        for b in p["budgets_db"]:
            name = config_name("sensitivity", "physical", b)
            plans[name] = _build_plan(model, p, "sensitivity", b, tables)
            add(name, P.prune_model(model, plans[name]), "sensitivity", "sensitivity", "physical", b, name)
        comparison = []
        if p["budgets_db"]:
            b0 = p["budgets_db"][0]
            ref = config_name("sensitivity", "physical", b0)
            for crit in p["compare_importance"]:
                if crit == p["importance"]:
                    continue
                name = config_name("sensitivity", "physical", b0, crit)
                plan = _build_plan(model, p, "sensitivity", b0, tables, importance=_importance(model, p, crit))
                add(name, P.prune_model(model, plan), f"sensitivity, {crit} importance", "sensitivity", "physical",
                    b0, ref)
                same = np.mean([len(set(plan.keep[g]) & set(plans[ref].keep[g])) / len(plan.keep[g])
                                for g in plan.keep if len(plan.keep[g]) < plan.groups[g].width] or [1.0])
                comparison.append({"criterion": crit, "plan": name, "kept_channels_shared_with_"
                                   + p["importance"]: float(same)})
        for name, (m, _, spec) in finetuned.items():
            twin = spec.config(finetuned=False)
            family = {"lite": "lite", "sensitivity": "sensitivity"}.get(spec.kind, f"{spec.kind}, physical")
            if twin not in models:  # a fine-tuned plan outside the sweep: time its own architecture
                add(twin, P.prune_model(model, m.pruning_info.plan), family, spec.kind, "physical", spec.value, twin)
            same = models[twin].pruning_info.plan.keep == m.pruning_info.plan.keep
            add(name, m, family + " +ft", spec.kind, "physical", spec.value, info[twin]["timed_as"] if same else name)

        # quality on held-out triplets
        q = {k: _quality(m, evals, "held-out") for k, m in models.items()}
        base_psnr = q["unpruned"]["psnr"].to_numpy()
        # Middlebury "other": unpruned, lite and every fine-tuned model
        mb: dict[str, float] = {}
        mb_path = p["middlebury_path"]
        if mb_path and Path(mb_path).is_dir():
            mb_trip = list(read_triplet_dataset(mb_path, limit=p["middlebury_limit"]))
            for k in ["unpruned", lite_name] + list(finetuned):
                mb[k] = float(evaluate_triplets(models[k], mb_trip, "middlebury", methods=("rife",),
                                                progress=False)[0]["ie"].mean())
        else:
            notes.append(f"Middlebury 'other' IE skipped: {mb_path!r} not found (optional; set "
                         "pruning.middlebury_path to your copy).")

        # speed: one interleaved run over every distinct architecture
        timed_names = list(dict.fromkeys(i["timed_as"] for i in info.values()))
        a, b = img0.to(dev), img1.to(dev)
        gmacs = {k: P.model_gmac(models[k], h, w)[0] for k in timed_names}
        with tempfile.TemporaryDirectory(prefix="rifelab-pruning-") as tmp, \
                Harness.isolated(_timing_workloads(models, timed_names, p, dev, tmp), run_.progress) as harness:
            harness.prepare({k: FrameInputs.from_tensors([(img0, img1)]) for k in timed_names})
            timing = harness.measure_checked(limits, _mac_bound_check(gmacs), warmup=p["timing_warmup"],
                                             rounds=p["timing_rounds"], baseline="unpruned")
        for k, why in timing.stopped.items():
            notes.append(f"{k} was not timed: {why}")
        base_t = timing.timings["unpruned"]
        base_gmac, _ = P.model_gmac(model, h, w)
        rows = []
        for k, m in models.items():
            i, t = info[k], timing.timings.get(info[k]["timed_as"])
            ratio, lo, hi = speedup_ci(base_t, t, paired=True) if t is not None else (float("nan"),) * 3
            gmac, params = P.model_gmac(m, h, w)
            d = q[k]["psnr"].to_numpy() - base_psnr
            pi = getattr(m, "pruning_info", None)
            rows.append({
                "config": k, "family": i["family"], "method": i["method"], "mode": i["mode"],
                "sparsity": pi.plan.removed_fraction if pi else 0.0, "value": i["value"],
                "finetuned": k.endswith("+ft"), "params_m": params / 1e6,
                "nonzero_params_m": P.nonzero_parameters(m.net) / 1e6, "gmac": gmac, "gmac_ratio": gmac / base_gmac,
                "latency_ms": t.median * 1e3 if t else float("nan"), "latency_timed_as": i["timed_as"],
                "worker": timing.workers.get(i["timed_as"]), "noisy": timing.noisy,
                "speedup": ratio, "speedup_ci_low": lo, "speedup_ci_high": hi,
                "psnr": float(q[k]["psnr"].mean()), "ssim": float(q[k]["ssim"].mean()), "dpsnr": float(d.mean()),
                "dpsnr_min": float(d.min()), "n_eval": len(d),
                "middlebury_ie": mb.get(k, float("nan")),
                "middlebury_die": mb[k] - mb["unpruned"] if k in mb else float("nan"),
            })
        table = run_.table(pd.DataFrame(rows), "sweep")
        verdict = judge(table, p)

        # sensitivity, latency profile, fine-tuning, importance criteria, mask trap, claims
        prof = S.layer_latency_profile(model, h, w, rounds=max(3, p["timing_rounds"] // 2))
        shares = run_.table(S.group_latency_share(prof), "latency_share_per_group")
        run_.table(prof, "latency_profile_per_layer")
        run_.figure(plot_latency_share(shares, prof.attrs["forward_ms"]), "latency_share")
        sens = None
        if tables is not None:
            sens = run_.table(tables["sensitivity"], "sensitivity")
            run_.table(tables["latency_savings"], "latency_savings")
            run_.figure(plot_sensitivity(sens), "sensitivity")
            allocs = [S.allocate(tables["sensitivity"], tables["latency_savings"], b).table.assign(budget_db=b)
                      for b in p["budgets_db"]]
            run_.table(pd.concat(allocs, ignore_index=True), "allocations")
        if comparison:
            run_.table(pd.DataFrame(comparison).merge(table[["config", "psnr", "dpsnr"]], left_on="plan",
                                                      right_on="config").drop(columns="config"), "importance_comparison")
        ft_rows = [{"config": k, "steps": meta.get("steps"), "lr": meta.get("lr"),
                    "first_loss": meta["losses"][0] if meta.get("losses") else None,
                    "final_loss": float(np.mean(meta["losses"][-max(1, len(meta["losses"]) // 10):])) if meta.get("losses") else None,
                    "train_seconds": meta.get("train_seconds"), "device": meta.get("device")}
                   for k, (_, meta, _) in finetuned.items()]
        if ft_rows:
            run_.table(pd.DataFrame(ft_rows), "finetuning")
            run_.figure(plot_losses({k: meta.get("losses", []) for k, (_, meta, _) in finetuned.items()}), "finetuning_loss")
        run_.figure(plot_pareto(table, p), "pareto")
        trap_plan = _build_plan(model, p, "architecture_aware", p["trap_sparsity"], None)
        trap = run_.table(mask_trap(model, trap_plan, evals), "mask_trap")
        run_.table(claims.claims("pruning"), "published_claims")

        # best model: saved, reloaded, compared
        reload_diff = None
        if verdict.get("best_config"):
            best = models[verdict["best_config"]]
            path = P.save_pruned(best, run_.out / "best.pt", meta={"config": verdict["best_config"]})
            again = P.load_pruned(path, device=dev)
            with torch.inference_mode():
                reload_diff = float((again.interpolate(a, b) - best.interpolate(a, b)).abs().max())

        configs = {r["config"]: {k: r[k] for k in ("speedup", "speedup_ci_low", "speedup_ci_high", "dpsnr", "psnr",
                                                   "ssim", "gmac", "params_m", "latency_ms", "sparsity", "finetuned",
                                                   "middlebury_ie")} for r in rows}
        mask_w = trap.set_index("variant")["max_abs_diff_to_physical"]
        metrics = {
            "configs": configs, **verdict,
            "unpruned_psnr": float(base_psnr.mean()), "unpruned_latency_ms": base_t.median * 1e3,
            "unpruned_gmac": base_gmac, "eval_triplets": len(evals), "timing_frame": f"{w}x{h}",
            "forward_ms_outside_convs_share": float(prof.loc[prof["layer"] == "other", "share"].iloc[0]),
            "mask_trap_max_abs_diff_weights_only": float(mask_w.iloc[0]),
            "mask_trap_max_abs_diff_with_bias": float(mask_w.iloc[1]),
            "reload_max_abs_diff": reload_diff, "timing_stopped": timing.stopped, "noisy": timing.noisy,
            "timing": {"noisy": timing.noisy, "attempts": timing.attempts, "failed_checks": timing.problems,
                       "workers": timing.workers, "load": timing.load.as_dict() if timing.load else None,
                       "history": timing.history},
            "study_seconds": time.perf_counter() - t_start, "notes": notes,
        }
        headline = {"target_met": verdict["target_met"], "unpruned_psnr": round(float(base_psnr.mean()), 3),
                    "unpruned_ms": round(base_t.median * 1e3, 2), "noisy": timing.noisy}
        if verdict.get("best_config"):
            headline.update({"best_speedup": round(verdict["best_speedup"], 3),
                             "best_dpsnr": round(verdict["best_dpsnr"], 3)})
        plot_data = {"sweep": table[table["mode"] != "mask"][["config", "speedup", "psnr"]]}
        if sens is not None:
            plot_data["sensitivity"] = sens.assign(probe=lambda d: d["group"] + "@" + d["ratio"].map("{:g}".format))[["probe", "dpsnr"]]
        lines = _sentences(table, verdict, p, shares, sens, notes)
        lines.append(f"Timing: each architecture in its own worker process, {timing.attempts} timing(s); load: "
                     f"{timing.load.describe() if timing.load else 'not recorded'}.")
        if timing.noisy:
            lines.insert(0, f"**noisy timing**: after {timing.attempts} timings these checks still failed: "
                         f"{'; '.join(timing.problems)}. The latencies, speedups and the target verdict below are "
                         "published flagged, not as clean results; rerun on an idle machine.")
        return run_.finish(metrics, headline, plot_data, lines)


# ----------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m rifelab.studies.pruning`: the finetune@PROFILE stage (plans + distillation, resumable)."""
    parser = argparse.ArgumentParser(
        prog="python -m rifelab.studies.pruning",
        description="The finetune@PROFILE stage of the pruning study: measure each group's sensitivity and latency "
        "savings, build the plans named in pruning.finetune, fine-tune each by distillation and save it under "
        "<results root>/<profile>/finetune/. Up-to-date checkpoints are kept; interrupted ones resume.")
    parser.add_argument("--profile", default="cpu", choices=["cpu", "cuda", "mps"],
                        help="device profile whose params file and result folder are used (default: cpu)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key of the pruning section for this run (VALUE as YAML), may repeat")
    parser.add_argument("--results-root", default=None, metavar="DIR",
                        help="write under DIR/<profile>/finetune (the pipeline passes results, the committed "
                        "results; default: the scratch folder scratch/, ignored by git)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        df = finetune(args.profile, parse_set(args.set), args.results_root)
    except ValueError as exc:
        print(f"finetune: error: {exc}", file=sys.stderr)
        return 2
    for r in df.itertuples():
        print(f"{r.config:40s} {r.status:20s} {r.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
