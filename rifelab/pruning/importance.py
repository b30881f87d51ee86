"""Channel importance: per-channel L1 of every conv (a table), and per-group scores under one criterion."""

from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch_pruning as tp

from rifelab.pruning.groups import (
    ChannelGroup,
    PruningError,
    block_graph,
    channel_groups,
    check_sparsity,
    conv_layers,
    out_dim,
)
from rifelab.rife.network import IFNet

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- importance


def channel_l1(m: nn.Module) -> torch.Tensor:
    w = m.weight.detach().float()
    dims = [d for d in range(w.dim()) if d != out_dim(m)]
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
        l1 = channel_l1(m).numpy().astype(np.float64)
        fan = m.weight[0].numel() if out_dim(m) == 0 else m.weight[:, 0].numel()
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
        check_sparsity(sparsity)
        thr = float(np.quantile(importance["l1"], sparsity)) if sparsity > 0 else -math.inf
        agg[f"below_global_threshold_at_{sparsity:g}"] = importance.groupby("layer", sort=False)["l1"].apply(
            lambda s: float((s < thr).mean())
        )
    return agg.reset_index()


def group_l1_scores(net: IFNet, groups: Sequence[ChannelGroup]) -> dict[str, np.ndarray]:
    """Group channel importance: mean over the group's convs of their per-channel L1."""
    layers = conv_layers(net)
    return {g.name: np.mean([channel_l1(layers[n]).numpy() for n in g.layers], axis=0) for g in groups}



IMPORTANCES = ("l1", "group_norm", "taylor")


def importance_scores(net: IFNet, criterion: str = "l1") -> dict[str, np.ndarray]:
    """Per-channel importance of every channel group under one criterion (higher = keep).

    - ``l1``: mean over the group's convs of each output filter's L1 norm (the rule of report 001).
    - ``group_norm``: torch-pruning's `GroupMagnitudeImportance(p=2)`: squared L2 over *every* parameter the
      channel touches (output filters, biases, PReLU slopes and the consumers' input slices), averaged.
    - ``taylor``: torch-pruning's `GroupTaylorImportance`: |w * dL/dw| summed over the group; the parameters must
      carry gradients of a loss first (`rifelab.pruning.distill.loss_gradients`).
    """
    if criterion not in IMPORTANCES:
        raise PruningError(f"unknown importance criterion {criterion!r}; expected one of {IMPORTANCES}")
    groups = channel_groups(net)
    if criterion == "l1":
        return group_l1_scores(net, groups)
    if criterion == "taylor" and any(p.grad is None for p in net.parameters()):
        raise PruningError("Taylor importance needs gradients on the network's parameters; "
                           "run rifelab.pruning.distill.loss_gradients(model, data) first")
    imp = tp.importance.GroupMagnitudeImportance(p=2) if criterion == "group_norm" else tp.importance.GroupTaylorImportance()
    layers = conv_layers(net)
    out: dict[str, np.ndarray] = {}
    for bi in range(len(net.blocks)):
        dg = block_graph(net, bi)
        for g in groups:
            if g.block != bi:
                continue
            group = dg.get_pruning_group(layers[g.name], tp.prune_conv_out_channels, idxs=list(range(g.width)))
            scores = imp(group)
            if scores is None:
                raise PruningError(f"torch-pruning gave no {criterion} importance for group {g.name!r}")
            out[g.name] = scores.detach().float().cpu().numpy().astype(np.float64)
    return out


