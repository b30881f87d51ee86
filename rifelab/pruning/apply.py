"""Applying a plan (weights masked or channels removed), saving and reloading a pruned model, and its cost."""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch_pruning as tp
from torch.nn.utils import prune as torch_prune

from rifelab.measure.profiling import count_flops, resolve_device
from rifelab.pruning.groups import (
    PruningError,
    block_graph,
    conv_layers,
    layer_out_channels,
    out_dim,
)
from rifelab.pruning.plans import ChannelPlan
from rifelab.publish.results import atomic_path
from rifelab.rife.model import RIFE
from rifelab.rife.network import IFNet, padding_multiple

log = logging.getLogger(__name__)

MODES = ("mask", "physical")
FORMAT = "rifelab.pruned/1"


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
            mask.index_fill_(out_dim(m), idx, 0.0)
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
        dg = block_graph(net, bi)
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


def check_prunable(model: RIFE) -> None:
    """Pruning (plans, groups, the study) is built and checked for RIFE 4.0, the only real weights here."""
    if model.variant != "4.0":
        raise PruningError(
            f"pruning supports RIFE 4.0 only (the layout its channel groups and study were built and checked on, "
            f"and the only real weights here); this checkpoint is RIFE {model.layout.name}. "
            "Run without --checkpoint to prune the bundled RIFE 4.0 weights")


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
        raise PruningError("model has no pruning plan attached; prune it with rifelab.pruning.apply.prune_model first")
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


