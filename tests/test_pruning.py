"""Pruning: channel groups, importance, plans (hand-written and torch-pruning's), sensitivity plans within a budget,
masks vs removal, save/load, resumable distillation, the finetune stage and notebook 03.

All on the real RIFE 4.0 weights and real carphone/bikes frames; nothing here is timed.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from notebook_checks import assert_figures_render
from rifelab.pruning.apply import apply_physical, load_pruned, nonzero_parameters, prune_model, read_pruned_meta, save_pruned
from rifelab.pruning.cli import add_prune_parser
from rifelab.pruning.groups import PruningError, channel_groups, conv_layers, layer_out_channels
from rifelab.pruning.importance import channel_importance, group_l1_scores, importance_scores, importance_table
from rifelab.pruning.plans import make_plan, plan_architecture_aware, plan_from_ratios, plan_lite, plan_naive_global
from rifelab.pruning.sensitivity import allocate, group_latency_savings, group_latency_share, group_sensitivity, kept_channels, layer_latency_profile, plan_from_allocation, prunable_groups
from rifelab.frames.clips import clip_triplets
from rifelab.frames.images import to_tensor
from rifelab.frames.splits import SplitError, check_disjoint, range_frames, range_triplets
from rifelab.pruning.distill import distill, distillation_targets, loss_gradients, task_data
from rifelab.measure.metrics import psnr
from rifelab.publish.notebooks import run_notebook
from rifelab.studies import pruning as study
from rifelab.studies.base import PROFILES, load_study_params
from rifelab.studies.pruning import params as study_params
from rifelab.studies.pruning.study import mac_bound_check

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(
    sparsities=[0.5], sensitivity_ratios=[0.5], sensitivity_ranges={"carphone": [80, 86]}, sensitivity_triplets=1,
    budgets_db=[2.0], finetune=["lite", "sensitivity@2"], finetune_steps=2, finetune_batch=1, finetune_save_every=1,
    train_ranges={"carphone": [0, 6]}, train_triplets=1, eval_ranges={"carphone": [100, 106]}, eval_triplets=1,
    timing_clip="carphone", timing_warmup=0, timing_rounds=2, latency_rounds=1, trap_sparsity=0.5, middlebury_limit=1,
    compare_importance=["group_norm"], modes=["mask", "physical"], device="cpu", threads=1,
)


@pytest.fixture(scope="module")
def pair(carphone):
    return to_tensor(carphone[0:1]), to_tensor(carphone[2:3])


@pytest.fixture(scope="module")
def aware_plan(rife):
    return plan_architecture_aware(rife.net, 0.375)


@pytest.fixture(scope="module")
def physical(rife, aware_plan):
    return prune_model(rife, aware_plan, mode="physical")


# ---------------------------------------------------------------- groups and importance


def test_channel_groups_follow_the_residual(rife):
    groups = {g.name: g for g in channel_groups(rife.net)}
    assert len(groups) == 4 * 10  # conv0.0, trunk, convblock.0..6, head per block
    for b in range(4):
        trunk = groups[f"block{b}.conv0.1.0"]
        assert trunk.layers == (f"block{b}.conv0.1.0", f"block{b}.convblock.7.0")
        assert trunk.width == rife.net.blocks[b].conv0[1][0].out_channels
        assert groups[f"block{b}.convblock.3.0"].layers == (f"block{b}.convblock.3.0",)
        assert not groups[f"block{b}.lastconv"].prunable
        assert all(g.prunable for n, g in groups.items() if n.startswith(f"block{b}.") and "lastconv" not in n)


def test_importance_is_the_filter_l1_norm(rife):
    imp = channel_importance(rife.net)
    w = rife.net.block2.convblock[4][0].weight.detach()
    got = imp[imp["layer"] == "block2.convblock.4.0"].sort_values("channel")["l1"].to_numpy()
    np.testing.assert_allclose(got, w.abs().sum(dim=(1, 2, 3)).numpy(), rtol=1e-5)
    # ConvTranspose2d keeps its output channels on weight dim 1
    head = imp[imp["layer"] == "block0.lastconv"]
    assert len(head) == 5
    top = imp[imp["layer"] == "block2.convblock.4.0"].sort_values("rank_in_layer").iloc[0]
    assert top["l1"] == pytest.approx(got.max(), rel=1e-6)
    table = importance_table(imp, sparsity=0.25)
    assert len(table) == len(conv_layers(rife.net))
    assert table["below_global_threshold_at_0.25"].between(0, 1).all()


# ---------------------------------------------------------------- plans


def test_architecture_aware_plan_rules(rife, aware_plan):
    channels = aware_plan.channels()
    for name, g in aware_plan.groups.items():
        if name in aware_plan.protected:
            assert channels[name] == g.width
        else:
            assert channels[name] % 8 == 0 and channels[name] >= 16 and channels[name] < g.width
    assert channels["block3.convblock.2.0"] == 40  # 64 * (1 - 0.375) = 40
    assert all(channels[f"block{b}.conv0.0.0"] == rife.net.blocks[b].conv0[0][0].out_channels for b in range(4))
    # the kept channels of a group are its highest-L1 ones
    imp = channel_importance(rife.net)
    l1 = imp[imp["layer"] == "block1.convblock.5.0"].sort_values("channel")["l1"].to_numpy()
    kept = aware_plan.keep["block1.convblock.5.0"]
    dropped = aware_plan.removed("block1.convblock.5.0")
    assert l1[kept].min() >= l1[dropped].max()


def test_ratio_scale_and_min_channels(rife):
    plan = plan_architecture_aware(rife.net, 0.5, ratio_scale={"block0.*": 0.0}, min_channels=48)
    ch = plan.channels()
    assert ch["block0.convblock.1.0"] == 192  # scale 0: block 0 untouched
    assert ch["block1.convblock.1.0"] == 64
    assert ch["block3.convblock.1.0"] == 48  # 32 would fall below the floor


def test_naive_global_uses_one_threshold(rife):
    plan = plan_naive_global(rife.net, 0.25)
    assert plan.removed_fraction == pytest.approx(0.25, abs=0.002)
    scores = group_l1_scores(rife.net, list(plan.groups.values()))
    kept, removed = [], []
    for name, g in plan.groups.items():
        if not g.prunable:
            continue
        floor_hit = len(plan.keep[name]) == 1
        kept += [] if floor_hit else list(scores[name][plan.keep[name]])
        removed += list(scores[name][plan.removed(name)])
    assert max(removed) <= min(kept)
    # the diagnosis of report 001: low-fan-in first convs fall first
    assert plan.channels()["block0.conv0.0.0"] < 0.5 * plan.groups["block0.conv0.0.0"].width


# ---------------------------------------------------------------- physical and mask pruning


def test_physical_pruning_is_smaller_runs_and_matches_plan(rife, physical, aware_plan, pair):
    assert layer_out_channels(physical.net) == {**layer_out_channels(rife.net), **aware_plan.layer_channels()}
    # consumers shrank with their producers: the trunk feeds convblock.0 and lastconv
    b3 = physical.net.block3
    assert b3.convblock[0][0].in_channels == b3.conv0[1][0].out_channels == len(aware_plan.keep["block3.conv0.1.0"])
    assert b3.lastconv.in_channels == b3.conv0[1][0].out_channels
    assert b3.convblock[3][0].in_channels == b3.convblock[2][0].out_channels
    assert b3.convblock[2][1].weight.numel() == b3.convblock[2][0].out_channels  # PReLU slopes pruned too
    n_small = sum(p.numel() for p in physical.net.parameters())
    n_full = sum(p.numel() for p in rife.net.parameters())
    assert n_small < 0.6 * n_full
    out = physical.interpolate(*pair)
    assert out.shape == pair[0].shape and torch.isfinite(out).all()
    # the unpruned model is untouched by prune_model (it works on a copy)
    assert rife.net.block3.convblock[2][0].out_channels == 64


def test_protected_layers_are_untouched(rife, pair):
    plan = plan_architecture_aware(rife.net, 0.5, protected=["block*.conv0.0.0", "block3.convblock.7.0"])
    assert "block3.conv0.1.0" in plan.protected  # protecting convblock.7 protects its coupled trunk group ...
    assert "block3.convblock.6.0" in plan.protected  # ... and the group feeding its inputs
    assert "block2.conv0.1.0" not in plan.protected
    assert "block2.conv0.1.0" in plan_architecture_aware(rife.net, 0.5, protected=["block2.lastconv"]).protected
    phys = prune_model(rife, plan, mode="physical")
    mask = prune_model(rife, plan, mode="mask")
    for name in ("block0.conv0.0.0", "block2.conv0.0.0", "block3.conv0.1.0", "block3.convblock.7.0", "block3.lastconv"):
        ref = conv_layers(rife.net)[name].weight
        assert torch.equal(conv_layers(phys.net)[name].weight.detach(), ref.detach()), name
        assert torch.equal(conv_layers(mask.net)[name].weight.detach(), ref.detach()), name
    assert phys.net.block3.lastconv.in_channels == 64  # protected trunk: the head still sees every channel
    # unprotected trunk of block 1: the head keeps exactly the rows of the kept channels
    keep = plan.keep["block1.conv0.1.0"]
    assert torch.equal(phys.net.block1.lastconv.weight.detach(), rife.net.block1.lastconv.weight.detach()[keep])
    assert phys.net.block2.lastconv.out_channels == 5


def test_mask_pruning_keeps_shapes_and_shows_the_bias_trap(rife, aware_plan, physical, pair):
    mask = prune_model(rife, aware_plan, mode="mask")
    shapes = {n: m.weight.shape for n, m in conv_layers(rife.net).items()}
    assert {n: m.weight.shape for n, m in conv_layers(mask.net).items()} == shapes
    w = conv_layers(mask.net)["block3.convblock.2.0"].weight
    gone = aware_plan.removed("block3.convblock.2.0")
    assert torch.count_nonzero(w[gone]) == 0 and torch.count_nonzero(w[aware_plan.keep["block3.convblock.2.0"]]) > 0
    assert nonzero_parameters(mask.net) < nonzero_parameters(rife.net)
    with_bias = prune_model(rife, aware_plan, mode="mask", mask_bias=True)
    o_phys, o_mask, o_bias = (m.interpolate(*pair) for m in (physical, mask, with_bias))
    assert (o_bias - o_phys).abs().max() < 1e-3  # zeroed biases: same network as the removal
    assert (o_mask - o_phys).abs().max() > 1e-2  # biases kept: PReLU(bias) still flows on


def test_save_and_load_reproduce_outputs(rife, physical, aware_plan, pair, tmp_path):
    path = save_pruned(physical, tmp_path / "phys.pt")
    payload = torch.load(path, weights_only=True)  # plain tensors and plan, no pickled module
    assert set(payload) == {"format", "mode", "mask_bias", "plan", "state_dict", "meta"}
    again = load_pruned(path)
    assert again.pruning_info.plan.keep == aware_plan.keep
    assert torch.equal(again.interpolate(*pair), physical.interpolate(*pair))
    assert torch.equal(again.interpolate(*pair, 0.25, 0.5), physical.interpolate(*pair, 0.25, 0.5))  # same API
    mask = prune_model(rife, aware_plan, mode="mask")
    again_m = load_pruned(save_pruned(mask, tmp_path / "mask.pt"))
    assert torch.equal(again_m.interpolate(*pair), mask.interpolate(*pair))
    assert again_m.net.block3.convblock[2][0].weight.shape == (64, 64, 3, 3)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, float("nan"), "a quarter", None])
def test_sparsity_outside_range_is_refused(rife, bad):
    for fn in (plan_naive_global, plan_architecture_aware):
        with pytest.raises(PruningError, match=r"\[0, 1\)"):
            fn(rife.net, bad)


def test_unknown_layers_and_bad_settings_are_refused(rife, physical, aware_plan, tmp_path):
    with pytest.raises(PruningError, match=r"'block9\.conv0\.0\.0' matches no conv layer"):
        plan_architecture_aware(rife.net, 0.25, protected=["block9.conv0.0.0"])
    with pytest.raises(PruningError, match="matches no conv layer"):
        plan_architecture_aware(rife.net, 0.25, ratio_scale={"decoder.*": 0.5})
    with pytest.raises(PruningError, match="min_channels"):
        plan_architecture_aware(rife.net, 0.25, min_channels=0)
    with pytest.raises(PruningError, match="unknown pruning method"):
        make_plan(rife.net, "random", 0.25)
    with pytest.raises(PruningError, match="mode"):
        prune_model(rife, aware_plan, mode="soft")
    with pytest.raises(PruningError, match="already pruned"):
        prune_model(physical, aware_plan)
    with pytest.raises(PruningError, match="unpruned"):
        apply_physical(copy.deepcopy(physical.net), aware_plan)
    with pytest.raises(PruningError, match="no pruning plan"):
        save_pruned(rife, tmp_path / "x.pt")
    with pytest.raises(PruningError, match="not found"):
        load_pruned(tmp_path / "missing.pt")
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(PruningError, match="not a pruned model"):
        load_pruned(tmp_path / "other.pt")
    with pytest.raises(SplitError, match="overlap"):
        check_disjoint({"fine-tuning": range_frames({"bikes": [0, 100]}), "held-out": range_frames({"bikes": [90, 120]})})


def test_scene_cuts_are_skipped():
    # bikes cuts between frames 29 and 30: triplets starting at 28 and 29 straddle it
    names = [t.name for t in range_triplets({"bikes": [26, 33]}, 10)]
    assert names == ["bikes:26", "bikes:27", "bikes:30"]


# ---------------------------------------------------------------- distillation


def test_distillation_moves_the_student_towards_the_teacher(rife, carphone):
    plan = plan_architecture_aware(rife.net, 0.5)
    student = prune_model(rife, plan)
    data = distillation_targets(rife, list(clip_triplets(carphone[:5], count=2)), progress=False)
    a, b = data.img0[0], data.img1[0]

    def fidelity() -> float:
        return float(psnr(student.interpolate(a, b), data.frame[0])[0])

    before = fidelity()
    result = distill(student, data, steps=4, lr=3e-4, batch_size=2, crop=128, progress=False)
    assert len(result.losses) == 4 and all(math.isfinite(x) for x in result.losses)
    assert fidelity() > before + 1.0
    assert layer_out_channels(student.net) == {**layer_out_channels(rife.net), **plan.layer_channels()}
    with pytest.raises(ValueError, match="multiple of 64"):
        distill(student, data, steps=1, crop=100)
    with pytest.raises(ValueError, match="lr"):
        distill(student, data, steps=1, lr=-1.0)


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_finetuning_resumes_where_it_stopped(rife, carphone, tmp_path):
    plan = plan_architecture_aware(rife.net, 0.5)
    data = distillation_targets(rife, list(clip_triplets(carphone[:5], count=2)), progress=False)
    kw = dict(steps=6, lr=3e-4, batch_size=1, crop=64, progress=False)
    straight = prune_model(rife, plan)
    whole = distill(straight, data, **kw)

    class Stop(Exception):
        pass

    def stop_at_3(step: int, loss: float) -> None:
        if step == 3:
            raise Stop

    state = tmp_path / "run.state.pt"
    student = prune_model(rife, plan)
    with pytest.raises(Stop):
        distill(student, data, state_path=state, save_every=100, callback=stop_at_3, **kw)
    saved = torch.load(state, weights_only=True)
    assert saved["step"] == 3 and not saved["finished"]  # the interruption itself saved the state
    fresh = prune_model(rife, plan)  # a new process: nothing in memory but the state file
    resumed = distill(fresh, data, state_path=state, **kw)
    assert resumed.resumed_at == 3 and len(resumed.losses) == 6
    np.testing.assert_allclose(resumed.losses, whole.losses, rtol=1e-5)
    a, b = _params(fresh.net), _params(straight.net)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    again = distill(prune_model(rife, plan), data, state_path=state, **kw)  # finished: returns at once
    assert again.resumed_at == 6 and again.losses == resumed.losses
    # other settings do not resume a foreign state: they start over
    other = distill(prune_model(rife, plan), data, state_path=state, **{**kw, "steps": 2})
    assert other.resumed_at == 0 and len(other.losses) == 2


# ---------------------------------------------------------------- torch-pruning's planner, lite, importance


def test_plan_from_ratios_uses_torch_pruning_rules(rife, pair):
    plan = plan_from_ratios(rife.net, {"block3.convblock.*": 0.5, "block1.conv0.1.0": 0.3},
                              protected=["block3.convblock.4.0"])
    ch = plan.channels()
    assert ch["block3.convblock.1.0"] == 32
    assert ch["block1.conv0.1.0"] == 88  # int(128 * 0.7) = 89, rounded down to a multiple of 8
    assert ch["block3.convblock.4.0"] == ch["block3.convblock.3.0"] == 64  # protected, and the group feeding it
    assert ch["block2.convblock.1.0"] == 96 and ch["block3.lastconv"] == 5
    l1 = importance_scores(rife.net, "l1")["block3.convblock.2.0"]
    kept, gone = plan.keep["block3.convblock.2.0"], plan.removed("block3.convblock.2.0")
    assert l1[kept].min() >= l1[gone].max()  # torch-pruning kept the most important channels
    small = prune_model(rife, plan)
    assert small.interpolate(*pair).shape == pair[0].shape
    assert layer_out_channels(small.net)["block1.convblock.7.0"] == 88  # the trunk is one coupled group


def test_lite_plan_is_the_uniform_width_cut(rife, pair):
    plan = plan_lite(rife.net)
    trunks = [len(plan.keep[f"block{b}.conv0.1.0"]) for b in range(4)]
    assert trunks == [144, 96, 72, 48]
    assert all(len(plan.keep[f"block{b}.convblock.3.0"]) == t for b, t in enumerate(trunks))
    assert len(plan.keep["block0.conv0.0.0"]) == 72  # the first conv is cut too (a narrower network)
    assert prune_model(rife, plan).interpolate(*pair).shape == pair[0].shape


def test_importance_criteria_differ_and_taylor_needs_gradients(rife, carphone):
    l1 = importance_scores(rife.net, "l1")
    gn = importance_scores(rife.net, "group_norm")
    assert set(gn) == set(l1) and all(len(gn[k]) == len(l1[k]) for k in l1)
    w = rife.net.block2.convblock[4][0].weight.detach()
    # group norm sees the consumer's input weights too: not a monotone function of the filter's own L1
    assert not np.array_equal(np.argsort(gn["block2.convblock.4.0"]), np.argsort(w.abs().sum((1, 2, 3)).numpy()))
    work = copy.deepcopy(rife)
    with pytest.raises(PruningError, match="gradients"):
        importance_scores(work.net, "taylor")
    loss = loss_gradients(work, task_data(list(clip_triplets(carphone[:5], count=2))), batches=1, crop=64)
    assert loss > 0
    tay = importance_scores(work.net, "taylor")
    assert all(np.isfinite(v).all() and (v >= 0).all() for v in tay.values())
    a = plan_from_ratios(rife.net, {"block2.convblock.4.0": 0.5}, importance="l1")
    b = plan_from_ratios(rife.net, {"block2.convblock.4.0": 0.5}, importance=tay)
    assert a.channels() == b.channels() and a.keep["block2.convblock.4.0"] != b.keep["block2.convblock.4.0"]


# ---------------------------------------------------------------- sensitivity, latency, allocation


def test_sensitivity_measures_the_drop_of_one_group(rife, carphone):
    tris = list(clip_triplets(carphone[:9], count=1))
    # everything protected but block3.convblock.6.0: one group, two ratios
    prot = ["block0.*", "block1.*", "block2.*", "block3.conv0.*", "block3.convblock.[0-5].0"]
    sens = group_sensitivity(rife, tris, ratios=(0.25, 0.75), protected=prot)
    assert list(sens["group"]) == ["block3.convblock.6.0"] * 2
    assert list(sens["kept"]) == [48, 16]
    assert sens["dpsnr"].iloc[1] < 0  # three quarters of a trunk conv's channels gone: worse than unpruned


def test_latency_profile_covers_every_conv_and_macs_sit_in_block3(rife):
    prof = layer_latency_profile(rife, 96, 128, rounds=1)
    assert set(prof["layer"]) == set(conv_layers(rife.net)) | {"other"}
    assert prof["share"].sum() == pytest.approx(1.0) and (prof["ms"] >= 0).all()
    by_block = prof[prof["block"] >= 0].groupby("block")["mac_share"].sum()
    assert by_block.idxmax() == 3 and by_block.sum() == pytest.approx(1.0)
    shares = group_latency_share(prof)
    assert len(shares) == 4 * 10 + 1
    assert kept_channels(192, 0.25) == 144 and kept_channels(48, 0.25) == 32 and kept_channels(16, 0.9) == 8


def test_latency_savings_table_follows_the_kept_channel_rule(rife):
    prot = ["block0.*", "block1.*", "block2.*", "block3.conv0.*", "block3.convblock.[0-5].0"]
    save = group_latency_savings(rife, (0.25, 0.75), 64, 64, protected=prot, warmup=0, rounds=2)
    assert list(save["group"]) == ["block3.convblock.6.0"] * 2 and list(save["kept"]) == [48, 16]
    assert {"full_ms", "cut_ms", "saving_ms", "saving_p25_ms", "saving_p75_ms"} <= set(save.columns)
    assert (save["saving_p25_ms"] <= save["saving_ms"]).all() and (save["saving_ms"] <= save["saving_p75_ms"]).all()


def _synthetic(groups: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(3)
    sens, save = [], []
    for g in groups:
        for r in (0.25, 0.5):
            sens.append({"group": g, "ratio": r, "dpsnr": -float(rng.uniform(0, 1.5)) * r * 2 + 0.05})
            save.append({"group": g, "ratio": r, "saving_ms": float(rng.uniform(0, 3)) * r})
    return pd.DataFrame(sens), pd.DataFrame(save)


def test_allocation_is_the_best_plan_within_the_budget():
    groups = ["a", "b", "c", "d"]
    sens, save = _synthetic(groups)
    loss = {(r.group, r.ratio): max(0.0, -r.dpsnr) for r in sens.itertuples()}
    gain = {(r.group, r.ratio): r.saving_ms for r in save.itertuples()}
    for budget in (0.0, 0.5, 1.0, 2.5):
        alloc = allocate(sens, save, budget, resolution_db=0.001)
        assert alloc.predicted_loss_db <= budget + 1e-9
        assert sum(loss[(g, r)] for g, r in alloc.ratios.items()) == pytest.approx(alloc.predicted_loss_db)
        best = 0.0  # brute force over every combination
        for combo in itertools.product((0.0, 0.25, 0.5), repeat=len(groups)):
            chosen = [(g, r) for g, r in zip(groups, combo) if r > 0]
            if sum(loss[c] for c in chosen) <= budget + 1e-9:
                best = max(best, sum(gain[c] for c in chosen))
        assert alloc.predicted_saving_ms == pytest.approx(best, abs=1e-9)
    assert "b" not in allocate(sens, save, 10.0, protected_groups=["b"]).ratios
    with pytest.raises(PruningError, match="budget"):
        allocate(sens, save, -1.0)


def test_plan_from_sensitivity_respects_budget_and_protected_layers(rife):
    protected = ["block*.conv0.0.0", "block3.convblock.7.0"]
    groups = [g.name for g in prunable_groups(rife.net, protected)]
    assert "block3.conv0.1.0" not in groups and "block3.convblock.6.0" not in groups  # trunk and its feeder
    assert "block2.conv0.1.0" in groups
    sens, save = _synthetic(groups)
    alloc = allocate(sens, save, 3.0)
    plan = plan_from_allocation(rife.net, alloc, protected=protected)
    drops = sens.set_index(["group", "ratio"])["dpsnr"]
    assert sum(max(0.0, -drops[(g, r)]) for g, r in alloc.ratios.items()) <= 3.0
    ch = plan.channels()
    for g, r in alloc.ratios.items():
        assert ch[g] == kept_channels(plan.groups[g].width, r)
    for g in plan.groups:
        if g not in alloc.ratios:
            assert ch[g] == plan.groups[g].width, g
    small = prune_model(rife, plan)
    for name in ("block0.conv0.0.0", "block3.conv0.0.0", "block3.convblock.7.0", "block3.conv0.1.0"):
        assert torch.equal(conv_layers(small.net)[name].weight, conv_layers(rife.net)[name].weight), name


# ---------------------------------------------------------------- the finetune stage and the study


def test_finetune_stage_is_cached_and_the_study_notebook_runs(tmp_path):
    first = study.finetune("cpu", TINY, tmp_path)
    assert set(first["status"]) == {"trained"}
    folder = study.finetune_dir("cpu", tmp_path)
    assert {p.name for p in folder.glob("*.pt")} == {"lite.pt", "sensitivity-2.pt"}  # no resume states left
    meta = read_pruned_meta(folder / "lite.pt")
    assert meta["finished"] and meta["steps"] == 2 and len(meta["losses"]) == 2
    assert set(study.finetune("cpu", TINY, tmp_path)["status"]) == {"up to date"}  # forced rerun: nothing trained
    changed = study.finetune("cpu", {**TINY, "finetune_lr": 1e-4}, tmp_path)
    assert set(changed["status"]) == {"trained"}
    run_notebook(ROOT / "notebooks" / "03_pruning.ipynb", tmp_path / "03.ipynb", cwd=ROOT, parameters={
        "overrides": {**TINY, "finetune_lr": 1e-4}, "results_root": str(tmp_path)})
    assert_figures_render(tmp_path / "03.ipynb", min_images=4)
    (out,) = (tmp_path / "cpu" / "pruning").iterdir()
    for name in ("sweep.csv", "sensitivity.csv", "latency_share.png", "sensitivity.png", "pareto.png", "best.pt",
                 "mask_trap.md", "published_claims.md", "finetuning_loss.png", "importance_comparison.csv"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    configs = metrics["configs"]
    assert {"unpruned", "lite/physical/0.25", "lite/physical/0.25+ft", "sensitivity/physical/2dB+ft",
            "architecture_aware/physical/0.5", "naive_global/mask/0.5"} <= set(configs)
    assert {"speedup", "dpsnr", "psnr"} <= set(configs["lite/physical/0.25+ft"])
    assert configs["architecture_aware/mask/0.5"]["gmac"] == configs["unpruned"]["gmac"]
    assert metrics["reload_max_abs_diff"] == 0
    workers = metrics["timing"]["workers"]  # one worker process per timed architecture
    assert len(set(workers.values())) == len(workers) >= 2 and os.getpid() not in workers.values()
    assert isinstance(metrics["noisy"], bool) and json.loads((tmp_path / "cpu" / "metrics" / "pruning.json")
                                                             .read_text())["noisy"] == metrics["noisy"]
    assert metrics["mask_trap_max_abs_diff_with_bias"] < 1e-3 < metrics["mask_trap_max_abs_diff_weights_only"]
    best = load_pruned(out / "best.pt")
    assert best.pruning_info.mode == "physical"
    assert (tmp_path / "cpu" / "metrics" / "pruning.json").exists()
    with pytest.raises(Exception, match="finetune"):  # checkpoints of other settings are refused, not used
        study.run("cpu", {**TINY, "finetune_steps": 3}, tmp_path)


def test_a_speedup_beyond_the_mac_bound_fails_the_timing_check():
    from rifelab.measure.harness import InterleavedTiming
    from rifelab.measure.profiling import Timing

    check = mac_bound_check({"unpruned": 10.0, "cut": 5.0})  # half the MACs: at most 2x (x1.25 tolerance)
    t = InterleavedTiming(timings={"unpruned": Timing.from_samples([1.0] * 3), "cut": Timing.from_samples([0.2] * 3)})
    (problem,) = check(t)
    assert problem.startswith("cut: 5.00x the unpruned model, beyond its MAC bound of 2.50x")
    t.timings["cut"] = Timing.from_samples([0.6] * 3)
    assert check(t) == []


# ---------------------------------------------------------------- CLI


def test_prune_subcommand_saves_a_loadable_model(tmp_path, pair):
    parser = argparse.ArgumentParser()
    add_prune_parser(parser.add_subparsers())
    out = tmp_path / "lite.pt"
    args = parser.parse_args(["prune", "--method", "lite", "--sparsity", "0.25", "--output", str(out)])
    assert args.func(args) == 0
    model = load_pruned(out)
    assert model.pruning_info.plan.method == "lite" and model.pruning_info.mode == "physical"
    assert model.interpolate(*pair).shape == pair[0].shape
    with pytest.raises(PruningError, match=r"\[0, 1\)"):
        args = parser.parse_args(["prune", "--sparsity", "1", "--output", str(tmp_path / "x.pt")])
        args.func(args)
    assert not (tmp_path / "x.pt").exists()


def test_finetune_stage_command_explains_its_options(capsys):
    with pytest.raises(SystemExit):
        study.main(["--help"])
    text = capsys.readouterr().out
    assert all(opt in text for opt in ("--profile", "--set", "--results-root"))


def test_taylor_plans_in_the_finetune_stage(tmp_path):
    opts = {**TINY, "importance": "taylor", "finetune": ["sensitivity@2"]}
    assert set(study.finetune("cpu", opts, tmp_path)["status"]) == {"trained"}
    model = load_pruned(study.finetune_dir("cpu", tmp_path) / "sensitivity-2.pt")
    assert model.pruning_info.plan.settings["importance"] == "precomputed"  # Taylor scores from the task loss
    assert set(study.finetune("cpu", opts, tmp_path)["status"]) == {"up to date"}


def test_paired_speedup_interval_ignores_load_drift():
    from rifelab.measure.profiling import Timing, speedup_ci

    load = np.array([1.0, 3.0, 1.5, 6.0, 2.0, 1.2, 4.0, 1.1])  # the machine's load changes from round to round
    base, fast = Timing.from_samples(list(0.2 * load)), Timing.from_samples(list(0.1 * load))
    ratio, lo, hi = speedup_ci(base, fast, paired=True)
    assert ratio == pytest.approx(2.0) and lo == pytest.approx(2.0) and hi == pytest.approx(2.0)
    _, lo_u, hi_u = speedup_ci(base, fast)  # unpaired: the drift widens the interval
    assert hi_u - lo_u > 1.0


def test_finetune_stage_tracks_exactly_the_keys_that_feed_it():
    """dvc.yaml's finetune stage and the study's fingerprints follow one declaration (`feeds` on the schema)."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["finetune"]["do"]
    (entry,) = stage["params"]
    (keys,) = entry.values()
    assert sorted(keys) == sorted(study_params.FINETUNE_STAGE_KEYS)
    fed = {k for k, p in study.PARAMS.items() if p.feeds}
    assert set(study_params.PLANNING_KEYS) | set(study_params.TRAINING_KEYS) <= fed | set(study_params.MODEL_KEYS)
    assert all(p.tracked for p in study.PARAMS.values() if p.feeds)


@pytest.mark.parametrize("profile", PROFILES)
def test_committed_finetune_outputs_match_the_derived_fingerprints(profile):
    """The derived key sets hash as the hand-written ones did: the committed checkpoints and tables stay current."""
    folder = ROOT / "results" / profile / "finetune"
    if not (folder / "planning.json").is_file():
        pytest.skip(f"no committed finetune outputs for {profile}")
    p = load_study_params("pruning", study.PARAMS, profile)
    assert json.loads((folder / "planning.json").read_text())["fingerprint"] == study_params.planning_fingerprint(p)
    for spec in study.parse_finetune(p["finetune"], p):
        assert read_pruned_meta(folder / spec.file)["fingerprint"] == study_params.spec_fingerprint(p, spec), spec.name
