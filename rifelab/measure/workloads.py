"""Workloads the timing workers run: a model built from a small picklable spec, interpolating given frames.

`ModelSpec` (rifelab.engines.spec, the one spec of the project) says which model a worker builds (backend,
precision, switches, checkpoint, device, threads); the worker calls `load_model(spec)` once and keeps the model. `InterpolateWorkload` times one interpolated frame on
the first frame pair it was given and returns every pair's output (and, optionally, held-out middle-frame
predictions) for the coordinator to score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from rifelab.engines.spec import ModelSpec, load_model
from rifelab.frames.images import to_tensor, to_uint8
from rifelab.measure.profiling import PeakMemory, resolve_device, synchronize
from rifelab.rife.model import RIFE

__all__ = ["ModelSpec", "load_model", "FrameInputs", "InterpolateWorkload"]


@dataclass
class FrameInputs:
    """Inputs of one timing: frame pairs (N of (1,3,H,W) float32 in [0, 1]; the first is timed) and, optionally,
    held-out triplets' outer frames (uint8 H,W,3) whose middle frames are predicted for scoring."""

    pairs: list[tuple[np.ndarray, np.ndarray]]
    heldout: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    @classmethod
    def from_tensors(cls, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
                     heldout: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> "FrameInputs":
        return cls([(a.float().cpu().numpy(), b.float().cpu().numpy()) for a, b in pairs], list(heldout))


@dataclass
class InterpolateWorkload:
    """Time `model.interpolate(a, b, timestep, scale)` on the first prepared pair; return every pair's output."""

    spec: ModelSpec
    timestep: float = 0.5
    scale: float = 1.0

    def setup(self) -> dict[str, Any]:
        self.model = load_model(self.spec)
        self.device = torch.device(getattr(self.model, "device", resolve_device(self.spec.device)))
        self.inputs: FrameInputs | None = None
        return {"threads": torch.get_num_threads()}

    def _run(self, a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
        if isinstance(self.model, RIFE):  # a plain model: no engine to set the grad mode
            with torch.inference_mode():
                return self.model.interpolate(a, b, t, self.scale)
        return self.model.interpolate(a, b, t, self.scale)

    def prepare(self, inputs: FrameInputs) -> None:
        self.inputs = inputs
        self.pairs = [(torch.from_numpy(a).to(self.device), torch.from_numpy(b).to(self.device))
                      for a, b in inputs.pairs]

    def call(self) -> None:
        a, b = self.pairs[0]
        self._run(a, b, self.timestep)
        synchronize(self.device)

    def outputs(self) -> tuple[dict[str, Any], dict[str, Any]]:
        with PeakMemory(self.device) as mem:
            out = torch.cat([self._run(a, b, self.timestep) for a, b in self.pairs]).float().cpu().numpy()
        held = [to_uint8(self._run(to_tensor(f0, self.device), to_tensor(f2, self.device), 0.5))[0]
                for f0, f2 in (self.inputs.heldout if self.inputs else [])]
        facts = {"peak_mem_mib": mem.peak_mib, "peak_mem_kind": mem.kind,
                 "applied": dict(getattr(self.model, "applied", {}) or {}),
                 "skipped": dict(getattr(self.model, "skipped", {}) or {})}
        return {"pairs": out, "heldout": held}, facts
