"""Channel pruning of RIFE's IFNet: importance criteria, plans (naive global, architecture-aware, per-group ratios
through torch-pruning, the lite width cut), masks or removal, save and reload.

The pieces, in the order a study uses them:

    groups = channel_groups(model.net)                   # coupled output channels, from torch-pruning's graph
    imp = channel_importance(model.net)                  # per-output-channel L1 of every conv (a DataFrame)
    plan = plan_architecture_aware(model.net, 0.25)      # or plan_naive_global(model.net, 0.25)
    plan = plan_from_ratios(model.net, {"block3.*": 0.5}, importance="group_norm")   # torch-pruning's pruner
    plan = plan_lite(model.net)                          # uniform width cut 192/128/96/64 -> 144/96/72/48
    small = prune_model(model, plan, mode="physical")    # channels removed: smaller, faster
    masked = prune_model(model, plan, mode="mask")       # weights zeroed: same shapes, same speed
    save_pruned(small, "pruned.pt"); again = load_pruned("pruned.pt")   # again.interpolate(img0, img1, t, scale)

Plans from measured sensitivity and latency live in `rifelab.sensitivity`; fine-tuning in `rifelab.distill`.

Channel groups. Output channels that a residual ties together (v4.0: `conv0.1`, `convblock.7` and the
input of `lastconv`) form one group and are pruned as one; every other conv's outputs are a group of
their own. The groups come from torch-pruning's dependency graph, built for each IFBlock separately with
its own forward and example tensors, so the warp and the flow slicing between blocks stay out of the
trace. A block's head (`lastconv`: 4 flow + 1 mask channels) is never pruned; nor are the image inputs.

Layer names are the conv modules' names inside `IFNet`, e.g. `block0.conv0.0.0` (first conv of block 0),
`block3.convblock.5.0`, `block2.lastconv`; protection and per-layer ratio patterns are `fnmatch`
patterns over those names (or over group names, which are the name of the group's first conv).
A protected layer keeps its whole weight: the group holding its outputs and the group feeding its
inputs both stay whole (protecting `lastconv` therefore keeps the trunk; its outputs are kept anyway).

Masks use `torch.nn.utils.prune` on the weights only, as in report 001: the biases stay, so a masked
channel still emits PReLU(bias), a constant the next conv keeps seeing. Removing the channel drops it.
`mask_bias=True` zeroes the biases too, which makes a mask model compute what the physical one does.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch_pruning as tp
from torch.nn.utils import prune as torch_prune

from rifelab.measure.profiling import count_flops, resolve_device
from rifelab.publish.results import atomic_path
from rifelab.rife.checkpoints import load_rife
from rifelab.rife.model import RIFE
from rifelab.rife.network import IFBlock, IFNet, padding_multiple

log = logging.getLogger(__name__)

__all__ = [
    "PruningError", "ChannelGroup", "ChannelPlan", "PruningInfo", "METHODS", "MODES", "IMPORTANCES", "DEFAULT_PROTECTED",
    "LITE_RATIO", "conv_layers", "channel_groups", "layer_out_channels", "channel_importance", "importance_table",
    "importance_scores", "plan_naive_global", "plan_architecture_aware", "make_plan", "plan_from_ratios", "plan_lite",
    "apply_masks", "apply_physical", "prune_model", "save_pruned", "load_pruned", "read_pruned_meta", "model_gmac",
    "nonzero_parameters",
    "add_prune_parser", "cmd_prune_model",
]

METHODS = ("naive_global", "architecture_aware")
MODES = ("mask", "physical")
DEFAULT_PROTECTED = ("block*.conv0.0.0",)
FORMAT = "rifelab.pruned/1"


class PruningError(ValueError):
    """A pruning request that cannot be honoured (bad sparsity, unknown layer, mismatching plan)."""


# ----------------------------------------------------------------------------- layers and groups


def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))


def _out_dim(m: nn.Module) -> int:
    """Weight dimension holding a conv's output channels (ConvTranspose2d stores (in, out, k, k))."""
    return 1 if isinstance(m, nn.ConvTranspose2d) else 0


def conv_layers(net: IFNet) -> dict[str, nn.Module]:
    """Every Conv2d / ConvTranspose2d of the flow network by module name, in forward order."""
    return {name: m for name, m in net.named_modules() if _is_conv(m)}


def layer_out_channels(net: IFNet) -> dict[str, int]:
    """Current number of output channels of every conv (weight shape, so it sees physical pruning only)."""
    return {name: int(m.weight.shape[_out_dim(m)]) for name, m in conv_layers(net).items()}


@dataclass(frozen=True)
class ChannelGroup:
    """Output channels that must be pruned together: the same indices leave every member conv."""

    name: str
    block: int
    layers: tuple[str, ...]
    width: int
    prunable: bool
    consumers: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "block": self.block, "layers": list(self.layers), "width": self.width,
                "prunable": self.prunable, "consumers": list(self.consumers)}


