"""Sensitivity-guided channel plans: what each group costs in quality, what it buys in measured time.

Three measurements and one allocation, in the order a study uses them:

    sens = group_sensitivity(model, triplets, ratios=(0.25, 0.5))      # PSNR drop when one group alone is pruned
    prof = layer_latency_profile(model, 272, 640)                      # where the time goes (hooks, on the device)
    save = group_latency_savings(model, (0.25, 0.5), 272, 640)         # measured time saved per group and ratio
    alloc = allocate(sens, save, budget_db=2.0)                        # per-group ratios within a loss budget
    plan = plan_from_allocation(model.net, alloc, importance="l1")     # torch-pruning picks the channels

Why measured time and not MACs: block 3 runs its trunk at 1/4 of the frame per side and holds most MACs, but
the 64-channel convs there are memory-bound on a CPU, and block 0's 192-channel convs at 1/32 are too small to
fill the cores; a MAC share says neither. `layer_latency_profile` times every conv inside the real forward pass
(forward hooks, synchronised), so its shares include what MACs miss. `group_latency_savings` then times, side by
side, the convs a group's cut touches (its own convs with fewer outputs, its consumers with fewer inputs) at
the shapes they see in the network, full against cut, in a NetAdapt-style lookup table: the predicted time of a
plan is the unpruned time minus the sum of its groups' savings. That sum ignores that two neighbouring cuts
shrink the conv between them twice; the study therefore measures every planned model end to end as well.

The allocation (`allocate`) is a multiple-choice knapsack: each prunable group picks one ratio from
{0} and the measured ratios; the ratio's "weight" is the PSNR drop that group alone caused (negative drops count
as zero) and its "value" the time it saves. Dynamic programming over the loss budget, discretised in
`resolution_db` steps (drops rounded up, so the plan never exceeds the budget by rounding), finds the ratios that
save the most time whose summed drops stay within `budget_db`. The sum of single-group drops is a proxy for the
drop of the combined plan (drops interact); it ranks plans, it does not promise their loss, and fine-tuning
recovers much of it. Protected groups (and heads) are never offered a cut.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from rifelab.measure.evaluation import evaluate_triplets
from rifelab.measure.harness import time_interleaved
from rifelab.measure.profiling import count_flops, synchronize
from rifelab.pruning.apply import prune_model
from rifelab.pruning.groups import ChannelGroup, PruningError, channel_groups, conv_layers, out_dim
from rifelab.pruning.importance import importance_scores
from rifelab.pruning.plans import DEFAULT_PROTECTED, ChannelPlan, match_patterns, plan_from_ratios
from rifelab.rife.model import RIFE
from rifelab.rife.contract import padded_size

log = logging.getLogger(__name__)

__all__ = [
    "kept_channels",
    "prunable_groups",
    "group_sensitivity",
    "conv_input_shapes",
    "layer_latency_profile",
    "group_latency_share",
    "group_latency_savings",
    "Allocation",
    "allocate",
    "plan_from_allocation",
    "predicted_latency_ms",
]


def kept_channels(width: int, ratio: float, round_to: int = 8) -> int:
    """Channels a group of `width` keeps at `ratio`, by torch-pruning's rule: floor, then down to a multiple."""
    kept = int(width * (1.0 - ratio))
    if round_to > 1:
        kept -= kept % round_to
    return max(kept, min(width, round_to), 1)


def prunable_groups(net: nn.Module, protected: Sequence[str] = DEFAULT_PROTECTED) -> list[ChannelGroup]:
    """Groups a plan may cut: not a head, not protected (nor feeding a protected layer's inputs)."""
    groups = channel_groups(net)
    prot = set().union(*match_patterns(protected, groups, "protected layer", with_inputs=True).values()) if protected else set()
    return [g for g in groups if g.prunable and g.name not in prot]


def _check_ratios(ratios: Sequence[float]) -> list[float]:
    out = sorted({float(r) for r in ratios})
    if not out or any(not (0.0 < r < 1.0) or not math.isfinite(r) for r in out):
        raise PruningError(f"sensitivity ratios must be numbers in (0, 1), got {list(ratios)!r}")
    return out


