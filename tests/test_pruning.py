"""Pruning: channel groups, L1 importance, plans, masks vs physical removal, save/load, distillation, notebook 03.

All on the real RIFE 4.0 weights and real carphone/bikes frames.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rifelab import pruning as P
from rifelab.data import to_tensor


@pytest.fixture(scope="module")
def pair(carphone):
    return to_tensor(carphone[0:1]), to_tensor(carphone[2:3])


@pytest.fixture(scope="module")
def aware_plan(rife):
    return P.plan_architecture_aware(rife.net, 0.375)


@pytest.fixture(scope="module")
def physical(rife, aware_plan):
    return P.prune_model(rife, aware_plan, mode="physical")


# ---------------------------------------------------------------- groups and importance


def test_channel_groups_follow_the_residual(rife):
    groups = {g.name: g for g in P.channel_groups(rife.net)}
    assert len(groups) == 4 * 10  # conv0.0, trunk, convblock.0..6, head per block
    for b in range(4):
        trunk = groups[f"block{b}.conv0.1.0"]
        assert trunk.layers == (f"block{b}.conv0.1.0", f"block{b}.convblock.7.0")
        assert trunk.width == rife.net.blocks[b].conv0[1][0].out_channels
        assert groups[f"block{b}.convblock.3.0"].layers == (f"block{b}.convblock.3.0",)
        assert not groups[f"block{b}.lastconv"].prunable
        assert all(g.prunable for n, g in groups.items() if n.startswith(f"block{b}.") and "lastconv" not in n)


def test_importance_is_the_filter_l1_norm(rife):
    imp = P.channel_importance(rife.net)
    w = rife.net.block2.convblock[4][0].weight.detach()
    got = imp[imp["layer"] == "block2.convblock.4.0"].sort_values("channel")["l1"].to_numpy()
    np.testing.assert_allclose(got, w.abs().sum(dim=(1, 2, 3)).numpy(), rtol=1e-5)
    # ConvTranspose2d keeps its output channels on weight dim 1
    head = imp[imp["layer"] == "block0.lastconv"]
    assert len(head) == 5
    top = imp[imp["layer"] == "block2.convblock.4.0"].sort_values("rank_in_layer").iloc[0]
    assert top["l1"] == pytest.approx(got.max(), rel=1e-6)
    table = P.importance_table(imp, sparsity=0.25)
    assert len(table) == len(P.conv_layers(rife.net))
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
    imp = P.channel_importance(rife.net)
    l1 = imp[imp["layer"] == "block1.convblock.5.0"].sort_values("channel")["l1"].to_numpy()
    kept = aware_plan.keep["block1.convblock.5.0"]
    dropped = aware_plan.removed("block1.convblock.5.0")
    assert l1[kept].min() >= l1[dropped].max()


def test_ratio_scale_and_min_channels(rife):
    plan = P.plan_architecture_aware(rife.net, 0.5, ratio_scale={"block0.*": 0.0}, min_channels=48)
    ch = plan.channels()
    assert ch["block0.convblock.1.0"] == 192  # scale 0: block 0 untouched
    assert ch["block1.convblock.1.0"] == 64
    assert ch["block3.convblock.1.0"] == 48  # 32 would fall below the floor


def test_naive_global_uses_one_threshold(rife):
    plan = P.plan_naive_global(rife.net, 0.25)
    assert plan.removed_fraction == pytest.approx(0.25, abs=0.002)
    scores = P._group_scores(rife.net, list(plan.groups.values()))
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
    assert P.layer_out_channels(physical.net) == {**P.layer_out_channels(rife.net), **aware_plan.layer_channels()}
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
    plan = P.plan_architecture_aware(rife.net, 0.5, protected=["block*.conv0.0.0", "block3.convblock.7.0"])
    assert "block3.conv0.1.0" in plan.protected  # protecting convblock.7 protects its coupled trunk group ...
    assert "block3.convblock.6.0" in plan.protected  # ... and the group feeding its inputs
    assert "block2.conv0.1.0" not in plan.protected
    assert "block2.conv0.1.0" in P.plan_architecture_aware(rife.net, 0.5, protected=["block2.lastconv"]).protected
    phys = P.prune_model(rife, plan, mode="physical")
    mask = P.prune_model(rife, plan, mode="mask")
    for name in ("block0.conv0.0.0", "block2.conv0.0.0", "block3.conv0.1.0", "block3.convblock.7.0", "block3.lastconv"):
        ref = P.conv_layers(rife.net)[name].weight
        assert torch.equal(P.conv_layers(phys.net)[name].weight.detach(), ref.detach()), name
        assert torch.equal(P.conv_layers(mask.net)[name].weight.detach(), ref.detach()), name
    assert phys.net.block3.lastconv.in_channels == 64  # protected trunk: the head still sees every channel
    # unprotected trunk of block 1: the head keeps exactly the rows of the kept channels
    keep = plan.keep["block1.conv0.1.0"]
    assert torch.equal(phys.net.block1.lastconv.weight.detach(), rife.net.block1.lastconv.weight.detach()[keep])
    assert phys.net.block2.lastconv.out_channels == 5


def test_mask_pruning_keeps_shapes_and_shows_the_bias_trap(rife, aware_plan, physical, pair):
    mask = P.prune_model(rife, aware_plan, mode="mask")
    shapes = {n: m.weight.shape for n, m in P.conv_layers(rife.net).items()}
    assert {n: m.weight.shape for n, m in P.conv_layers(mask.net).items()} == shapes
    w = P.conv_layers(mask.net)["block3.convblock.2.0"].weight
    gone = aware_plan.removed("block3.convblock.2.0")
    assert torch.count_nonzero(w[gone]) == 0 and torch.count_nonzero(w[aware_plan.keep["block3.convblock.2.0"]]) > 0
    assert P.nonzero_parameters(mask.net) < P.nonzero_parameters(rife.net)
    with_bias = P.prune_model(rife, aware_plan, mode="mask", mask_bias=True)
    o_phys, o_mask, o_bias = (m.interpolate(*pair) for m in (physical, mask, with_bias))
    assert (o_bias - o_phys).abs().max() < 1e-3  # zeroed biases: same network as the removal
    assert (o_mask - o_phys).abs().max() > 1e-2  # biases kept: PReLU(bias) still flows on


def test_save_and_load_reproduce_outputs(rife, physical, aware_plan, pair, tmp_path):
    path = P.save_pruned(physical, tmp_path / "phys.pt")
    payload = torch.load(path, weights_only=True)  # plain tensors and plan, no pickled module
    assert set(payload) == {"format", "mode", "mask_bias", "plan", "state_dict"}
    again, plan = P.load_pruned(path)
    assert plan.keep == aware_plan.keep
    assert torch.equal(again.interpolate(*pair), physical.interpolate(*pair))
    mask = P.prune_model(rife, aware_plan, mode="mask")
    again_m, _ = P.load_pruned(P.save_pruned(mask, tmp_path / "mask.pt"))
    assert torch.equal(again_m.interpolate(*pair), mask.interpolate(*pair))
    assert again_m.net.block3.convblock[2][0].weight.shape == (64, 64, 3, 3)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, float("nan"), "a quarter", None])
def test_sparsity_outside_range_is_refused(rife, bad):
    for fn in (P.plan_naive_global, P.plan_architecture_aware):
        with pytest.raises(P.PruningError, match=r"\[0, 1\)"):
            fn(rife.net, bad)


def test_unknown_layers_and_bad_settings_are_refused(rife, physical, aware_plan, tmp_path):
    with pytest.raises(P.PruningError, match=r"'block9\.conv0\.0\.0' matches no conv layer"):
        P.plan_architecture_aware(rife.net, 0.25, protected=["block9.conv0.0.0"])
    with pytest.raises(P.PruningError, match="matches no conv layer"):
        P.plan_architecture_aware(rife.net, 0.25, ratio_scale={"decoder.*": 0.5})
    with pytest.raises(P.PruningError, match="min_channels"):
        P.plan_architecture_aware(rife.net, 0.25, min_channels=0)
    with pytest.raises(P.PruningError, match="unknown pruning method"):
        P.make_plan(rife.net, "random", 0.25)
    with pytest.raises(P.PruningError, match="mode"):
        P.prune_model(rife, aware_plan, mode="soft")
    with pytest.raises(P.PruningError, match="already pruned"):
        P.prune_model(physical, aware_plan)
    with pytest.raises(P.PruningError, match="unpruned"):
        P.apply_physical(copy.deepcopy(physical.net), aware_plan)
    with pytest.raises(P.PruningError, match="no pruning plan"):
        P.save_pruned(rife, tmp_path / "x.pt")
    with pytest.raises(P.PruningError, match="not found"):
        P.load_pruned(tmp_path / "missing.pt")
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(P.PruningError, match="not a pruned model"):
        P.load_pruned(tmp_path / "other.pt")
    with pytest.raises(P.PruningError, match="overlap"):
        P.check_disjoint_ranges({"bikes": [0, 100]}, {"bikes": [90, 120]})


def test_scene_cuts_are_skipped():
    # bikes cuts between frames 29 and 30: triplets starting at 28 and 29 straddle it
    names = [t.name for t in P.clip_range_triplets({"bikes": [26, 33]}, 10)]
    assert names == ["bikes:26", "bikes:27", "bikes:30"]


# ---------------------------------------------------------------- distillation


def test_distillation_moves_the_student_towards_the_teacher(rife, carphone):
    from rifelab.data import clip_triplets
    from rifelab.distill import distill, distillation_targets
    from rifelab.metrics import psnr

    plan = P.plan_architecture_aware(rife.net, 0.5)
    student = P.prune_model(rife, plan)
    data = distillation_targets(rife, list(clip_triplets(carphone[:5], count=2)), progress=False)
    a, b = data.img0[0], data.img1[0]

    def fidelity() -> float:
        return float(psnr(student.interpolate(a, b), data.frame[0])[0])

    before = fidelity()
    result = distill(student, data, steps=4, lr=3e-4, batch_size=2, crop=128, progress=False)
    assert len(result.losses) == 4 and all(math.isfinite(x) for x in result.losses)
    assert fidelity() > before + 1.0
    assert P.layer_out_channels(student.net) == {**P.layer_out_channels(rife.net), **plan.layer_channels()}
    with pytest.raises(ValueError, match="multiple of 64"):
        distill(student, data, steps=1, crop=100)
    with pytest.raises(ValueError, match="lr"):
        distill(student, data, steps=1, lr=-1.0)


# ---------------------------------------------------------------- notebook


@pytest.mark.notebook
def test_notebook_runs_with_tiny_parameters(tmp_path):
    from rifelab.notebooks import run_notebook

    root = Path(__file__).resolve().parent.parent
    params = dict(
        sparsities=[0.5], finetune=["architecture_aware@0.5"], finetune_steps=2, finetune_batch=1,
        train_ranges={"carphone": [0, 6]}, train_triplets=1, eval_ranges={"carphone": [100, 106]}, eval_triplets=1,
        timing_clip="carphone", timing_warmup=0, timing_repeats=1, timing_rounds=1, trap_sparsity=0.5,
        device="cpu", results_root=str(tmp_path),
    )
    run_notebook(root / "notebooks" / "03_pruning.ipynb", tmp_path / "out.ipynb", parameters=params, cwd=root)
    dirs = list((tmp_path / "pruning").iterdir())
    assert len(dirs) == 1 and dirs[0].name.startswith("cpu-")
    out = dirs[0]
    for name in ("sweep.csv", "sweep.md", "importance_per_layer.csv", "channel_groups.csv", "mask_trap.csv",
                 "report001_claims_vs_ours.md", "importance_heatmap.png", "psnr_vs_sparsity_and_pareto.png"):
        assert (out / name).exists(), name
    assert [p.name for p in out.glob("*.json")] == ["metrics.json"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["environment"]["device"] == "cpu"
    assert metrics["reload_max_abs_diff"] == 0
    assert metrics["mask_trap_max_abs_diff_with_bias"] < 1e-3 < metrics["mask_trap_max_abs_diff_weights_only"]
    configs = metrics["configs"]
    assert set(configs) == {"unpruned", "naive_global/mask/0.5", "naive_global/physical/0.5", "architecture_aware/mask/0.5",
                            "architecture_aware/physical/0.5", "architecture_aware/physical/0.5+ft"}
    assert configs["architecture_aware/physical/0.5"]["gmac"] < 0.5 * configs["unpruned"]["gmac"]
    assert configs["architecture_aware/mask/0.5"]["gmac"] == configs["unpruned"]["gmac"]
    assert (tmp_path / "metrics" / "pruning.json").exists()


# ---------------------------------------------------------------- CLI


def test_prune_subcommand_saves_a_loadable_model(tmp_path, pair):
    import argparse

    parser = argparse.ArgumentParser()
    P.add_prune_parser(parser.add_subparsers())
    out = tmp_path / "aware.pt"
    args = parser.parse_args(["prune", "--sparsity", "0.25", "--output", str(out)])
    assert args.func(args) == 0
    model, plan = P.load_pruned(out)
    assert plan.method == "architecture_aware" and model.pruning_info.mode == "physical"
    assert model.interpolate(*pair).shape == pair[0].shape
    with pytest.raises(P.PruningError, match=r"\[0, 1\)"):
        args = parser.parse_args(["prune", "--sparsity", "1", "--output", str(tmp_path / "x.pt")])
        args.func(args)
    assert not (tmp_path / "x.pt").exists()
