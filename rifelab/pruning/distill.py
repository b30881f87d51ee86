"""Short fine-tuning of a pruned RIFE by distillation from the unpruned one.

The teacher (unpruned model) runs once per training triplet on the whole frame; its interpolated
frame and bidirectional flow become the targets. Each step then takes random crops of those frames
(with flips and a swap of the two inputs, all applied to the targets consistently) and trains the
student to match the teacher's frame (L1) and flow (L1, weighted):

    data = distillation_targets(teacher, train_triplets)
    result = distill(student, data, steps=200, lr=2e-4, state_path="run.state.pt")   # resumable

Only the flow network's parameters are trained; the student's architecture (pruned channels,
masks) is left as it is. With `state_path`, the run saves its whole state (weights, optimiser,
schedule, random generators, losses) every `save_every` steps and when it is interrupted, and a
later call with the same settings continues from there: an interrupted run and an uninterrupted one
end with the same weights. `loss_gradients` leaves the gradient of the task loss (L1 to the true
middle frames) on the parameters, for Taylor importance.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rifelab.frames.images import to_tensor
from rifelab.publish.results import atomic_path
from rifelab.rife.model import RIFE
from rifelab.rife.network import pad_to_multiple, padding_multiple

log = logging.getLogger(__name__)

__all__ = ["DistillData", "DistillResult", "distillation_targets", "distill", "loss_gradients", "task_data", "STATE_FORMAT"]

STATE_FORMAT = "rifelab.distill-state/1"


@dataclass
class DistillData:
    """Inputs and teacher targets for every training triplet, float tensors (1, C, H, W) on the CPU."""

    img0: list[torch.Tensor]
    img1: list[torch.Tensor]
    frame: list[torch.Tensor]
    flow: list[torch.Tensor]
    names: list[str] = field(default_factory=list)
    gt: list[torch.Tensor] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.img0)


@dataclass
class DistillResult:
    """Loss per step and the wall time of a fine-tuning run."""

    losses: list[float]
    seconds: float
    steps: int
    lr: float
    resumed_at: int = 0

    @property
    def final_loss(self) -> float:
        """Mean loss over the last tenth of the steps."""
        tail = self.losses[-max(1, len(self.losses) // 10):]
        return float(np.mean(tail)) if tail else float("nan")


@torch.no_grad()
def distillation_targets(teacher: RIFE, triplets: Sequence[Any], progress: bool = True) -> DistillData:
    """Run the teacher on each triplet's outer frames (t = 0.5); keep inputs, frame, flow and the true middle frame."""
    if len(triplets) == 0:
        raise ValueError("distillation needs at least one training triplet")
    data = DistillData([], [], [], [], [])
    for tr in tqdm(triplets, desc="teacher targets", disable=not progress):
        a, b = to_tensor(tr.frame0[None]), to_tensor(tr.frame2[None])
        h, w = a.shape[-2:]
        pa, pb, t, scale_list, _ = teacher.prepare(a, b, 0.5, 1.0)
        frame, flow, _ = teacher.net.forward_all(pa, pb, t, scale_list)
        data.img0.append(a)
        data.img1.append(b)
        data.frame.append(frame[:, :, :h, :w].float().cpu())
        data.flow.append(flow[:, :, :h, :w].float().cpu())
        data.names.append(getattr(tr, "name", str(len(data.names))))
        data.gt.append(to_tensor(tr.gt[None]))
    return data


def task_data(triplets: Sequence[Any]) -> DistillData:
    """Triplets as training data whose targets are the true middle frames (no teacher; flows are zero):
    what `loss_gradients` needs for Taylor importance."""
    data = DistillData([], [], [], [], [], [])
    for tr in triplets:
        a, b, g = to_tensor(tr.frame0[None]), to_tensor(tr.frame2[None]), to_tensor(tr.gt[None])
        data.img0.append(a)
        data.img1.append(b)
        data.frame.append(g)
        data.flow.append(torch.zeros(1, 4, *a.shape[-2:]))
        data.gt.append(g)
        data.names.append(getattr(tr, "name", str(len(data.names))))
    if len(data) == 0:
        raise ValueError("task_data needs at least one triplet")
    return data


