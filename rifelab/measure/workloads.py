"""Workloads the timing workers run: a model built from a small picklable spec, interpolating given frames.

`ModelSpec` says which model a worker builds (backend, precision, switches, checkpoint, device, threads); the
worker calls `load_model(spec)` once and keeps the model. `InterpolateWorkload` times one interpolated frame on
the first frame pair it was given and returns every pair's output (and, optionally, held-out middle-frame
predictions) for the coordinator to score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from rifelab.engines.backends import load_backend
from rifelab.frames.images import to_tensor, to_uint8
from rifelab.frames.splits import range_pairs
from rifelab.measure.profiling import PeakMemory, resolve_device, synchronize
from rifelab.rife.checkpoints import load_rife
from rifelab.rife.model import RIFE

__all__ = ["ModelSpec", "load_model", "FrameInputs", "InterpolateWorkload"]


def _frozen(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


@dataclass(frozen=True)
class ModelSpec:
    """A model to build: backend + precision + switches (torch engine switches or backend options).

    `pruned`: `checkpoint` is a pruned model saved by `rifelab.pruning.apply.save_pruned` (timed as the plain
    RIFE model it rebuilds); `plain`: the plain RIFE model of `checkpoint`, no engine (as pruned models are timed).
    INT8 calibration is described, not carried: `calibration` = (pairs, width, height,
    {clip: [start, stop)}); the worker reads those frames itself.
    """

    backend: str = "torch"
    precision: str = "fp32"
    options: tuple = ()  # sorted (key, value) pairs; see `with_options`
    checkpoint: str | None = None
    device: str = "cpu"
    threads: int | None = None
    name: str | None = None
    pruned: bool = False
    plain: bool = False
    calibration: tuple | None = None

    @classmethod
    def make(cls, options: Mapping[str, Any] | None = None, **kw: Any) -> "ModelSpec":
        """A spec with `options` given as a mapping (lists become tuples, so the spec stays hashable)."""
        return cls(options=_frozen(dict(options or {})), **kw)

    @classmethod
    def from_args(cls, args: Any) -> "ModelSpec":
        """The spec of the `--backend`/`--dtype`/engine-switch options (rifelab.engines.backends.add_backend_options)."""
        backend, dtype = getattr(args, "backend", "torch") or "torch", getattr(args, "dtype", "fp32")
        opts: dict[str, Any] = {}
        if backend == "torch":
            opts = {k: True for k in ("channels_last", "cudnn_benchmark", "tf32", "compile", "cuda_graphs",
                                      "static_buffers", "cached_grids") if getattr(args, k, False)}
            if getattr(args, "no_inference_mode", False):
                opts["inference_mode"] = False
            if dtype == "autocast":
                opts["autocast_dtype"] = getattr(args, "autocast_dtype", "auto")
            if opts.get("compile"):
                opts["compile_mode"] = getattr(args, "compile_mode", "default")
        elif backend == "openvino" and dtype == "int8" and getattr(args, "calibration_pairs", None):
            opts["calibration_count"] = int(args.calibration_pairs)
        return cls.make(opts, backend=backend, precision=dtype, checkpoint=getattr(args, "checkpoint", None),
                        device=str(resolve_device(getattr(args, "device", "auto"))), threads=getattr(args, "threads", None))

    def option_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.options}


def load_model(spec: ModelSpec) -> Any:
    """Build the model `spec` describes (a torch Engine, a backend model, or a plain pruned RIFE)."""
    if spec.threads:
        torch.set_num_threads(int(spec.threads))
    dev = resolve_device(spec.device)
    if spec.pruned:
        from rifelab.pruning.apply import load_pruned  # only pruning studies time pruned models

        if spec.checkpoint is None:
            raise ValueError("a pruned ModelSpec needs the checkpoint saved by save_pruned")
        return load_pruned(spec.checkpoint, device=dev)
    model = load_rife(spec.checkpoint, device=dev if spec.backend == "torch" else "cpu")
    if spec.plain:
        if spec.backend != "torch" or spec.precision != "fp32" or spec.options:
            raise ValueError("a plain ModelSpec is the FP32 RIFE model itself: no backend, precision or switches")
        return model
    opts = spec.option_dict()
    if spec.calibration is not None:
        count, w, h, ranges = spec.calibration
        ranges = {c: list(r) for c, r in dict(ranges).items()}
        opts.update(calibration=range_pairs(ranges, int(count), (int(w), int(h)), "int8 calibration"),
                    calibration_ranges=ranges)
    return load_backend(spec.backend, model, dev, spec.precision, name=spec.name, options=opts)


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