# ----------------------------------------------------------------------------- quality


def group_sensitivity(
    model: RIFE,
    triplets: Sequence[Any],
    ratios: Sequence[float] = (0.25, 0.5),
    importance: str | Mapping[str, np.ndarray] = "l1",
    protected: Sequence[str] = DEFAULT_PROTECTED,
    round_to: int = 8,
    scale: float = 1.0,
    progress: bool = False,
) -> pd.DataFrame:
    """PSNR drop on `triplets` when one prunable group alone is physically pruned at each ratio (no fine-tuning).

    One row per (group, ratio): block, width, kept, psnr (mean), dpsnr (mean of per-triplet differences to the
    unpruned model; negative = worse) and dpsnr_min (worst triplet). Channels are chosen by `importance`.
    """
    ratios = _check_ratios(ratios)
    if len(triplets) == 0:
        raise PruningError("sensitivity needs at least one triplet")
    groups = prunable_groups(model.net, protected)
    scores = importance_scores(model.net, importance) if isinstance(importance, str) else importance
    base = evaluate_triplets(model, triplets, "sensitivity", methods=("rife",), scale=scale, progress=False)[0]
    base_psnr = base["psnr"].to_numpy()
    rows = []
    jobs = [(g, r) for g in groups for r in ratios]
    for g, r in tqdm(jobs, desc="sensitivity", disable=not progress):
        plan = plan_from_ratios(model.net, {g.name: r}, importance=scores, round_to=round_to,
                                method="sensitivity-probe")
        pm = prune_model(model, plan, mode="physical")
        q = evaluate_triplets(pm, triplets, "sensitivity", methods=("rife",), scale=scale, progress=False)[0]
        d = q["psnr"].to_numpy() - base_psnr
        rows.append({"group": g.name, "block": g.block, "ratio": r, "width": g.width, "kept": len(plan.keep[g.name]),
                     "psnr": float(q["psnr"].mean()), "dpsnr": float(d.mean()), "dpsnr_min": float(d.min())})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- latency


def _forward_inputs(model: RIFE, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    hp, wp = padded_size(h, w, model.padding_multiple(1.0))
    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 3, hp, wp, generator=g).to(model.device, model.dtype)
    b = torch.rand(1, 3, hp, wp, generator=g).to(model.device, model.dtype)
    t = torch.full((1, 1, hp, wp), 0.5, device=model.device, dtype=model.dtype)
    return a, b, t


