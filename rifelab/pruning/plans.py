"""Channel plans for RIFE's IFNet: naive global, architecture-aware, per-group ratios through torch-pruning, and the
lite width cut. The package's pieces, by module, in the order a study uses them (`groups`, `importance`, `plans`,
`apply`):

    groups = channel_groups(model.net)                   # coupled output channels, from torch-pruning's graph
    imp = channel_importance(model.net)                  # per-output-channel L1 of every conv (a DataFrame)
    plan = plan_architecture_aware(model.net, 0.25)      # or plan_naive_global(model.net, 0.25)
    plan = plan_from_ratios(model.net, {"block3.*": 0.5}, importance="group_norm")   # torch-pruning's pruner
    plan = plan_lite(model.net)                          # uniform width cut 192/128/96/64 -> 144/96/72/48
    small = prune_model(model, plan, mode="physical")    # channels removed: smaller, faster
    masked = prune_model(model, plan, mode="mask")       # weights zeroed: same shapes, same speed
    save_pruned(small, "pruned.pt"); again = load_pruned("pruned.pt")   # again.interpolate(img0, img1, t, scale)

Plans from measured sensitivity and latency live in `rifelab.pruning.sensitivity`; fine-tuning in `rifelab.pruning.distill`.

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

import copy
import fnmatch
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch_pruning as tp

from rifelab.pruning.groups import (
    ChannelGroup,
    PruningError,
    block_example_inputs,
    channel_groups,
    check_int,
    check_sparsity,
    is_conv,
    unwrapped_parameters,
)
from rifelab.pruning.importance import group_l1_scores, importance_scores
from rifelab.rife.network import IFNet

log = logging.getLogger(__name__)

METHODS = ("naive_global", "architecture_aware")
DEFAULT_PROTECTED = ("block*.conv0.0.0",)

# ----------------------------------------------------------------------------- plans


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


def match_patterns(
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


def _top(scores: np.ndarray, k: int) -> list[int]:
    order = np.argsort(-scores, kind="stable")[:k]
    return sorted(int(i) for i in order)


def plan_naive_global(net: IFNet, sparsity: float, min_channels: int = 1) -> ChannelPlan:
    """One L1 threshold over all prunable channels of the whole network (the report's diagnostic case).

    Removes the `sparsity` share of all prunable channels with the lowest L1, wherever they sit,
    keeping at least `min_channels` per group only so the network still runs. No rounding.
    """
    s = check_sparsity(sparsity)
    min_channels = check_int("min_channels", min_channels, 1)
    groups = channel_groups(net)
    scores = group_l1_scores(net, groups)
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
    s = check_sparsity(sparsity)
    min_channels = check_int("min_channels", min_channels, 1)
    round_to = check_int("round_to", round_to, 1)
    if isinstance(protected, str):
        protected = [protected]
    groups = channel_groups(net)
    prot = set().union(*match_patterns(protected, groups, "protected layer", with_inputs=True).values()) if protected else set()
    scale_hits = match_patterns((ratio_scale or {}).keys(), groups, "ratio_scale pattern")
    for pat, v in (ratio_scale or {}).items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise PruningError(f"ratio_scale[{pat!r}] must be a number >= 0, got {v!r}")
    scores = group_l1_scores(net, groups)
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

def _resolve_ratios(ratios: Mapping[str, float], groups: Sequence[ChannelGroup]) -> dict[str, float]:
    """Group name -> ratio from a mapping of group names or fnmatch patterns (the first match wins)."""
    hits = match_patterns(ratios.keys(), groups, "ratio pattern")
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
    round_to = check_int("round_to", round_to, 1)
    if isinstance(protected, str):
        protected = [protected]
    groups = channel_groups(net)
    by_name = {g.name: g for g in groups}
    prot = set().union(*match_patterns(protected, groups, "protected layer", with_inputs=True).values()) if protected else set()
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
        mods = {f"block{bi}.{n}": m for n, m in work.named_modules() if is_conv(m)}
        name_of = {id(m): n for n, m in mods.items()}

        def imp(group: Any, name_of: dict[int, str] = name_of) -> torch.Tensor:
            return torch.as_tensor(scores[group_of_layer[name_of[id(group[0][0].target.module)]]], dtype=torch.float32)

        ignored = [mods[layer] for n in prot if by_name[n].block == bi for layer in by_name[n].layers]
        with torch.enable_grad():
            pruner = tp.pruner.BasePruner(
                work, block_example_inputs(net, bi), importance=imp, pruning_ratio=0.0,
                pruning_ratio_dict={mods[layer]: r for n, r in todo.items() for layer in by_name[n].layers},
                ignored_layers=ignored, round_to=round_to, root_module_types=[nn.Conv2d, nn.ConvTranspose2d],
                unwrapped_parameters=unwrapped_parameters(work) or None,
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
    s = check_sparsity(ratio)
    return plan_from_ratios(net, {"*": s}, importance=importance, protected=(), round_to=round_to, method="lite",
                            sparsity=s, settings={"uniform_ratio": s})


