"""The pruning study's parameters, what the finetune stage makes from them, and the study's frame splits.

`feeds` on a parameter names what the finetune stage (`finetune@PROFILE` in dvc.yaml) makes from it:
- "plans": the sensitivity and latency-savings tables (their fingerprint, `planning_fingerprint`);
- "checkpoints": every fine-tuned checkpoint (its fingerprint, `spec_fingerprint`);
- "choice": read to choose or check what is made (which checkpoints, disjoint frames), in no fingerprint.
The stage's params in dvc.yaml are the common keys and every key with a `feeds` (a test checks), and the
fingerprints are derived from the same flags, so a key cannot feed one and be missing from the other.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch

from rifelab.frames.clips import Triplet
from rifelab.frames.images import to_tensor
from rifelab.frames.splits import SplitError, check_disjoint, clip_ranges, range_frames, range_triplets
from rifelab.publish.results import results_base
from rifelab.pruning.apply import MODES
from rifelab.pruning.importance import IMPORTANCES
from rifelab.pruning.plans import METHODS
from rifelab.studies.base import COMMON, Param, ParamError

__all__ = [
    "NOTEBOOK",
    "PARAMS",
    "MODEL_KEYS",
    "PLANNING_KEYS",
    "TRAINING_KEYS",
    "FINETUNE_STAGE_KEYS",
    "SPLITS",
    "FinetuneSpec",
    "config_name",
    "parse_finetune",
    "planning_fingerprint",
    "spec_fingerprint",
    "finetune_dir",
    "check_splits",
    "split_triplets",
    "split_table",
    "timing_pair",
]

NOTEBOOK = "03_pruning.ipynb"
STATE_SUFFIX = ".state.pt"

PARAMS: dict[str, Param] = {
    "sparsities": Param(
        "list", "sweep: share of prunable channels removed", item="float", low=0.0, high=0.95, feeds=("choice",)
    ),
    "methods": Param("list", "sweep methods", item="str", choices=METHODS, feeds=("choice",)),
    "modes": Param(
        "list", "sweep modes: mask (weights zeroed) | physical (channels removed)", item="str", choices=MODES
    ),
    "protected": Param(
        "list", "layers kept whole (fnmatch over conv names)", item="str", feeds=("plans", "checkpoints")
    ),
    "ratio_scale": Param("dict", "architecture-aware: pattern -> multiplier of the sparsity", feeds=("checkpoints",)),
    "min_channels": Param("int", "architecture-aware: fewest channels a group keeps", low=1, feeds=("checkpoints",)),
    "round_to": Param("int", "kept channel counts are multiples of this", low=1, feeds=("plans", "checkpoints")),
    "naive_min_channels": Param("int", "naive global: fewest channels a group keeps", low=1, feeds=("checkpoints",)),
    "importance": Param(
        "str", "importance criterion of the sensitivity plans", choices=IMPORTANCES, feeds=("plans", "checkpoints")
    ),
    "compare_importance": Param(
        "list", "other criteria tried on the first budget's plan", item="str", choices=IMPORTANCES
    ),
    "sensitivity_ratios": Param(
        "list", "ratios each group alone is pruned at", item="float", low=0.01, high=0.95, feeds=("plans",)
    ),
    "sensitivity_ranges": Param("dict", "clip -> [start, stop) frames of the sensitivity triplets", feeds=("plans",)),
    "sensitivity_triplets": Param("int", "cut-free sensitivity triplets per clip", low=1, feeds=("plans",)),
    "budgets_db": Param(
        "list",
        "loss budgets (summed single-group PSNR drops, dB) of the sensitivity plans",
        item="float",
        low=0.0,
        feeds=("choice",),
    ),
    "lite_ratio": Param(
        "float",
        "lite baseline: uniform width cut (0.25: 192/128/96/64 -> 144/96/72/48)",
        low=0.01,
        high=0.95,
        feeds=("checkpoints",),
    ),
    "latency_rounds": Param("int", "interleaved rounds of the per-group latency table", low=1, feeds=("plans",)),
    "finetune": Param(
        "list", "configurations fine-tuned: lite | sensitivity@BUDGET | METHOD@SPARSITY", item="str", feeds=("choice",)
    ),
    "finetune_steps": Param("int", "distillation steps per configuration", low=0, feeds=("checkpoints",)),
    "finetune_lr": Param(
        "float", "AdamW learning rate (cosine decay to zero)", low=1e-7, high=1.0, feeds=("checkpoints",)
    ),
    "finetune_batch": Param("int", "crops per step", low=1, feeds=("checkpoints",)),
    "finetune_crop": Param("int", "crop size in pixels (multiple of 64)", low=64, feeds=("checkpoints",)),
    "flow_weight": Param("float", "loss = L1(frame) + flow_weight * L1(flow)", low=0.0, feeds=("checkpoints",)),
    "finetune_save_every": Param("int", "steps between saved training states (resume points)", low=1, tracked=False),
    "train_ranges": Param("dict", "clip -> [start, stop) frames used for fine-tuning", feeds=("checkpoints",)),
    "train_triplets": Param("int", "cut-free training triplets per clip", low=1, feeds=("checkpoints",)),
    "eval_ranges": Param("dict", "clip -> [start, stop) held-out evaluation frames", feeds=("choice",)),
    "eval_triplets": Param("int", "cut-free held-out triplets per clip", low=1),
    "middlebury_path": Param(
        "str", "Middlebury 'other' folder (optional; skipped with the reason if absent)", nullable=True
    ),
    "middlebury_limit": Param("int", "at most this many Middlebury triplets", low=1),
    "timing_clip": Param("str", "clip whose first frame pair is timed", feeds=("plans",)),
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


MODEL_KEYS = ("checkpoint", "seed")  # common keys every product of the finetune stage depends on


def _fed(product: str) -> tuple[str, ...]:
    return MODEL_KEYS + tuple(k for k, p in PARAMS.items() if product in p.feeds)


PLANNING_KEYS = _fed("plans")
TRAINING_KEYS = _fed("checkpoints")
FINETUNE_STAGE_KEYS = tuple(f"common.{k}" for k in COMMON) + tuple(f"pruning.{k}" for k, p in PARAMS.items() if p.feeds)


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
            raise ParamError(
                f"finetune entry {n!r}: expected 'lite', 'sensitivity@BUDGET_DB' or 'METHOD@SPARSITY'"
            ) from None
        if kind == "sensitivity":
            if v not in [float(b) for b in p["budgets_db"]]:
                raise ParamError(f"finetune entry {n!r}: budget {v:g} dB is not in budgets_db {p['budgets_db']}")
        elif kind in METHODS:
            if v not in [float(s) for s in p["sparsities"]] or kind not in p["methods"]:
                raise ParamError(f"finetune entry {n!r} is not in the sweep's methods/sparsities")
        else:
            raise ParamError(
                f"finetune entry {n!r}: unknown kind {kind!r}; expected lite, sensitivity or one of {list(METHODS)}"
            )
        out.append(FinetuneSpec(n, kind, v))
    if len({s.name for s in out}) != len(out):
        raise ParamError(f"finetune lists a configuration twice: {list(names)}")
    return out


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def planning_fingerprint(p: Mapping[str, Any]) -> str:
    """What the sensitivity and latency tables depend on."""
    return _hash({k: p[k] for k in PLANNING_KEYS})


def spec_fingerprint(p: Mapping[str, Any], spec: FinetuneSpec) -> str:
    """What one fine-tuned checkpoint depends on (a sensitivity plan also on the planning tables)."""
    return _hash(
        {
            "spec": spec.name,
            "training": {k: p[k] for k in TRAINING_KEYS},
            "planning": planning_fingerprint(p) if spec.kind == "sensitivity" else None,
        }
    )


def finetune_dir(profile: str, results_root: str | os.PathLike | None = None) -> Path:
    """Folder the finetune stage writes its checkpoints and planning tables to (the pipeline's: committed results)."""
    return results_base(profile, results_root) / "finetune"


# ----------------------------------------------------------------------------- frame splits

SPLITS = {
    "fine-tuning": ("train_ranges", "train_triplets"),
    "sensitivity (plans)": ("sensitivity_ranges", "sensitivity_triplets"),
    "held-out evaluation": ("eval_ranges", "eval_triplets"),
}


def check_splits(p: Mapping[str, Any]) -> None:
    """Refuse malformed ranges, and training, sensitivity and evaluation ranges that share frames."""
    try:
        check_disjoint({use: range_frames(p[key], key) for use, (key, _) in SPLITS.items()})
    except SplitError as exc:
        raise ParamError(f"pruning: training, sensitivity and evaluation frames must not overlap: {exc}") from None


def split_triplets(p: Mapping[str, Any], use: str) -> list[Triplet]:
    """The cut-free triplets of one split (a key of `SPLITS`), spread evenly over its ranges."""
    key, count = SPLITS[use]
    return range_triplets(p[key], p[count], name=key)


def split_table(p: Mapping[str, Any]) -> pd.DataFrame:
    """Which frames of which clip each split uses."""
    return pd.DataFrame(
        [
            {"use": use, "clip": r.clip, "frames": f"[{r.start}, {r.stop})", "triplets_per_clip": p[n]}
            for use, (key, n) in SPLITS.items()
            for r in clip_ranges(p[key], key)
        ]
    )


def timing_pair(clip: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The timed frame pair: the outer frames of the clip's first cut-free triplet, (1, 3, H, W) in [0, 1]."""
    tr = range_triplets({clip: [0, 3]}, 1)[0]
    return to_tensor(tr.frame0[None]), to_tensor(tr.frame2[None])