def conv_input_shapes(model: RIFE, height: int, width: int) -> dict[str, tuple[int, ...]]:
    """Input shape of every conv in one forward pass on a frame of height x width (padded as `interpolate` pads)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(_m: nn.Module, args: tuple, name: str) -> None:
        shapes.setdefault(name, tuple(args[0].shape))

    hooks = [m.register_forward_pre_hook(lambda mm, args, n=name: record(mm, args, n))
             for name, m in conv_layers(model.net).items()]
    try:
        with torch.inference_mode():
            model.net(*_forward_inputs(model, height, width))
    finally:
        for h in hooks:
            h.remove()
    return shapes


def _owner_of(net: nn.Module) -> dict[str, nn.Module]:
    """conv name -> the module timed for it: the conv with its activation where the two sit in one Sequential."""
    out: dict[str, nn.Module] = {}
    for name, m in net.named_modules():
        if isinstance(m, nn.Sequential) and len(m) == 2 and isinstance(m[0], (nn.Conv2d, nn.ConvTranspose2d)):
            out[f"{name}.0"] = m
    for name, m in conv_layers(net).items():
        out.setdefault(name, m)
    return out


def layer_latency_profile(
    model: RIFE, height: int, width: int, warmup: int = 1, rounds: int = 5, with_macs: bool = True,
) -> pd.DataFrame:
    """Time of every conv (with its activation) inside the real forward pass, on the model's device.

    Forward hooks synchronise the device and read a clock around each conv; `rounds` forward passes after
    `warmup` give a median per layer. Columns: layer, group, block, ms, share (of the whole forward's median
    time), gmac and mac_share (ptflops on the conv alone at its input shape). The rest of the forward (warps,
    resizes, concatenations) is the row `other`.
    """
    net, dev = model.net, model.device
    owners = _owner_of(net)
    group_of = {layer: g.name for g in channel_groups(net) for layer in g.layers}
    starts: dict[str, float] = {}
    samples: dict[str, list[float]] = {name: [] for name in owners}

    def pre(_m: nn.Module, _args: Any, name: str) -> None:
        synchronize(dev)
        starts[name] = time.perf_counter()

    def post(_m: nn.Module, _args: Any, _out: Any, name: str) -> None:
        synchronize(dev)
        samples[name].append(time.perf_counter() - starts[name])

    inputs = _forward_inputs(model, height, width)
    totals: list[float] = []
    hooks = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                net(*inputs)
            for name, m in owners.items():
                hooks.append(m.register_forward_pre_hook(lambda mm, a, n=name: pre(mm, a, n)))
                hooks.append(m.register_forward_hook(lambda mm, a, o, n=name: post(mm, a, o, n)))
            for _ in range(rounds):
                synchronize(dev)
                t0 = time.perf_counter()
                net(*inputs)
                synchronize(dev)
                totals.append(time.perf_counter() - t0)
    finally:
        for h in hooks:
            h.remove()
    total_ms = float(np.median(totals)) * 1e3
    shapes = conv_input_shapes(model, height, width) if with_macs else {}
    layers = conv_layers(net)
    rows = []
    for name in owners:
        ms = float(np.median(samples[name])) * 1e3
        gmac = float("nan")
        if with_macs:
            x = torch.zeros(shapes[name], device=dev, dtype=model.dtype)
            with torch.no_grad():
                gmac = count_flops(layers[name], lambda _s, x=x: x, (1,))[0] / 1e9  # a tensor: the conv takes it positionally
        rows.append({"layer": name, "group": group_of.get(name, name), "block": int(name.split(".")[0][5:]),
                     "ms": ms, "gmac": gmac})
    df = pd.DataFrame(rows)
    other = max(total_ms - df["ms"].sum(), 0.0)
    df = pd.concat([df, pd.DataFrame([{"layer": "other", "group": "other", "block": -1, "ms": other, "gmac": 0.0}])],
                   ignore_index=True)
    df["share"] = df["ms"] / max(df["ms"].sum(), 1e-12)
    df["mac_share"] = df["gmac"] / df["gmac"].sum() if with_macs else float("nan")
    df.attrs["forward_ms"] = total_ms
    return df


def group_latency_share(profile: pd.DataFrame) -> pd.DataFrame:
    """Per channel group: share of measured time and of MACs of the convs whose outputs the group holds."""
    agg = profile.groupby("group", sort=False).agg(block=("block", "first"), ms=("ms", "sum"), share=("share", "sum"),
                                                   mac_share=("mac_share", "sum"))
    return agg.reset_index()


def _standalone(m: nn.Module, act: nn.Module | None, cin: int, cout: int, dev: torch.device,
                dtype: torch.dtype) -> nn.Module:
    """A conv like `m` (same kernel, stride, padding) with `cin` inputs and `cout` outputs, plus its activation."""
    if isinstance(m, nn.ConvTranspose2d):
        conv = nn.ConvTranspose2d(cin, cout, m.kernel_size, m.stride, m.padding, bias=m.bias is not None)
    else:
        conv = nn.Conv2d(cin, cout, m.kernel_size, m.stride, m.padding, bias=m.bias is not None)
    mods: list[nn.Module] = [conv]
    if isinstance(act, nn.PReLU):
        mods.append(nn.PReLU(cout))
    elif act is not None:
        mods.append(act)
    return nn.Sequential(*mods).to(dev, dtype).eval()


def group_latency_savings(
    model: RIFE,
    ratios: Sequence[float],
    height: int,
    width: int,
    protected: Sequence[str] = DEFAULT_PROTECTED,
    round_to: int = 8,
    warmup: int = 1,
    rounds: int = 5,
    progress: bool = False,
) -> pd.DataFrame:
    """Measured time one group's cut saves: the convs it touches, full against cut, timed side by side.

    For every prunable group and ratio, the group's own convs (outputs cut to the kept count) and its
    consumers (inputs cut) are rebuilt alone at the input shapes they see in the network (frame height x
    width), with their activations, and timed interleaved with the full-width set (`harness.time_interleaved`:
    each round calls the full set and then each cut, back to back). The saving is the median over rounds of the
    paired difference full - cut, so a change of machine load between rounds cancels out; its quartiles show the
    spread. Columns: group, block, ratio, width, kept, full_ms, cut_ms (medians), saving_ms, saving_p25_ms,
    saving_p75_ms (ms).
    """
    ratios = _check_ratios(ratios)
    net, dev, dt = model.net, model.device, model.dtype
    shapes = conv_input_shapes(model, height, width)
    layers = conv_layers(net)
    owners = _owner_of(net)
    groups = prunable_groups(net, protected)

    def act_of(name: str) -> nn.Module | None:
        o = owners[name]
        return o[1] if isinstance(o, nn.Sequential) else None

    def setup(g: ChannelGroup, kept: int) -> Callable[[], Any]:
        mods, xs = [], []
        for name in g.layers:
            m = layers[name]
            cin = shapes[name][1]
            mods.append(_standalone(m, act_of(name), cin, kept, dev, dt))
            xs.append(torch.rand(shapes[name], device=dev, dtype=dt))
        for name in g.consumers:
            m = layers[name]
            cout = int(m.weight.shape[out_dim(m)])
            mods.append(_standalone(m, act_of(name), kept, cout, dev, dt))
            xs.append(torch.rand((shapes[name][0], kept, *shapes[name][2:]), device=dev, dtype=dt))

        def run() -> None:
            with torch.inference_mode():
                for mod, x in zip(mods, xs):
                    mod(x)
        return run

    calls: dict[str, Callable[[], Any]] = {}
    kept_of: dict[tuple[str, float], int] = {}
    for g in groups:
        calls[f"{g.name}|full"] = setup(g, g.width)
        for r in ratios:
            k = kept_channels(g.width, r, round_to)
            kept_of[(g.name, r)] = k
            calls[f"{g.name}|{r:g}"] = setup(g, k)
    timings = time_interleaved(calls, dev, warmup=warmup, rounds=rounds, progress=progress).timings
    rows = []
    for g in groups:
        full = np.asarray(timings[f"{g.name}|full"].samples)
        for r in ratios:
            cut = np.asarray(timings[f"{g.name}|{r:g}"].samples)
            paired = full - cut  # same round, called back to back: a load change between rounds cancels out
            rows.append({"group": g.name, "block": g.block, "ratio": r, "width": g.width, "kept": kept_of[(g.name, r)],
                         "full_ms": float(np.median(full)) * 1e3, "cut_ms": float(np.median(cut)) * 1e3,
                         "saving_ms": float(np.median(paired)) * 1e3,
                         "saving_p25_ms": float(np.percentile(paired, 25)) * 1e3,
                         "saving_p75_ms": float(np.percentile(paired, 75)) * 1e3})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- allocation


@dataclass
class Allocation:
    """Per-group ratios chosen within a loss budget, with the proxies they were chosen by."""

    ratios: dict[str, float]
    budget_db: float
    predicted_loss_db: float
    predicted_saving_ms: float
    table: pd.DataFrame = field(repr=False)


def allocate(
    sensitivity: pd.DataFrame,
    savings: pd.DataFrame,
    budget_db: float,
    resolution_db: float = 0.01,
    protected_groups: Sequence[str] = (),
) -> Allocation:
    """Multiple-choice knapsack: the per-group ratios that save the most measured time within `budget_db`.

    `sensitivity` (group, ratio, dpsnr) and `savings` (group, ratio, saving_ms) come from `group_sensitivity`
    and `group_latency_savings`. Each group takes ratio 0 or one measured ratio; a ratio costs its single-group
    PSNR drop (max(0, -dpsnr), rounded up to `resolution_db`) and is worth its saving (options that save no time
    are dropped). Dynamic programming over the discretised budget is exact for these proxies. Groups in
    `protected_groups` are never cut.
    """
    if not (isinstance(budget_db, (int, float)) and math.isfinite(budget_db) and budget_db >= 0):
        raise PruningError(f"loss budget must be a number of dB >= 0, got {budget_db!r}")
    if not resolution_db > 0:
        raise PruningError(f"resolution_db must be > 0, got {resolution_db!r}")
    merged = sensitivity[["group", "ratio", "dpsnr"]].merge(savings[["group", "ratio", "saving_ms"]],
                                                            on=["group", "ratio"], how="inner")
    merged = merged[~merged["group"].isin(list(protected_groups))]
    merged["loss_db"] = (-merged["dpsnr"]).clip(lower=0.0)
    merged["cost"] = np.ceil(merged["loss_db"] / resolution_db - 1e-9).astype(int)
    cap = int(math.floor(budget_db / resolution_db + 1e-9))
    names = list(dict.fromkeys(merged["group"]))
    options: list[list[tuple[float, int, float]]] = []
    for n in names:
        rows = merged[(merged["group"] == n) & (merged["saving_ms"] > 0) & (merged["cost"] <= cap)]
        options.append([(float(r["ratio"]), int(r["cost"]), float(r["saving_ms"])) for _, r in rows.iterrows()])
    neg = -np.inf
    best = np.zeros(cap + 1)  # best[b]: most time saved with summed cost <= b over the groups so far
    choice = np.full((len(names), cap + 1), -1, dtype=int)
    for gi, opts in enumerate(options):
        new = best.copy()
        for oi, (_, cost, value) in enumerate(opts):
            cand = np.full(cap + 1, neg)
            cand[cost:] = best[: cap + 1 - cost] + value
            better = cand > new
            new[better] = cand[better]
            choice[gi, better] = oi
        best = new
    ratios: dict[str, float] = {}
    b = cap
    for gi in range(len(names) - 1, -1, -1):
        oi = choice[gi, b]
        if oi >= 0:
            r, cost, _ = options[gi][oi]
            ratios[names[gi]] = r
            b -= cost
    chosen = merged[[ratios.get(g) == r for g, r in zip(merged["group"], merged["ratio"])]]
    table = pd.DataFrame({"group": names}).merge(chosen[["group", "ratio", "loss_db", "saving_ms"]], on="group", how="left")
    table = table.fillna({"ratio": 0.0, "loss_db": 0.0, "saving_ms": 0.0})
    return Allocation(dict(sorted(ratios.items())), float(budget_db), float(chosen["loss_db"].sum()),
                      float(chosen["saving_ms"].sum()), table)


def plan_from_allocation(
    net: nn.Module,
    allocation: Allocation,
    importance: str | Mapping[str, np.ndarray] = "l1",
    round_to: int = 8,
    protected: Sequence[str] = DEFAULT_PROTECTED,
) -> ChannelPlan:
    """The allocation's ratios as a channel plan (torch-pruning's pruner picks the channels by `importance`)."""
    plan = plan_from_ratios(
        net, allocation.ratios, importance=importance, protected=protected, round_to=round_to, method="sensitivity",
        settings={"budget_db": allocation.budget_db, "predicted_loss_db": allocation.predicted_loss_db,
                  "predicted_saving_ms": allocation.predicted_saving_ms},
    )
    return plan


def predicted_latency_ms(forward_ms: float, savings: pd.DataFrame, ratios: Mapping[str, float]) -> float:
    """Lookup-table prediction: the unpruned forward time minus the measured savings of the chosen ratios."""
    s = savings.set_index(["group", "ratio"])["saving_ms"]
    return float(forward_ms - sum(float(s.get((g, r), 0.0)) for g, r in ratios.items() if r > 0))