def _block_example_inputs(net: IFNet, index: int, size: int = 64) -> tuple:
    """Example (x, flow, scale) for one block: block 0 sees images + t, later blocks also the flow."""
    block = net.blocks[index]
    first = block.conv0[0][0]
    p = next(block.parameters())
    cin = first.in_channels
    if index == 0:
        return (torch.zeros(1, cin, size, size, device=p.device, dtype=p.dtype), None, 1.0)
    return (
        torch.zeros(1, cin - 4, size, size, device=p.device, dtype=p.dtype),
        torch.zeros(1, 4, size, size, device=p.device, dtype=p.dtype),
        1.0,
    )


def _unwrapped_parameters(block: IFBlock) -> list[tuple[nn.Parameter, int]]:
    """v4.6 residual units scale by a (1, c, 1, 1) parameter outside any layer: tell torch-pruning its channel dim."""
    return [(m.beta, 1) for m in block.modules() if isinstance(getattr(m, "beta", None), nn.Parameter)]


def _block_graph(net: IFNet, index: int):
    """torch-pruning dependency graph of one IFBlock traced alone (the warp stays out)."""
    block = net.blocks[index]
    was_training = block.training
    block.eval()
    try:
        with torch.enable_grad():
            dg = tp.DependencyGraph().build_dependency(
                block,
                example_inputs=_block_example_inputs(net, index),
                unwrapped_parameters=_unwrapped_parameters(block) or None,
            )
    finally:
        block.train(was_training)
    return dg


def channel_groups(net: IFNet) -> list[ChannelGroup]:
    """Coupled output-channel groups of every block, read from torch-pruning's dependency graph.

    Each group lists the convs whose output channels it holds; it is named after its first conv in
    forward order. Groups holding a block's head (`lastconv`) are marked not prunable.
    """
    names = conv_layers(net)
    order = {name: i for i, name in enumerate(names)}
    by_module = {id(m): name for name, m in names.items()}
    groups: list[ChannelGroup] = []
    for bi, block in enumerate(net.blocks):
        dg = _block_graph(net, bi)
        seen: set[tuple[str, ...]] = set()
        for group in dg.get_all_groups(root_module_types=[nn.Conv2d, nn.ConvTranspose2d]):
            members = [
                by_module[id(dep.target.module)]
                for dep, _ in group
                if id(dep.target.module) in by_module and getattr(dep.handler, "__name__", "") == "prune_out_channels"
            ]
            layers = tuple(sorted(set(members), key=order.__getitem__))
            consumers = tuple(sorted({
                by_module[id(dep.target.module)]
                for dep, _ in group
                if id(dep.target.module) in by_module and getattr(dep.handler, "__name__", "") == "prune_in_channels"
            }, key=order.__getitem__))
            if not layers or layers in seen:
                continue
            seen.add(layers)
            first = names[layers[0]]
            width = int(first.weight.shape[_out_dim(first)])
            head = any(n.split(".")[1].startswith("lastconv") for n in layers)
            groups.append(ChannelGroup(layers[0], bi, layers, width, prunable=not head, consumers=consumers))
    groups.sort(key=lambda g: order[g.name])
    return groups


# ----------------------------------------------------------------------------- importance


def _channel_l1(m: nn.Module) -> torch.Tensor:
    w = m.weight.detach().float()
    dims = [d for d in range(w.dim()) if d != _out_dim(m)]
    return w.abs().sum(dim=dims).cpu()


def channel_importance(net: IFNet) -> pd.DataFrame:
    """Per-output-channel L1 norm of every conv's weight: one row per (layer, channel).

    Columns: block, layer, group, channel, l1 (sum of |w| over the channel's filter), l1_per_weight
    (l1 divided by the filter size, comparable across layers of different fan-in), rank_in_layer
    (0 = most important).
    """
    group_of = {layer: g.name for g in channel_groups(net) for layer in g.layers}
    rows = []
    for name, m in conv_layers(net).items():
        l1 = _channel_l1(m).numpy().astype(np.float64)
        fan = m.weight[0].numel() if _out_dim(m) == 0 else m.weight[:, 0].numel()
        ranks = np.empty(len(l1), dtype=int)
        ranks[np.argsort(-l1, kind="stable")] = np.arange(len(l1))
        block = int(name.split(".")[0].removeprefix("block"))
        for c, v in enumerate(l1):
            rows.append(
                {"block": block, "layer": name, "group": group_of.get(name, name), "channel": c,
                 "l1": float(v), "l1_per_weight": float(v) / fan, "rank_in_layer": int(ranks[c])}
            )
    return pd.DataFrame(rows)


def importance_table(importance: pd.DataFrame, sparsity: float | None = None) -> pd.DataFrame:
    """Per-layer summary of L1 importance; with `sparsity`, the share of each layer's channels that fall
    under one global L1 threshold (the naive-global rule) at that sparsity."""
    agg = importance.groupby("layer", sort=False).agg(
        block=("block", "first"), group=("group", "first"), channels=("channel", "size"),
        l1_min=("l1", "min"), l1_median=("l1", "median"), l1_max=("l1", "max"),
        l1_per_weight_median=("l1_per_weight", "median"),
    )
    if sparsity is not None:
        _check_sparsity(sparsity)
        thr = float(np.quantile(importance["l1"], sparsity)) if sparsity > 0 else -math.inf
        agg[f"below_global_threshold_at_{sparsity:g}"] = importance.groupby("layer", sort=False)["l1"].apply(
            lambda s: float((s < thr).mean())
        )
    return agg.reset_index()


