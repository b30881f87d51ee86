"""The plans of the pruning study: sensitivity and latency tables (measured once per setting, cached with their
fingerprint), Taylor importance from the training triplets, and one plan per configuration kind."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from rifelab.pruning.distill import loss_gradients, task_data
from rifelab.pruning.importance import importance_scores
from rifelab.pruning.plans import ChannelPlan, make_plan, plan_lite
from rifelab.pruning.sensitivity import allocate, group_latency_savings, group_sensitivity, plan_from_allocation
from rifelab.publish.results import atomic_path
from rifelab.rife.model import RIFE
from rifelab.studies.pruning.params import planning_fingerprint, split_triplets, timing_pair

def fresh_tables(p: Mapping[str, Any], folder: Path) -> dict[str, pd.DataFrame] | None:
    """The sensitivity and latency-savings tables in `folder` if they were made with the current settings."""
    meta_path = folder / "planning.json"
    names = ("sensitivity", "latency_savings")
    if not meta_path.is_file() or not all((folder / f"{n}.csv").is_file() for n in names):
        return None
    if json.loads(meta_path.read_text()).get("fingerprint") != planning_fingerprint(p):
        return None
    return {n: pd.read_csv(folder / f"{n}.csv") for n in names}


def planning_tables(model: RIFE, p: Mapping[str, Any], folder: Path, progress: bool) -> dict[str, pd.DataFrame]:
    """Sensitivity and latency-savings tables, read from `folder` when made with the same settings, else measured
    (on this device) and written there with their fingerprint."""
    fresh = fresh_tables(p, folder)
    if fresh is not None:
        return fresh
    t0 = time.perf_counter()
    sens_triplets = split_triplets(p, "sensitivity (plans)")
    sens = group_sensitivity(model, sens_triplets, p["sensitivity_ratios"], importance=importance_for(model, p, p["importance"]),
                               protected=p["protected"], round_to=p["round_to"], progress=progress)
    t1 = time.perf_counter()
    h, w = timing_pair(p["timing_clip"])[0].shape[-2:]
    save = group_latency_savings(model, p["sensitivity_ratios"], h, w, protected=p["protected"],
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


def importance_for(model: RIFE, p: Mapping[str, Any], criterion: str) -> str | dict[str, np.ndarray]:
    """A criterion name, or for Taylor the scores from the task loss's gradients on the training triplets."""
    if criterion != "taylor":
        return criterion
    work = copy.deepcopy(model)
    loss_gradients(work, task_data(split_triplets(p, "fine-tuning")),
                   crop=min(256, p["finetune_crop"]))
    return importance_scores(work.net, "taylor")


def build_plan(model: RIFE, p: Mapping[str, Any], kind: str, value: float, tables: Mapping[str, pd.DataFrame] | None,
                importance: str | Mapping[str, np.ndarray] | None = None) -> ChannelPlan:
    net = model.net
    if kind == "lite":
        return plan_lite(net, value, round_to=p["round_to"])
    if kind == "sensitivity":
        assert tables is not None
        alloc = allocate(tables["sensitivity"], tables["latency_savings"], value)
        return plan_from_allocation(net, alloc, importance=importance or importance_for(model, p, p["importance"]),
                                      round_to=p["round_to"],
                                      protected=p["protected"])
    aware = {"protected": p["protected"], "ratio_scale": p["ratio_scale"], "min_channels": p["min_channels"],
             "round_to": p["round_to"], "naive_min_channels": p["naive_min_channels"]}
    return make_plan(net, kind, value, **(aware if kind == "architecture_aware" else
                                            {"naive_min_channels": p["naive_min_channels"]}))
