"""The finetune stage of the pruning study (`finetune@PROFILE`): plan and distil every configuration in `finetune`,
keep up-to-date checkpoints, resume interrupted ones; and the study's reader of those checkpoints."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from rifelab.measure.profiling import resolve_device
from rifelab.pruning.apply import load_pruned, prune_model, read_pruned_meta, save_pruned
from rifelab.pruning.distill import distill, distillation_targets
from rifelab.publish.results import input_folders
from rifelab.rife.checkpoints import load_rife
from rifelab.rife.model import RIFE
from rifelab.studies.base import ParamError, load_study_params
from rifelab.studies.pruning.params import (
    PARAMS,
    STATE_SUFFIX,
    FinetuneSpec,
    check_splits,
    finetune_dir,
    parse_finetune,
    spec_fingerprint,
    split_triplets,
)
from rifelab.studies.pruning.planning import build_plan, fresh_tables, planning_tables

log = logging.getLogger(__name__)

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
    check_splits(p)
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
        meta = read_pruned_meta(path) if path.is_file() else {}
        if meta.get("fingerprint") == fp and meta.get("finished"):
            rows.append({"config": spec.config(), "file": spec.file, "status": "up to date",
                         "steps": meta.get("steps"), "train_seconds": meta.get("train_seconds")})
        else:
            pending.append((spec, fp))
    need_tables = bool(p["budgets_db"]) and fresh_tables(p, folder) is None
    if not pending and not need_tables:
        log.info("finetune: every checkpoint in %s is up to date", folder)
        return pd.DataFrame(rows)
    teacher = load_rife(p["checkpoint"], device=device)
    tables = planning_tables(teacher, p, folder, p["progress"]) if p["budgets_db"] else None
    if not pending:
        return pd.DataFrame(rows)
    train = split_triplets(p, "fine-tuning")
    data = distillation_targets(teacher, train, progress=p["progress"])
    for spec, fp in pending:
        plan = build_plan(teacher, p, spec.kind, spec.value, tables)
        student = prune_model(teacher, plan, mode="physical")
        state = folder / (spec.file[: -len(".pt")] + STATE_SUFFIX)
        res = distill(student, data, steps=p["finetune_steps"], lr=p["finetune_lr"], batch_size=p["finetune_batch"],
                      crop=p["finetune_crop"], flow_weight=p["flow_weight"], seed=p["seed"], progress=p["progress"],
                      state_path=state, save_every=p["finetune_save_every"])
        meta = {"fingerprint": fp, "finished": True, "spec": spec.name, "steps": res.steps, "lr": res.lr,
                "losses": [round(x, 6) for x in res.losses], "train_seconds": round(res.seconds, 1),
                "resumed_at": res.resumed_at, "train_triplets": [t.name for t in train], "device": str(device)}
        save_pruned(student, folder / spec.file, meta=meta)
        state.unlink(missing_ok=True)
        rows.append({"config": spec.config(), "file": spec.file, "status": "trained" if not res.resumed_at else
                     f"resumed at step {res.resumed_at}", "steps": res.steps, "train_seconds": round(res.seconds, 1)})
    return pd.DataFrame(rows)


def finished_meta(path: Path, p: Mapping[str, Any], spec: FinetuneSpec) -> dict[str, Any] | None:
    """The checkpoint's metadata if it is finished and trained with the current settings, else None."""
    meta = read_pruned_meta(path) if path.is_file() else {}
    return meta if meta.get("fingerprint") == spec_fingerprint(p, spec) and meta.get("finished") else None


def finetune_source(p: Mapping[str, Any], profile: str, results_root: str | os.PathLike | None) -> Path:
    """Where the study reads the fine-tuned checkpoints: the run's own root if it holds all of them up to date, else
    the committed results (a trial run anywhere uses the pipeline's), else the run's root (whose error names it)."""
    specs = parse_finetune(p["finetune"], p)
    for folder in input_folders(profile, results_root, "finetune"):
        fresh = all(finished_meta(folder / s.file, p, s) for s in specs)
        if fresh and (not p["budgets_db"] or fresh_tables(p, folder) is not None):
            return folder
    return finetune_dir(profile, results_root)


def load_finetuned(p: Mapping[str, Any], profile: str, folder: Path,
                   device: torch.device) -> dict[str, tuple[RIFE, dict[str, Any], FinetuneSpec]]:
    """Every checkpoint of `finetune` in `folder`, checked against the current settings (else: run the finetune stage)."""
    out = {}
    for spec in parse_finetune(p["finetune"], p):
        path = folder / spec.file
        meta = finished_meta(path, p, spec)
        if meta is None:
            raise ParamError(f"the fine-tuned checkpoint {path} is missing or was trained with other settings; run "
                             f"`python -m rifelab.studies.pruning --profile {profile}` first (`dvc repro` runs it as "
                             f"finetune@{profile})")
        out[spec.config()] = (load_pruned(path, device=device), meta, spec)
    return out
