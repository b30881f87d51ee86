"""Models from a spec: `ModelSpec` says which model to run, `load_model(spec)` builds it.

    spec = ModelSpec("openvino", "int8", {"calibration_count": 8}, device="cpu")
    model = load_model(spec)                       # an Interpolator: interpolate, interpolate_rgba
    spec = ModelSpec.from_args(args)               # the command line's options (rifelab.engines.cli declares them)

The spec is frozen, hashable plain data, so it travels: Ray workers of `rifelab batch` and the timing harness's
worker processes get it and build their own model. `switches` are the backend's options: the PyTorch engine's
switches (EngineConfig fields) for `torch`, the backend class's options for the others (e.g. openvino:
calibration_count). A PyTorch switch given to another backend is reported in the model's `skipped`, never dropped
silently. INT8 calibration frames can be described instead of carried (`calibration`); the loader reads them.

The exported backends (ONNX Runtime, OpenVINO, TensorRT) and pruned checkpoints are imported when a spec asks for
them, so code that only builds PyTorch models (the interpolation tool, the interactive study) does not depend on them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping, Protocol

import torch

from rifelab.engines.torch_engine import DTYPES, Engine, EngineConfig
from rifelab.measure.profiling import resolve_device
from rifelab.rife.checkpoints import load_rife
from rifelab.rife.contract import Interpolator
from rifelab.rife.model import RIFE

__all__ = ["BACKENDS", "PRECISIONS", "ENGINE_SWITCHES", "ModelSpec", "load_model", "load_checkpoint"]

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
#: precisions each backend offers (torch: the engine's dtypes)
PRECISIONS: dict[str, tuple[str, ...]] = {
    "torch": DTYPES,
    "onnxruntime": ("fp32",),
    "openvino": ("fp32", "bf16", "int8"),
    "tensorrt": ("fp16", "fp32"),
}
#: the PyTorch engine's switches (EngineConfig fields a spec sets through `switches`)
ENGINE_SWITCHES = tuple(f.name for f in fields(EngineConfig) if f.name not in ("name", "dtype", "threads"))
#: class of each exported backend, in rifelab.engines.backends (imported when a spec needs it)
_BACKEND_CLASSES = {"onnxruntime": "OnnxRuntimeModel", "openvino": "OpenVinoModel", "tensorrt": "TensorRTModel"}


class _Options(Protocol):
    """Parsed command-line options (an argparse.Namespace) as `ModelSpec.from_args` reads them."""

    backend: str
    dtype: str


def _frozen(value: Any) -> Any:
    """Mappings as sorted (key, value) pairs and lists as tuples, so a spec stays hashable."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


