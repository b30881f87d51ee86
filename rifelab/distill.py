"""Short fine-tuning of a pruned RIFE by distillation from the unpruned one.

The teacher (unpruned model) runs once per training triplet on the whole frame; its interpolated
frame and bidirectional flow become the targets. Each step then takes random crops of those frames
(with flips and a swap of the two inputs, all applied to the targets consistently) and trains the
student to match the teacher's frame (L1) and flow (L1, weighted):

    data = distillation_targets(teacher, train_triplets)
    result = distill(student, data, steps=200, lr=2e-4)

Only the flow network's parameters are trained; the student's architecture (pruned channels,
masks) is left as it is.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .models import RIFE, pad_to_multiple, padding_multiple

log = logging.getLogger(__name__)

__all__ = ["DistillData", "DistillResult", "distillation_targets", "distill"]


@dataclass
class DistillData:
    """Inputs and teacher targets for every training triplet, float tensors (1, C, H, W) on the CPU."""

    img0: list[torch.Tensor]
    img1: list[torch.Tensor]
    frame: list[torch.Tensor]
    flow: list[torch.Tensor]
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.img0)


@dataclass
class DistillResult:
    """Loss per step and the wall time of a fine-tuning run."""

    losses: list[float]
    seconds: float
    steps: int
    lr: float

    @property
    def final_loss(self) -> float:
        """Mean loss over the last tenth of the steps."""
        tail = self.losses[-max(1, len(self.losses) // 10):]
        return float(np.mean(tail)) if tail else float("nan")


@torch.no_grad()
def distillation_targets(teacher: RIFE, triplets: Sequence[Any], progress: bool = True) -> DistillData:
    """Run the teacher on each triplet's outer frames (t = 0.5); keep inputs, frame and flow (cropped)."""
    from tqdm.auto import tqdm

    from .data import to_tensor

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
) -> DistillResult:
    """Fine-tune `student` in place to match the teacher targets in `data`; returns the loss curve.

    Loss = L1(frame) + flow_weight * L1(flow in pixels). AdamW with a cosine decay of `lr` to zero.
    `crop` must be a multiple of 64 (the network's padding multiple at scale 1).
    """
    from tqdm.auto import tqdm

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
    if len(data) == 0:
        raise ValueError("no training data: distillation_targets() returned no triplets")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net = student.net
    dev, dt = student.device, student.dtype
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / max(1, steps))))
    losses: list[float] = []
    t0 = time.perf_counter()
    net.train()
    try:
        for _ in tqdm(range(steps), desc="distill", disable=not progress):
            a, b, f_t, fl_t = _sample_batch(data, batch_size, crop, rng)
            h, w = a.shape[-2:]
            a, b = pad_to_multiple(a.to(dev, dt), mult), pad_to_multiple(b.to(dev, dt), mult)
            t = torch.full((a.shape[0], 1, a.shape[2], a.shape[3]), 0.5, device=dev, dtype=dt)
            frame, flow, _ = net.forward_all(a, b, t, (8, 4, 2, 1))
            loss = (frame[:, :, :h, :w] - f_t.to(dev, dt)).abs().mean()
            if flow_weight > 0:
                loss = loss + flow_weight * (flow[:, :, :h, :w] - fl_t.to(dev, dt)).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
    finally:
        net.eval()
    seconds = time.perf_counter() - t0
    if losses:
        log.info("distilled %d steps in %.1f s: loss %.4f -> %.4f", steps, seconds, losses[0], losses[-1])
    return DistillResult(losses, seconds, steps, lr)