# ----------------------------------------------------------------------------- plans


def _check_sparsity(sparsity: Any) -> float:
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise PruningError(f"sparsity must be a number in [0, 1) (the fraction of channels removed), got {sparsity!r}") from None
    if not (0.0 <= s < 1.0) or not math.isfinite(s):
        raise PruningError(
            f"sparsity must lie in [0, 1) (the fraction of prunable channels removed), got {sparsity!r}; "
            "use e.g. 0.25 to remove a quarter of the channels (1.0 would remove them all)"
        )
    return s


def _check_int(name: str, value: Any, lowest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < lowest:
        raise PruningError(f"{name} must be an integer >= {lowest}, got {value!r}")
    return int(value)


@dataclass
class ChannelPlan:
    """Which output channels each group keeps; enough to rebuild a pruned network's shapes.

    `keep[group]` is the sorted list of kept channel indices (of the original network) and
    `groups[group]` the group's description; protected groups keep every channel.
    """

    variant: str
    method: str
    sparsity: float
    groups: dict[str, ChannelGroup]
    keep: dict[str, list[int]]
    protected: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def channels(self) -> dict[str, int]:
        """Kept channels per group."""
        return {g: len(k) for g, k in self.keep.items()}

    def layer_channels(self) -> dict[str, int]:
        """Kept output channels per conv layer (every member of a group keeps the group's count)."""
        return {layer: len(self.keep[g]) for g, grp in self.groups.items() for layer in grp.layers}

    def removed(self, group: str) -> list[int]:
        """Channel indices a group loses."""
        kept = set(self.keep[group])
        return [c for c in range(self.groups[group].width) if c not in kept]

    @property
    def removed_fraction(self) -> float:
        """Fraction of all prunable channels removed."""
        total = sum(g.width for g in self.groups.values() if g.prunable)
        gone = sum(g.width - len(self.keep[n]) for n, g in self.groups.items() if g.prunable)
        return gone / total if total else 0.0

    def summary(self) -> pd.DataFrame:
        """One row per group: width, kept, removed fraction, protected."""
        return pd.DataFrame(
            [
                {"group": n, "block": g.block, "layers": ", ".join(g.layers), "width": g.width,
                 "kept": len(self.keep[n]), "removed_fraction": 1 - len(self.keep[n]) / g.width,
                 "protected": n in self.protected or not g.prunable}
                for n, g in self.groups.items()
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant, "method": self.method, "sparsity": self.sparsity,
            "groups": [g.to_dict() for g in self.groups.values()],
            "keep": {k: list(map(int, v)) for k, v in self.keep.items()},
            "protected": list(self.protected), "settings": dict(self.settings),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ChannelPlan":
        try:
            groups = {
                g["name"]: ChannelGroup(g["name"], int(g["block"]), tuple(g["layers"]), int(g["width"]), bool(g["prunable"]),
                                        tuple(g.get("consumers", ())))
                for g in d["groups"]
            }
            keep = {k: [int(c) for c in v] for k, v in d["keep"].items()}
            plan = cls(str(d["variant"]), str(d["method"]), float(d["sparsity"]), groups, keep,
                       list(d.get("protected", [])), dict(d.get("settings", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise PruningError(f"not a valid channel plan ({type(exc).__name__}: {exc})") from exc
        plan.validate()
        return plan

    def validate(self) -> None:
        """Every group has a keep list of distinct in-range indices, at least one channel, heads intact."""
        for n, g in self.groups.items():
            k = self.keep.get(n)
            if k is None:
                raise PruningError(f"channel plan has no keep list for group {n!r}")
            if not k or len(set(k)) != len(k) or min(k) < 0 or max(k) >= g.width:
                raise PruningError(f"channel plan for group {n!r}: keep list must hold 1..{g.width} distinct indices in [0, {g.width})")
            if not g.prunable and len(k) != g.width:
                raise PruningError(f"channel plan prunes the head group {n!r}; its outputs are the flow and mask")


def _match_patterns(
    patterns: Iterable[str], groups: Sequence[ChannelGroup], what: str, with_inputs: bool = False
) -> dict[str, set[str]]:
    """pattern -> names of the groups it matches (by group or member layer name); unknown patterns are errors.

    With `with_inputs`, a matched layer also claims the groups that feed its input channels, so that a
    protected layer keeps its whole weight tensor.
    """
    matched: dict[str, set[str]] = {}
    layer_names = [layer for g in groups for layer in g.layers]
    for pat in patterns:
        if not isinstance(pat, str) or not pat:
            raise PruningError(f"{what} entries must be layer names or fnmatch patterns (strings), got {pat!r}")
        hits = {g.name for g in groups if fnmatch.fnmatchcase(g.name, pat)
                or any(fnmatch.fnmatchcase(layer, pat) for layer in g.layers)
                or (with_inputs and any(fnmatch.fnmatchcase(layer, pat) for layer in g.consumers))}
        if not hits:
            examples = ", ".join(layer_names[:3] + layer_names[-2:])
            raise PruningError(
                f"{what} {pat!r} matches no conv layer of this network; layer names look like {examples} "
                "(see rifelab.pruning.conv_layers(model.net)); fnmatch wildcards such as 'block*.conv0.0.0' work"
            )
        matched[pat] = hits
    return matched


def _group_scores(net: IFNet, groups: Sequence[ChannelGroup]) -> dict[str, np.ndarray]:
    """Group channel importance: mean over the group's convs of their per-channel L1."""
    layers = conv_layers(net)
    return {g.name: np.mean([_channel_l1(layers[n]).numpy() for n in g.layers], axis=0) for g in groups}


def _top(scores: np.ndarray, k: int) -> list[int]:
    order = np.argsort(-scores, kind="stable")[:k]
    return sorted(int(i) for i in order)


def plan_naive_global(net: IFNet, sparsity: float, min_channels: int = 1) -> ChannelPlan:
    """One L1 threshold over all prunable channels of the whole network (the report's diagnostic case).

    Removes the `sparsity` share of all prunable channels with the lowest L1, wherever they sit,
    keeping at least `min_channels` per group only so the network still runs. No rounding.
    """
    s = _check_sparsity(sparsity)
    min_channels = _check_int("min_channels", min_channels, 1)
    groups = channel_groups(net)
    scores = _group_scores(net, groups)
    prunable = [g for g in groups if g.prunable]
    entries = sorted((float(v), g.name, c) for g in prunable for c, v in enumerate(scores[g.name]))
    target = int(round(s * len(entries)))
    removed: dict[str, set[int]] = {g.name: set() for g in groups}
    widths = {g.name: g.width for g in groups}
    count = 0
    for _, name, c in entries:
        if count >= target:
            break
        if widths[name] - len(removed[name]) <= min_channels:
            continue
        removed[name].add(c)
        count += 1
    keep = {g.name: [c for c in range(g.width) if c not in removed[g.name]] for g in groups}
    thr = entries[target - 1][0] if target > 0 else None
    return ChannelPlan(
        net.variant, "naive_global", s, {g.name: g for g in groups}, keep,
        protected=[g.name for g in groups if not g.prunable],
        settings={"min_channels": min_channels, "global_l1_threshold": thr},
    )


def plan_architecture_aware(
    net: IFNet,
    sparsity: float,
    protected: Sequence[str] = DEFAULT_PROTECTED,
    ratio_scale: Mapping[str, float] | None = None,
    min_channels: int = 16,
    round_to: int = 8,
) -> ChannelPlan:
    """Per-layer L1 pruning with protected layers, per-layer ratios, a channel floor and rounding.

    Each unprotected group loses `sparsity * scale` of its channels (its own threshold: the lowest-L1
    channels of that group), where `scale` comes from the first `ratio_scale` pattern matching the group
    (default 1). The kept count is rounded to a multiple of `round_to` and never drops below
    `min_channels` (nor above the group's width). Protected patterns must match an existing layer.
    """
    s = _check_sparsity(sparsity)
    min_channels = _check_int("min_channels", min_channels, 1)
    round_to = _check_int("round_to", round_to, 1)
    if isinstance(protected, str):
        protected = [protected]
    groups = channel_groups(net)
    prot = set().union(*_match_patterns(protected, groups, "protected layer", with_inputs=True).values()) if protected else set()
    scale_hits = _match_patterns((ratio_scale or {}).keys(), groups, "ratio_scale pattern")
    for pat, v in (ratio_scale or {}).items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise PruningError(f"ratio_scale[{pat!r}] must be a number >= 0, got {v!r}")
    scores = _group_scores(net, groups)
    keep: dict[str, list[int]] = {}
    ratios: dict[str, float] = {}
    for g in groups:
        if not g.prunable or g.name in prot:
            keep[g.name] = list(range(g.width))
            continue
        scale = next((float(v) for pat, v in (ratio_scale or {}).items() if g.name in scale_hits[pat]), 1.0)
        ratio = min(s * scale, 0.999)
        ratios[g.name] = ratio
        k = round_to * int(round(g.width * (1.0 - ratio) / round_to))
        k = min(g.width, max(k, min_channels, 1))
        keep[g.name] = _top(scores[g.name], k)
    return ChannelPlan(
        net.variant, "architecture_aware", s, {g.name: g for g in groups}, keep,
        protected=sorted(prot | {g.name for g in groups if not g.prunable}),
        settings={"protected_patterns": list(protected), "ratio_scale": dict(ratio_scale or {}),
                  "min_channels": min_channels, "round_to": round_to, "group_ratios": ratios},
    )


def make_plan(net: IFNet, method: str, sparsity: float, **kwargs: Any) -> ChannelPlan:
    """`plan_naive_global` or `plan_architecture_aware` by name (extra keywords go to the latter only)."""
    if method == "naive_global":
        return plan_naive_global(net, sparsity, min_channels=kwargs.get("naive_min_channels", 1))
    if method == "architecture_aware":
        kwargs.pop("naive_min_channels", None)
        return plan_architecture_aware(net, sparsity, **kwargs)
    raise PruningError(f"unknown pruning method {method!r}; expected one of {METHODS}")


# ----------------------------------------------------------------------------- importance criteria and
# ----------------------------------------------------------------------------- torch-pruning's high-level pruner
#
# What torch-pruning does here and what stays hand-written:
# - `plan_from_ratios` hands per-group ratios to torch-pruning's `BasePruner` (`pruning_ratio_dict`, `round_to`,
#   `ignored_layers`, `importance`): it picks the channels and rounds the counts. Its pruning history becomes our
#   serialisable `ChannelPlan`, so a saved model is still a plan plus a state_dict, replayed on a fresh network.
# - `plan_naive_global` stays hand-written: one threshold over the *whole* network needs one graph, but the graph
#   is traced per IFBlock (tracing all of IFNet would pull `grid_sample` and the flow slicing between blocks into
#   the graph), and `global_pruning=True` only ranks within one pruner.
# - `plan_architecture_aware` stays hand-written for its `min_channels` floor (torch-pruning has only a maximum
#   ratio) and its round-to-nearest rule, which the published sweep used; `plan_from_ratios` with one ratio for every
#   group is the torch-pruning twin (kept counts rounded down, as torch-pruning does).
# - The channel groups and the physical removal already come from torch-pruning's dependency graph.

IMPORTANCES = ("l1", "group_norm", "taylor")


def importance_scores(net: IFNet, criterion: str = "l1") -> dict[str, np.ndarray]:
    """Per-channel importance of every channel group under one criterion (higher = keep).

    - ``l1``: mean over the group's convs of each output filter's L1 norm (the rule of report 001).
    - ``group_norm``: torch-pruning's `GroupMagnitudeImportance(p=2)`: squared L2 over *every* parameter the
      channel touches (output filters, biases, PReLU slopes and the consumers' input slices), averaged.
    - ``taylor``: torch-pruning's `GroupTaylorImportance`: |w * dL/dw| summed over the group; the parameters must
      carry gradients of a loss first (`rifelab.distill.loss_gradients`).
    """
    if criterion not in IMPORTANCES:
        raise PruningError(f"unknown importance criterion {criterion!r}; expected one of {IMPORTANCES}")
    groups = channel_groups(net)
    if criterion == "l1":
        return _group_scores(net, groups)
    if criterion == "taylor" and any(p.grad is None for p in net.parameters()):
        raise PruningError("Taylor importance needs gradients on the network's parameters; "
                           "run rifelab.distill.loss_gradients(model, data) first")
    imp = tp.importance.GroupMagnitudeImportance(p=2) if criterion == "group_norm" else tp.importance.GroupTaylorImportance()
    layers = conv_layers(net)
    out: dict[str, np.ndarray] = {}
    for bi in range(len(net.blocks)):
        dg = _block_graph(net, bi)
        for g in groups:
            if g.block != bi:
                continue
            group = dg.get_pruning_group(layers[g.name], tp.prune_conv_out_channels, idxs=list(range(g.width)))
            scores = imp(group)
            if scores is None:
                raise PruningError(f"torch-pruning gave no {criterion} importance for group {g.name!r}")
            out[g.name] = scores.detach().float().cpu().numpy().astype(np.float64)
    return out


def _resolve_ratios(ratios: Mapping[str, float], groups: Sequence[ChannelGroup]) -> dict[str, float]:
    """Group name -> ratio from a mapping of group names or fnmatch patterns (the first match wins)."""
    hits = _match_patterns(ratios.keys(), groups, "ratio pattern")
    out: dict[str, float] = {}
    for pat, r in ratios.items():
        if isinstance(r, bool) or not isinstance(r, (int, float, np.floating)) or not (0.0 <= float(r) < 1.0):
            raise PruningError(f"ratio for {pat!r} must be a number in [0, 1), got {r!r}")
        for g in groups:
            if g.name in hits[pat] and g.name not in out:
                out[g.name] = float(r)
    return out


def plan_from_ratios(
    net: IFNet,
    ratios: Mapping[str, float],
    importance: str | Mapping[str, np.ndarray] = "l1",
    protected: Sequence[str] = (),
    round_to: int = 8,
    method: str = "custom",
    sparsity: float | None = None,
    settings: Mapping[str, Any] | None = None,
) -> ChannelPlan:
    """Per-group pruning ratios -> a `ChannelPlan`, with torch-pruning's high-level pruner picking the channels.

    `ratios` maps group names (or fnmatch patterns over group/layer names) to the share of channels removed;
    unlisted groups keep all channels. For each IFBlock a copy of the block is pruned by `tp.pruner.BasePruner`
    with `pruning_ratio_dict` (those ratios), `round_to` (kept counts rounded down to a multiple),
    `ignored_layers` (heads and `protected` layers) and `importance` (a criterion of `IMPORTANCES`, or
    precomputed scores per group from `importance_scores`); the copy's pruning history gives the removed indices.
    A protected layer keeps its whole weight: the group feeding its inputs stays whole too.
    """
    round_to = _check_int("round_to", round_to, 1)
    if isinstance(protected, str):
        protected = [protected]
    groups = channel_groups(net)
    by_name = {g.name: g for g in groups}
    prot = set().union(*_match_patterns(protected, groups, "protected layer", with_inputs=True).values()) if protected else set()
    prot |= {g.name for g in groups if not g.prunable}
    wanted = {n: r for n, r in _resolve_ratios(ratios, groups).items() if n not in prot and r > 0}
    scores = importance_scores(net, importance) if isinstance(importance, str) else dict(importance)
    missing = [n for n in wanted if n not in scores or len(scores[n]) != by_name[n].width]
    if missing:
        raise PruningError(f"importance scores missing or of the wrong length for groups {missing}")
    group_of_layer = {layer: g.name for g in groups for layer in g.layers}
    removed: dict[str, list[int]] = {}
    for bi, block in enumerate(net.blocks):
        todo = {n: r for n, r in wanted.items() if by_name[n].block == bi}
        if not todo:
            continue
        work = copy.deepcopy(block).eval()
        mods = {f"block{bi}.{n}": m for n, m in work.named_modules() if _is_conv(m)}
        name_of = {id(m): n for n, m in mods.items()}

        def imp(group: Any, name_of: dict[int, str] = name_of) -> torch.Tensor:
            return torch.as_tensor(scores[group_of_layer[name_of[id(group[0][0].target.module)]]], dtype=torch.float32)

        ignored = [mods[layer] for n in prot if by_name[n].block == bi for layer in by_name[n].layers]
        with torch.enable_grad():
            pruner = tp.pruner.BasePruner(
                work, _block_example_inputs(net, bi), importance=imp, pruning_ratio=0.0,
                pruning_ratio_dict={mods[layer]: r for n, r in todo.items() for layer in by_name[n].layers},
                ignored_layers=ignored, round_to=round_to, root_module_types=[nn.Conv2d, nn.ConvTranspose2d],
                unwrapped_parameters=_unwrapped_parameters(work) or None,
            )
            pruner.step()
        for module_name, is_out, idxs in pruner.pruning_history():
            layer = f"block{bi}.{module_name}"
            if is_out and layer in group_of_layer:
                removed.setdefault(group_of_layer[layer], []).extend(int(i) for i in idxs)
    keep = {g.name: [c for c in range(g.width) if c not in set(removed.get(g.name, ()))] for g in groups}
    stray = sorted(n for n in removed if n not in wanted)
    if stray:
        raise PruningError(f"torch-pruning removed channels of groups that were not asked for: {stray}")
    total = sum(g.width for g in groups if g.prunable)
    s = sparsity if sparsity is not None else sum(g.width - len(keep[g.name]) for g in groups if g.prunable) / total
    plan = ChannelPlan(
        net.variant, method, float(s), by_name, keep, protected=sorted(prot),
        settings={"importance": importance if isinstance(importance, str) else "precomputed",
                  "protected_patterns": list(protected), "round_to": round_to, "group_ratios": wanted,
                  "planner": "torch_pruning.BasePruner", **dict(settings or {})},
    )
    plan.validate()
    return plan


LITE_RATIO = 0.25  # RIFE 4.0 widths 192/128/96/64 -> 144/96/72/48


def plan_lite(net: IFNet, ratio: float = LITE_RATIO, round_to: int = 8, importance: str = "l1") -> ChannelPlan:
    """The "lite" baseline: one uniform width cut of every block (192/128/96/64 -> 144/96/72/48 at 0.25).

    Every group loses `ratio` of its channels, the first conv's outputs included (only heads and image inputs
    stay), as a hand-designed narrower RIFE would; the kept channels are the most important ones, so the
    cut starts from the trained weights rather than from scratch.
    """
    s = _check_sparsity(ratio)
    return plan_from_ratios(net, {"*": s}, importance=importance, protected=(), round_to=round_to, method="lite",
                            sparsity=s, settings={"uniform_ratio": s})


# ----------------------------------------------------------------------------- applying a plan


def _check_plan_fits(net: IFNet, plan: ChannelPlan) -> None:
    if plan.variant != net.variant:
        raise PruningError(f"plan was made for RIFE {plan.variant} but the network is RIFE {net.variant}")
    plan.validate()
    current = layer_out_channels(net)
    for g in plan.groups.values():
        for layer in g.layers:
            if layer not in current:
                raise PruningError(f"plan names layer {layer!r}, which this network does not have")
            if current[layer] != g.width:
                raise PruningError(
                    f"layer {layer!r} has {current[layer]} output channels but the plan expects the unpruned "
                    f"{g.width}; apply a plan to an unpruned network only"
                )


def apply_masks(net: IFNet, plan: ChannelPlan, mask_bias: bool = False) -> IFNet:
    """Zero the removed channels' weights with torch.nn.utils.prune masks (in place; shapes unchanged).

    With `mask_bias=False` (report 001's soft pruning) the biases stay and a masked channel still emits
    PReLU(bias); `mask_bias=True` zeroes them as well, so the result equals the physically pruned network.
    """
    _check_plan_fits(net, plan)
    layers = conv_layers(net)
    for name, g in plan.groups.items():
        gone = plan.removed(name)
        if not gone:
            continue
        for layer in g.layers:
            m = layers[layer]
            mask = torch.ones_like(m.weight)
            idx = torch.tensor(gone, device=m.weight.device)
            mask.index_fill_(_out_dim(m), idx, 0.0)
            torch_prune.custom_from_mask(m, "weight", mask)
            if mask_bias and m.bias is not None:
                bmask = torch.ones_like(m.bias)
                bmask[idx] = 0.0
                torch_prune.custom_from_mask(m, "bias", bmask)
    return net


def apply_physical(net: IFNet, plan: ChannelPlan) -> IFNet:
    """Remove the plan's channels for real (in place), one IFBlock at a time with torch-pruning.

    For each block the dependency graph is traced on the block alone; each group is pruned from its
    first conv, and torch-pruning carries the cut to every coupled conv, PReLU and consumer input.
    Afterwards every conv's output channels are checked against the plan.
    """
    _check_plan_fits(net, plan)
    layers = conv_layers(net)
    for bi in range(len(net.blocks)):
        todo = [(n, plan.removed(n)) for n, g in plan.groups.items() if g.block == bi and plan.removed(n)]
        if not todo:
            continue
        dg = _block_graph(net, bi)
        for name, gone in todo:
            root = layers[name]
            handler = tp.prune_conv_out_channels
            group = dg.get_pruning_group(root, handler, idxs=list(gone))
            if not dg.check_pruning_group(group):
                raise PruningError(f"torch-pruning refuses to prune group {name!r} to {len(plan.keep[name])} channels")
            group.prune()
    got = layer_out_channels(net)
    want = plan.layer_channels()
    bad = {k: (got[k], v) for k, v in want.items() if got[k] != v}
    if bad:
        raise PruningError(f"physical pruning left channel counts that differ from the plan (got, want): {bad}")
    return net


@dataclass
class PruningInfo:
    """What was done to a model: its plan and whether channels were masked or removed."""

    plan: ChannelPlan
    mode: str
    mask_bias: bool = False


def prune_model(model: RIFE, plan: ChannelPlan, mode: str = "physical", mask_bias: bool = False,
                inplace: bool = False) -> RIFE:
    """A pruned copy of `model` (or the model itself with `inplace=True`); `mode` is 'mask' or 'physical'."""
    if mode not in MODES:
        raise PruningError(f"unknown pruning mode {mode!r}; expected 'mask' (zeroed weights) or 'physical' (channels removed)")
    check_prunable(model)
    if getattr(model, "pruning_info", None) is not None:
        raise PruningError("this model is already pruned; start from the unpruned model (load_rife())")
    out = model if inplace else copy.deepcopy(model)
    if mode == "mask":
        apply_masks(out.net, plan, mask_bias=mask_bias)
    else:
        apply_physical(out.net, plan)
    out.pruning_info = PruningInfo(plan, mode, mask_bias)
    return out


# ----------------------------------------------------------------------------- save / load


def save_pruned(model: RIFE, path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> Path:
    """Save a pruned model as its channel plan plus a state_dict (no pickled module), atomically.

    Mask models are stored with their masks folded into the weights. `meta` (plain values: numbers, strings,
    lists, dicts) is stored beside them, e.g. how the model was fine-tuned; `read_pruned_meta` reads it back.
    """
    info: PruningInfo | None = getattr(model, "pruning_info", None)
    if info is None:
        raise PruningError("model has no pruning plan attached; prune it with rifelab.pruning.prune_model first")
    raw = model.net.state_dict()
    state: dict[str, torch.Tensor] = {}
    for k, v in raw.items():  # masks fold into plain weights: w = w_orig * mask
        if k.endswith("_mask"):
            continue
        if k.endswith("_orig"):
            base = k[: -len("_orig")]
            state[base] = (v * raw[base + "_mask"]).detach().cpu().clone()
        else:
            state[k] = v.detach().cpu().clone()
    payload = {"format": FORMAT, "mode": info.mode, "mask_bias": info.mask_bias, "plan": info.plan.to_dict(),
               "state_dict": state, "meta": dict(meta or {})}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _read_payload(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise PruningError(f"pruned model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets one clear message
        raise PruningError(f"cannot read pruned model {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise PruningError(f"{path} is not a pruned model saved by rifelab.pruning.save_pruned (format {FORMAT})")
    return payload


def read_pruned_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The `meta` a pruned model file was saved with (empty if none), without building the model."""
    return dict(_read_payload(Path(path)).get("meta") or {})


def load_pruned(path: str | os.PathLike, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> RIFE:
    """Rebuild a model saved by `save_pruned`: fresh network, same plan applied, weights loaded strictly.

    The result is a `RIFE` like `load_rife()` gives (`interpolate(img0, img1, timestep, scale)`), with
    `pruning_info` (plan, mode) attached.
    """
    payload = _read_payload(Path(path))
    plan = ChannelPlan.from_dict(payload["plan"])
    net = IFNet(plan.variant)
    if payload["mode"] == "physical":
        apply_physical(net, plan)
        net.load_state_dict(payload["state_dict"], strict=True)
    else:
        net.load_state_dict(payload["state_dict"], strict=True)
        apply_masks(net, plan, mask_bias=bool(payload["mask_bias"]))
    model = RIFE(net).eval().to(device=resolve_device(device), dtype=dtype)
    model.pruning_info = PruningInfo(plan, payload["mode"], bool(payload["mask_bias"]))
    return model


# ----------------------------------------------------------------------------- measuring


def _padded_inputs(model: RIFE, h: int, w: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    m = padding_multiple(scale)
    hp, wp = -(-h // m) * m, -(-w // m) * m
    z = torch.zeros(1, 3, hp, wp, device=model.device, dtype=model.dtype)
    return {"img0": z, "img1": z.clone(), "t": torch.full((1, 1, hp, wp), 0.5, device=model.device, dtype=model.dtype)}


def model_gmac(model: RIFE, height: int, width: int) -> tuple[float, int]:
    """(GMAC, parameters) of one interpolated frame at height x width (padded as `interpolate` does), via ptflops.

    Masked weights still count: masks change no shape, so they change no MAC count.
    """
    inputs = _padded_inputs(model, height, width)
    with torch.no_grad():
        macs, params = count_flops(model.net, lambda _shape: dict(inputs), (1,))
    return macs / 1e9, sum(p.numel() for p in model.net.parameters())


# ----------------------------------------------------------------------------- study helpers


def nonzero_parameters(net: nn.Module) -> int:
    """Non-zero entries of the parameters a forward pass uses (masked weights count as their zeros)."""
    total = 0
    for m in net.modules():
        for pname, _ in m.named_parameters(recurse=False):
            eff = getattr(m, pname[: -len("_orig")] if pname.endswith("_orig") else pname)
            total += int((eff != 0).sum())
    return total


# ----------------------------------------------------------------------------- CLI


def add_prune_parser(subparsers: Any) -> argparse.ArgumentParser:
    """`rifelab prune`: prune the RIFE flow network once and save it as plan + state_dict."""
    p = subparsers.add_parser("prune", help="prune RIFE's flow network once and save it (plan + state_dict)",
                              description="Channel pruning of RIFE 4.x: plan (naive global, architecture-aware or "
                              "lite), prune, save; reload with rifelab.pruning.load_pruned(path), whose "
                              "interpolate(img0, img1, timestep, scale) is the unpruned model's. The pruning study's "
                              "fine-tuning stage is `python -m rifelab.studies.pruning --profile PROFILE`.")
    p.add_argument("--checkpoint", default=None, help="RIFE 4.x checkpoint (default: the bundled RIFE 4.0 weights)")
    p.add_argument("--method", choices=METHODS + ("lite",), default="architecture_aware",
                   help="naive_global: one L1 threshold over all channels; architecture_aware: every unprotected "
                   "group loses --sparsity of its channels; lite: uniform width cut of every group (default: %(default)s)")
    p.add_argument("--mode", choices=MODES, default="physical",
                   help="physical: channels removed (smaller, faster); mask: weights zeroed (same shapes, same speed)")
    p.add_argument("--sparsity", type=float, required=True, help="fraction of prunable channels to remove, in [0, 1)")
    p.add_argument("--importance", choices=("l1", "group_norm"), default="l1",
                   help="channel importance for the lite cut (architecture_aware and naive_global use L1)")
    p.add_argument("--protect", nargs="*", default=list(DEFAULT_PROTECTED), metavar="PATTERN",
                   help="architecture_aware: layers kept whole (fnmatch patterns over conv names; default: %(default)s)")
    p.add_argument("--min-channels", type=int, default=16, help="architecture_aware: fewest channels a group keeps")
    p.add_argument("--round-to", type=int, default=8, help="kept channel counts are multiples of this (default: 8)")
    p.add_argument("--output", "-o", required=True, help="output file (.pt); reload with rifelab.pruning.load_pruned")
    p.set_defaults(func=cmd_prune_model)
    return p


def check_prunable(model: RIFE) -> None:
    """Pruning (plans, groups, the study) is built and checked for RIFE 4.0, the only real weights here."""
    if model.variant != "4.0":
        raise PruningError(
            f"pruning supports RIFE 4.0 only (the layout its channel groups and study were built and checked on, "
            f"and the only real weights here); this checkpoint is RIFE {model.layout.name}. "
            "Run without --checkpoint to prune the bundled RIFE 4.0 weights")


def cmd_prune_model(args: argparse.Namespace) -> int:
    """Run `rifelab prune`: load, plan, prune, save (nothing is written when the request is refused)."""
    model = load_rife(args.checkpoint)
    check_prunable(model)
    if args.method == "lite":
        plan = plan_lite(model.net, args.sparsity, round_to=args.round_to, importance=args.importance)
    elif args.method == "architecture_aware":
        plan = make_plan(model.net, args.method, args.sparsity, protected=args.protect,
                         min_channels=args.min_channels, round_to=args.round_to)
    else:
        plan = make_plan(model.net, args.method, args.sparsity)
    pruned = prune_model(model, plan, mode=args.mode)
    save_pruned(pruned, args.output, meta={"command": "rifelab prune", "method": args.method})
    print(f"saved {args.mode} {args.method} model at sparsity {args.sparsity} "
          f"({plan.removed_fraction:.1%} of prunable channels removed) to {args.output}")
    return 0