def _sample_batch(
    data: DistillData, batch_size: int, crop: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random crops with random flips and input swap, applied to inputs and targets alike."""
    xs0, xs1, fs, fls = [], [], [], []
    for _ in range(batch_size):
        i = int(rng.integers(len(data)))
        a, b, f, fl = data.img0[i], data.img1[i], data.frame[i], data.flow[i]
        h, w = a.shape[-2:]
        ch, cw = min(crop, h), min(crop, w)
        y, x = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        sl = (slice(None), slice(None), slice(y, y + ch), slice(x, x + cw))
        a, b, f, fl = a[sl], b[sl], f[sl], fl[sl].clone()
        if rng.random() < 0.5:  # horizontal flip: x components change sign
            a, b, f, fl = a.flip(-1), b.flip(-1), f.flip(-1), fl.flip(-1)
            fl[:, [0, 2]] *= -1
        if rng.random() < 0.5:  # vertical flip: y components change sign
            a, b, f, fl = a.flip(-2), b.flip(-2), f.flip(-2), fl.flip(-2)
            fl[:, [1, 3]] *= -1
        if rng.random() < 0.5:  # swap the inputs: t stays 0.5, the two flows trade places
            a, b = b, a
            fl = torch.cat((fl[:, 2:4], fl[:, 0:2]), 1)
        xs0.append(a)
        xs1.append(b)
        fs.append(f)
        fls.append(fl)
    # crops from frames smaller than `crop` differ in size: pad all to the largest (zeros, right/bottom)
    hmax = max(t.shape[-2] for t in xs0)
    wmax = max(t.shape[-1] for t in xs0)

    def stack(ts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([F.pad(t, (0, wmax - t.shape[-1], 0, hmax - t.shape[-2])) for t in ts], 0)

    return stack(xs0), stack(xs1), stack(fs), stack(fls)


def _fingerprint(config: dict[str, Any], student: RIFE, data: DistillData) -> str:
    """Hash of everything a resumed run must share with the run it continues."""
    shapes = [[k, list(v.shape)] for k, v in student.net.state_dict().items()]
    blob = json.dumps({"config": config, "shapes": shapes, "data": list(data.names)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _save_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_state(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """A saved run state with the same fingerprint, else None (a state of other settings is not resumed)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an unreadable state restarts the run, it does not stop it
        log.warning("distillation state %s is unreadable (%s: %s); starting over", path, type(exc).__name__, exc)
        return None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or state.get("fingerprint") != fingerprint:
        log.warning("distillation state %s belongs to other settings; starting over", path)
        return None
    return state


def _batch_loss(net: torch.nn.Module, batch: tuple[torch.Tensor, ...], flow_weight: float, dev: torch.device,
                dt: torch.dtype, mult: int) -> torch.Tensor:
    """L1(frame) + flow_weight * L1(flow) of one batch of crops against the teacher's targets."""
    a, b, f_t, fl_t = batch
    h, w = a.shape[-2:]
    a, b = pad_to_multiple(a.to(dev, dt), mult), pad_to_multiple(b.to(dev, dt), mult)
    t = torch.full((a.shape[0], 1, a.shape[2], a.shape[3]), 0.5, device=dev, dtype=dt)
    frame, flow, _ = net.forward_all(a, b, t, (8, 4, 2, 1))
    loss = (frame[:, :, :h, :w] - f_t.to(dev, dt)).abs().mean()
    if flow_weight > 0:
        loss = loss + flow_weight * (flow[:, :, :h, :w] - fl_t.to(dev, dt)).abs().mean()
    return loss


def _check_settings(steps: int, lr: float, batch_size: int, crop: int, flow_weight: float, save_every: int,
                    data: DistillData) -> int:
    """Refuse bad distillation settings with what is allowed; returns the network's padding multiple."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    mult = padding_multiple(1.0)
    if not isinstance(crop, int) or crop < mult or crop % mult:
        raise ValueError(f"crop must be a positive multiple of {mult} (the network's padding multiple), got {crop!r}")
    if flow_weight < 0:
        raise ValueError(f"flow_weight must be >= 0, got {flow_weight!r}")
    if not isinstance(save_every, int) or save_every < 1:
        raise ValueError(f"save_every must be an integer >= 1, got {save_every!r}")
    if len(data) == 0:
        raise ValueError("no training data: distillation_targets() returned no triplets")
    return mult


def distill(
    student: RIFE,
    data: DistillData,
    steps: int = 200,
    lr: float = 2e-4,
    batch_size: int = 4,
    crop: int = 128,
    flow_weight: float = 0.01,
    seed: int = 0,
    progress: bool = True,
    state_path: str | os.PathLike | None = None,
    save_every: int = 50,
    callback: Callable[[int, float], None] | None = None,
) -> DistillResult:
    """Fine-tune `student` in place to match the teacher targets in `data`; returns the loss curve.

    Loss = L1(frame) + flow_weight * L1(flow in pixels). AdamW with a cosine decay of `lr` to zero.
    `crop` must be a multiple of 64 (the network's padding multiple at scale 1). With `state_path`, the
    whole run state is saved there every `save_every` steps, at the end and on an interruption; a call with
    the same settings, student shapes and data resumes from it (a finished run returns at once).
    `callback(step, loss)` is called after every step (step counts from 1).
    """
    mult = _check_settings(steps, lr, batch_size, crop, flow_weight, save_every, data)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net = student.net
    dev, dt = student.device, student.dtype
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / max(1, steps))))
    config = {"steps": steps, "lr": float(lr), "batch_size": batch_size, "crop": crop,
              "flow_weight": float(flow_weight), "seed": seed}
    path = Path(state_path) if state_path is not None else None
    fingerprint = _fingerprint(config, student, data)
    losses: list[float] = []
    done, seconds = 0, 0.0
    state = _load_state(path, fingerprint) if path is not None else None
    if state is not None:
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        torch.set_rng_state(state["torch_rng"])
        losses, done, seconds = [float(x) for x in state["losses"]], int(state["step"]), float(state["seconds"])
        log.info("resuming distillation at step %d of %d from %s", done, steps, path)
    resumed_at = done

    def snapshot() -> None:
        if path is None:
            return
        _save_state(path, {
            "format": STATE_FORMAT, "fingerprint": fingerprint, "config": config, "step": done,
            "finished": done >= steps, "net": net.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "numpy_rng": json.dumps(rng.bit_generator.state),
            "torch_rng": torch.get_rng_state(), "losses": list(losses),
            "seconds": seconds + time.perf_counter() - t0,
        })

    t0 = time.perf_counter()
    net.train()
    try:
        for _ in tqdm(range(done, steps), desc="distill", disable=not progress, initial=done, total=steps):
            loss = _batch_loss(net, _sample_batch(data, batch_size, crop, rng), flow_weight, dev, dt, mult)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            done += 1
            if done % save_every == 0 and done < steps:
                snapshot()
            if callback is not None:
                callback(done, losses[-1])
    finally:
        net.eval()
        opt.zero_grad(set_to_none=True)
        if done > resumed_at or state is None:
            snapshot()
    seconds += time.perf_counter() - t0
    if losses:
        log.info("distilled %d steps in %.1f s: loss %.4f -> %.4f", steps, seconds, losses[0], losses[-1])
    return DistillResult(losses, seconds, steps, lr, resumed_at)


def loss_gradients(model: RIFE, data: DistillData, batches: int = 4, batch_size: int = 2, crop: int = 128,
                   seed: int = 0) -> float:
    """Leave on `model.net`'s parameters the gradient of the task loss, L1 to the true middle frames of `data`
    (random crops, summed over `batches`); returns the mean loss. Used for Taylor importance (|w * dL/dw|)."""
    if not data.gt or len(data.gt) != len(data):
        raise ValueError("the data holds no true middle frames; build it with distillation_targets()")
    rng = np.random.default_rng(seed)
    net, dev, dt, mult = model.net, model.device, model.dtype, padding_multiple(1.0)
    truth = DistillData(data.img0, data.img1, data.gt, data.flow, data.names, data.gt)
    net.zero_grad(set_to_none=True)
    total = 0.0
    was_training = net.training
    net.eval()
    try:
        for _ in range(batches):
            loss = _batch_loss(net, _sample_batch(truth, batch_size, crop, rng), 0.0, dev, dt, mult) / batches
            loss.backward()
            total += float(loss.detach())
    finally:
        net.train(was_training)
    return total
