"""Channel groups of IFNet: the convs, and the output channels a residual ties together (from torch-pruning's
dependency graph, traced per IFBlock); `PruningError` for every refused pruning request."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch_pruning as tp

from rifelab.rife.network import IFBlock, IFNet

log = logging.getLogger(__name__)



class PruningError(ValueError):
    """A pruning request that cannot be honoured (bad sparsity, unknown layer, mismatching plan)."""


# ----------------------------------------------------------------------------- layers and groups


def is_conv(m: nn.Module) -> bool:
    return isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))


def out_dim(m: nn.Module) -> int:
    """Weight dimension holding a conv's output channels (ConvTranspose2d stores (in, out, k, k))."""
    return 1 if isinstance(m, nn.ConvTranspose2d) else 0


def conv_layers(net: IFNet) -> dict[str, nn.Module]:
    """Every Conv2d / ConvTranspose2d of the flow network by module name, in forward order."""
    return {name: m for name, m in net.named_modules() if is_conv(m)}


def layer_out_channels(net: IFNet) -> dict[str, int]:
    """Current number of output channels of every conv (weight shape, so it sees physical pruning only)."""
    return {name: int(m.weight.shape[out_dim(m)]) for name, m in conv_layers(net).items()}


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


def block_example_inputs(net: IFNet, index: int, size: int = 64) -> tuple:
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


def unwrapped_parameters(block: IFBlock) -> list[tuple[nn.Parameter, int]]:
    """v4.6 residual units scale by a (1, c, 1, 1) parameter outside any layer: tell torch-pruning its channel dim."""
    return [(m.beta, 1) for m in block.modules() if isinstance(getattr(m, "beta", None), nn.Parameter)]


def block_graph(net: IFNet, index: int):
    """torch-pruning dependency graph of one IFBlock traced alone (the warp stays out)."""
    block = net.blocks[index]
    was_training = block.training
    block.eval()
    try:
        with torch.enable_grad():
            dg = tp.DependencyGraph().build_dependency(
                block,
                example_inputs=block_example_inputs(net, index),
                unwrapped_parameters=unwrapped_parameters(block) or None,
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
        dg = block_graph(net, bi)
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
            width = int(first.weight.shape[out_dim(first)])
            head = any(n.split(".")[1].startswith("lastconv") for n in layers)
            groups.append(ChannelGroup(layers[0], bi, layers, width, prunable=not head, consumers=consumers))
    groups.sort(key=lambda g: order[g.name])
    return groups




def check_sparsity(sparsity: Any) -> float:
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


def check_int(name: str, value: Any, lowest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < lowest:
        raise PruningError(f"{name} must be an integer >= {lowest}, got {value!r}")
    return int(value)