@dataclass(frozen=True)
class ModelSpec:
    """Which model to run: backend, precision, switches, checkpoint, device, threads (and a display name).

    `plain`: the fp32 RIFE of `checkpoint` itself, no engine; `pruned`: `checkpoint` is a pruned model saved by
    `rifelab.pruning.apply.save_pruned` (run as the plain model it rebuilds). `calibration` = (pairs, width,
    height, {clip: [start, stop)}) describes INT8 calibration frames, read when the model is built.
    """

    backend: str = "torch"
    precision: str = "fp32"
    switches: tuple[tuple[str, Any], ...] = ()  # a mapping is accepted and stored as sorted (key, value) pairs
    checkpoint: str | None = None  # None: the bundled RIFE 4.0 weights
    device: str = "auto"  # auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps
    threads: int | None = None  # CPU threads while the model runs (None: leave torch's setting)
    name: str | None = None  # None: derived from backend, precision and the switches that are on
    plain: bool = False
    pruned: bool = False
    calibration: tuple | None = None

    def __post_init__(self) -> None:
        items = self.switches.items() if isinstance(self.switches, Mapping) else self.switches
        object.__setattr__(self, "switches", tuple(sorted((str(k), _frozen(v)) for k, v in items)))
        object.__setattr__(self, "calibration", _frozen(self.calibration))
        if self.checkpoint is not None:
            object.__setattr__(self, "checkpoint", str(Path(self.checkpoint)))
        object.__setattr__(self, "device", str(self.device))
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS[self.backend]:
            offered = [b for b in BACKENDS if self.precision in PRECISIONS[b]]
            hint = f"; {self.precision} runs on backend {' or '.join(offered)}" if offered else ""
            raise ValueError(f"backend {self.backend} runs {', '.join(PRECISIONS[self.backend])}, not "
                             f"{self.precision!r}{hint}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {self.threads!r}")
        if self.backend == "torch":
            unknown = sorted(k for k, _ in self.switches if k not in ENGINE_SWITCHES)
            if unknown:
                raise ValueError(f"unknown engine switch(es) {unknown}; valid: {', '.join(ENGINE_SWITCHES)}")
        if (self.plain or self.pruned) and (self.backend != "torch" or self.precision != "fp32" or self.switches):
            raise ValueError("a plain or pruned ModelSpec is an fp32 RIFE model itself: no backend, precision or "
                             "switches")
        if self.pruned and self.checkpoint is None:
            raise ValueError("a pruned ModelSpec needs the checkpoint saved by save_pruned")

    @classmethod
    def make(cls, options: Mapping[str, Any] | None = None, **kw: Any) -> ModelSpec:
        """A spec with its switches given as a mapping (`options`)."""
        return cls(switches=dict(options or {}), **kw)

    @property
    def options(self) -> dict[str, Any]:
        """The switches as a dict (tuples the spec froze come back as lists)."""
        return self.option_dict()

    def option_dict(self) -> dict[str, Any]:
        """The switches as a dict (tuples the spec froze come back as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.switches}

    @property
    def label(self) -> str:
        """The name, or one made of the precision and the switches that are on (fp32-eager when none)."""
        if self.name:
            return self.name
        if self.backend != "torch":
            return f"{self.backend}-{self.precision}"
        on = [k for k in ENGINE_SWITCHES if self.options.get(k) is True and k != "inference_mode"]
        return "-".join([self.precision, *on]) if on or self.precision != "fp32" else "fp32-eager"

    def model_info(self) -> dict[str, str]:
        """What an output manifest records about the model (a resumed run must match it)."""
        return {"checkpoint": self.checkpoint or "bundled rife40", "dtype": self.precision}

    @classmethod
    def from_args(cls, args: _Options) -> ModelSpec:
        """The spec of parsed command-line options (declared by rifelab.engines.cli; read here, never parsed)."""
        backend = getattr(args, "backend", None) or "torch"
        precision = getattr(args, "dtype", None) or "fp32"
        if backend == "torch" and precision == "int8":
            raise ValueError("--dtype int8 needs --backend openvino (NNCF post-training INT8)")
        if backend != "torch" and precision not in PRECISIONS[backend]:
            raise ValueError(f"--backend {backend} runs {', '.join(PRECISIONS[backend])}; got --dtype {precision}")
        switches: dict[str, Any] = {}
        for key in ENGINE_SWITCHES:
            default = EngineConfig.__dataclass_fields__[key].default
            value = (not getattr(args, "no_inference_mode", False)) if key == "inference_mode" else getattr(
                args, key, default)
            if value != default and (backend == "torch" or value is True):
                switches[key] = value
        if backend == "openvino" and getattr(args, "calibration_pairs", None):
            switches["calibration_count"] = int(args.calibration_pairs)
        return cls(backend, precision, switches, getattr(args, "checkpoint", None),
                   getattr(args, "device", None) or "auto", getattr(args, "threads", None))


def load_checkpoint(spec: ModelSpec) -> RIFE:
    """The RIFE network of `spec.checkpoint` on `spec.device` (what `export` and the FLOP counts need)."""
    return load_rife(spec.checkpoint, device=resolve_device(spec.device))


def load_model(spec: ModelSpec, model: RIFE | None = None) -> Interpolator:
    """The model `spec` describes, on its backend (raises BackendUnavailable saying why when it cannot run here).

    `model` (a loaded or pruned RIFE) replaces loading `spec.checkpoint`; the backend works on a copy of it.
    Plain and pruned specs give the RIFE itself. `spec.threads` is set for the process (torch.set_num_threads).
    """
    dev = resolve_device(spec.device)
    if spec.threads:  # the process's CPU threads (workers and commands run one model; the engine also scopes them)
        torch.set_num_threads(spec.threads)
    if spec.plain or spec.pruned:
        if spec.pruned:
            prune = importlib.import_module("rifelab.pruning.apply")
            return prune.load_pruned(spec.checkpoint, device=dev)
        return model.to(dev) if model is not None else load_checkpoint(spec)
    if model is None:
        model = load_checkpoint(spec if spec.backend == "torch" else replace(spec, device="cpu"))
    elif not isinstance(model, RIFE):
        raise TypeError(f"model must be a rifelab RIFE (load_rife, load_pruned), got {type(model).__name__}")
    opts = spec.options
    if spec.backend == "torch":
        config = EngineConfig(name=spec.label, dtype=spec.precision, threads=spec.threads, **opts)
        return Engine(model, config, device=dev)
    torch_only = [k for k in opts if k in ENGINE_SWITCHES]
    options = {k: v for k, v in opts.items() if k not in torch_only}
    if spec.calibration is not None:
        count, width, height, ranges = spec.calibration
        ranges = {clip: list(r) for clip, r in dict(ranges).items()}
        splits = importlib.import_module("rifelab.frames.splits")
        options.update(calibration=splits.range_pairs(ranges, int(count), (int(width), int(height)), "calibration"),
                       calibration_ranges=ranges)
    cls = getattr(importlib.import_module("rifelab.engines.backends"), _BACKEND_CLASSES[spec.backend])
    built = cls(model, dev, spec.precision, name=spec.label, threads=spec.threads, **options)
    for key in torch_only:
        built.skipped[f"--{key.replace('_', '-')}"] = f"a PyTorch engine switch; backend {spec.backend} does not use it"
    return built
