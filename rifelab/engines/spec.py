"""Models from a spec: `ModelSpec` says which model to run, `load_model(spec)` builds it.

    spec = ModelSpec("openvino", "int8", {"calibration_count": 8}, device="cpu")
    model = load_model(spec)                       # an Interpolator: interpolate, interpolate_rgba
    spec = ModelSpec.from_args(args)               # the command line's options (rifelab.engines.cli declares them)

The spec is frozen and plain data, so it travels (Ray workers of `rifelab batch` get it and load their own model).
`switches` are the backend's options: the PyTorch engine's switches (EngineConfig fields) for `torch`, the backend
class's options for the others (e.g. openvino: calibration_count). A PyTorch switch given to another backend is
reported in the model's `skipped`, never silently dropped.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping, Protocol

from rifelab.engines.backends import BACKENDS, PRECISIONS, ExportedModel, OnnxRuntimeModel, OpenVinoModel, TensorRTModel
from rifelab.engines.torch_engine import Engine, EngineConfig
from rifelab.measure.profiling import resolve_device
from rifelab.rife.checkpoints import load_rife
from rifelab.rife.model import RIFE

__all__ = ["ModelSpec", "load_model", "load_checkpoint", "ENGINE_SWITCHES", "BACKEND_CLASSES"]

#: the PyTorch engine's switches (EngineConfig fields a spec sets through `switches`)
ENGINE_SWITCHES = tuple(f.name for f in fields(EngineConfig) if f.name not in ("name", "dtype", "threads"))
#: the class of each exported backend
BACKEND_CLASSES: dict[str, type[ExportedModel]] = {"onnxruntime": OnnxRuntimeModel, "openvino": OpenVinoModel,
                                                   "tensorrt": TensorRTModel}
_BASE_OPTIONS = ("model", "device", "precision", "name", "threads")


class _Options(Protocol):
    """Parsed command-line options (an argparse.Namespace) as `ModelSpec.from_args` reads them."""

    backend: str
    dtype: str


def _class_options(backend: str) -> tuple[str, ...]:
    """The options of an exported backend's class beyond those every backend takes."""
    params = inspect.signature(BACKEND_CLASSES[backend].__init__).parameters
    return tuple(p for p in params if p not in ("self", *_BASE_OPTIONS))


@dataclass(frozen=True)
class ModelSpec:
    """Which model to run: backend, precision, switches, checkpoint, device, threads (and a display name)."""

    backend: str = "torch"
    precision: str = "fp32"
    switches: tuple[tuple[str, Any], ...] = ()  # a mapping is accepted and stored as sorted (key, value) pairs
    checkpoint: str | None = None  # None: the bundled RIFE 4.0 weights
    device: str = "auto"  # auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps
    threads: int | None = None  # CPU threads while the model runs (None: leave torch's setting)
    name: str | None = None  # None: derived from backend, precision and the switches that are on

    def __post_init__(self) -> None:
        items = self.switches.items() if isinstance(self.switches, Mapping) else self.switches
        object.__setattr__(self, "switches", tuple(sorted((str(k), v) for k, v in items)))
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
        valid = ENGINE_SWITCHES if self.backend == "torch" else ENGINE_SWITCHES + _class_options(self.backend)
        unknown = sorted(k for k, _ in self.switches if k not in valid)
        if unknown:
            raise ValueError(f"unknown switch(es) {unknown} for backend {self.backend}; valid: {', '.join(valid)}")

    @property
    def options(self) -> dict[str, Any]:
        """The switches as a dict."""
        return dict(self.switches)

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
            value = not getattr(args, "no_inference_mode", False) if key == "inference_mode" else getattr(
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


def load_model(spec: ModelSpec, model: RIFE | None = None) -> Engine | ExportedModel:
    """The model `spec` describes, on its backend (raises BackendUnavailable saying why when it cannot run here).

    `model` (a loaded or pruned RIFE) replaces loading `spec.checkpoint`; the backend works on a copy of it.
    """
    dev = resolve_device(spec.device)
    if model is None:
        model = load_checkpoint(spec if spec.backend == "torch" else replace(spec, device="cpu"))
    elif not isinstance(model, RIFE):
        raise TypeError(f"model must be a rifelab RIFE (load_rife, load_pruned), got {type(model).__name__}")
    opts = spec.options
    if spec.backend == "torch":
        config = EngineConfig(name=spec.label, dtype=spec.precision, threads=spec.threads, **opts)
        return Engine(model, config, device=dev)
    torch_only = [k for k in opts if k in ENGINE_SWITCHES]
    built = BACKEND_CLASSES[spec.backend](model, dev, spec.precision, name=spec.label, threads=spec.threads,
                                          **{k: v for k, v in opts.items() if k not in torch_only})
    for key in torch_only:
        built.skipped[f"--{key.replace('_', '-')}"] = f"a PyTorch engine switch; backend {spec.backend} does not use it"
    return built
