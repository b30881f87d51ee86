"""Inference backends behind one `interpolate` API: PyTorch, ONNX Runtime, OpenVINO (FP32, bf16, INT8), TensorRT.

    from rifelab.engines.backends import OpenVinoModel
    m = OpenVinoModel(load_rife(), precision="int8")   # NNCF post-training INT8 (or: engines.spec.load_model)
    out = m.interpolate(img0, img1, 0.5)               # the Interpolator contract (rifelab.rife.contract)
    m.report()                                         # what was done, and what was skipped

Every backend takes frames of any size: they are padded by `prepare_pair` as RIFE pads them, and one graph is
built (exported, compiled, quantised) per padded input shape, flow scale and ensemble flag, then reused.
A backend that cannot run here raises `BackendUnavailable` with the reason (`backend_problem` gives the
reason without building anything); nothing falls back silently to another engine.

What each machine can do is read once: `capabilities()` (CUDA, MPS, CPU ISA and native bf16, a compile
toolchain, importable backends), and `missing_requirements(...)` turns a configuration's `requires` list
into the reasons it cannot run here.

INT8 calibration uses real frames of the bundled clips in `CALIBRATION_RANGES`, frames that no quality
evaluation of rifelab uses (read through `rifelab.frames.splits`; the studies check that with `check_disjoint`).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from rifelab.engines.export import FLOW_OUTPUT_NAMES, INPUT_NAMES, OUTPUT_NAME, FlowGraph, export_onnx
from rifelab.engines.spec import BACKENDS, PRECISIONS
from rifelab.frames.splits import range_pairs
from rifelab.rife.contract import (
    Frames,
    PreparedPair,
    Timestep,
    alpha_planes,
    check_rgba_pair,
    prepare_pair,
    rgba_output,
)
from rifelab.rife.model import RIFE

#: a built graph: padded (img0, img1, t) and whether flow and mask are wanted -> (frame,) or (frame, flow, mask)
Runner = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], "tuple[torch.Tensor, ...]"]

log = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "REQUIREMENTS",
    "CALIBRATION_RANGES",
    "INT8_FP32_OPS",
    "BackendUnavailable",
    "Capabilities",
    "capabilities",
    "missing_requirements",
    "backend_requirements",
    "backend_problem",
    "ExportedModel",
    "OnnxRuntimeModel",
    "OpenVinoModel",
    "TensorRTModel",
]

#: what a configuration may declare in `requires`, and what each means
REQUIREMENTS: dict[str, str] = {
    "cuda": "an NVIDIA GPU with a CUDA build of torch",
    "mps": "an Apple GPU (MPS)",
    "native_bf16": "a CPU with native bf16 (AVX512_BF16 or AMX)",
    "native_fp16": "a CPU with native fp16 arithmetic (AVX512_FP16 or AMX-FP16)",
    "vnni": "a CPU with VNNI int8 dot products (AVX512_VNNI or AVX-VNNI)",
    "compile": "a torch.compile toolchain (a C++ compiler on CPU, Triton on CUDA)",
    "onnxruntime": "the onnxruntime package",
    "onnxruntime_cuda": "onnxruntime with the CUDA execution provider (onnxruntime-gpu)",
    "openvino": "the openvino package",
    "nncf": "the nncf package (post-training quantisation)",
    "tensorrt": "torch-tensorrt (pip install 'rifelab[cuda]')",
}
#: OpenVINO op types INT8 leaves in fp32: quantising the elementwise flow arithmetic (flow scaling, residual adds,
#: the final blend) cost 1.2 dB against the ground truth on held-out triplets (3.7 dB on one with large motion);
#: convolutions alone cost 0.17 dB (RIFE 4.0, 640x360, 6 calibration pairs, 4 bigbuckbunny triplets)
INT8_FP32_OPS = ("Interpolate", "GridSample", "Multiply", "Add", "Subtract", "Concat", "MatMul")
#: clip -> [start, stop) frames used for INT8 calibration; no rifelab quality evaluation reads them
CALIBRATION_RANGES: dict[str, tuple[int, int]] = {"bigbuckbunny": (100, 132), "bikes": (100, 140)}


class BackendUnavailable(RuntimeError):
    """This backend (or precision) cannot run on this machine; the message says why."""


# ----------------------------------------------------------------------------- what this machine has


@dataclass(frozen=True)
class Capabilities:
    """What this machine offers to the configurations (read once per process)."""

    cuda: bool
    mps: bool
    cpu_capability: str  # torch's dispatch level: DEFAULT, AVX2, AVX512, ...
    avx512: bool
    vnni: bool
    native_bf16: bool
    native_fp16: bool
    amx: bool
    compiler: str | None  # C++ compiler torch.compile's CPU backend would use
    triton: bool
    modules: tuple[str, ...]  # importable optional backends
    ort_providers: tuple[str, ...]

    @property
    def isa(self) -> str:
        """Short ISA summary, e.g. 'AVX2' or 'AVX512 + VNNI + AVX512_BF16 + AMX'."""
        parts = ["AVX512" if self.avx512 else self.cpu_capability]
        parts += [n for n, ok in (("VNNI", self.vnni), ("AVX512_BF16", self.native_bf16),
                                  ("AVX512_FP16", self.native_fp16), ("AMX", self.amx)) if ok]
        return " + ".join(parts)


def _cpu_flag(name: str) -> bool:
    """torch's CPU feature probes (private API, absent in old torch: False then)."""
    fn = getattr(torch.cpu, name, None)
    try:
        return bool(fn()) if fn is not None else False
    except Exception:  # noqa: BLE001 - a probe that fails means the feature is not usable
        return False


@lru_cache(maxsize=1)
def capabilities() -> Capabilities:
    """Read the machine's capabilities once: devices, CPU ISA, compile toolchain, importable backends."""
    cap = torch.backends.cpu.get_cpu_capability()
    amx = "AMX" in cap or _cpu_flag("_is_amx_tile_supported")
    bf16 = "AVX512_BF16" in cap or amx or _cpu_flag("_is_avx512_bf16_supported")
    fp16 = _cpu_flag("_is_amx_fp16_supported") or _cpu_has("avx512_fp16")
    mods = tuple(m for m in ("onnxruntime", "openvino", "nncf", "torch_tensorrt", "tensorrt", "onnx")
                 if importlib.util.find_spec(m) is not None)
    providers: tuple[str, ...] = ()
    if "onnxruntime" in mods:
        import onnxruntime as ort

        providers = tuple(ort.get_available_providers())
    compiler = os.environ.get("CXX") or next((c for c in ("g++", "c++", "clang++") if shutil.which(c)), None)
    return Capabilities(
        cuda=torch.cuda.is_available(),
        mps=bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        cpu_capability=cap,
        avx512=cap.startswith("AVX512") or _cpu_flag("_is_avx512_supported"),
        vnni=_cpu_flag("_is_vnni_supported") or _cpu_has("avx_vnni"),
        native_bf16=bf16, native_fp16=fp16, amx=amx, compiler=compiler,
        triton=importlib.util.find_spec("triton") is not None, modules=mods, ort_providers=providers,
    )


def _cpu_has(flag: str) -> bool:
    """True when /proc/cpuinfo lists `flag` (Linux; False elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return flag in line.split()
    except OSError:
        pass
    return False


def _requirement_problem(req: str, device: torch.device, cap: Capabilities) -> str | None:
    """Why requirement `req` is not met here (None when it is)."""
    if req not in REQUIREMENTS:
        raise ValueError(f"unknown requirement {req!r}; known: {', '.join(REQUIREMENTS)}")
    if req == "cuda":
        return None if cap.cuda and device.type == "cuda" else (
            "needs CUDA; this run is on " + (device.type if cap.cuda else f"{device.type} and torch sees no CUDA GPU"))
    if req == "mps":
        return None if cap.mps and device.type == "mps" else f"needs an Apple GPU (MPS); this run is on {device.type}"
    if req in ("native_bf16", "native_fp16", "vnni"):
        if device.type != "cpu":
            return None  # a CPU ISA requirement says nothing about a GPU run
        ok = {"native_bf16": cap.native_bf16, "native_fp16": cap.native_fp16, "vnni": cap.vnni}[req]
        return None if ok else f"needs {REQUIREMENTS[req]}; this CPU has {cap.isa} (it would be emulated, slowly)"
    if req == "compile":
        if device.type == "cuda":
            return None if cap.triton else "torch.compile on CUDA needs Triton, which is not installed"
        return None if cap.compiler else "torch.compile on CPU needs a C++ compiler (g++/clang++), none found on PATH"
    if req == "onnxruntime_cuda":
        if "CUDAExecutionProvider" not in cap.ort_providers:
            return "onnxruntime has no CUDA execution provider here (install onnxruntime-gpu on a CUDA machine)"
        return None if device.type == "cuda" else f"the CUDA execution provider needs a CUDA run; this is {device.type}"
    module = {"tensorrt": "torch_tensorrt"}.get(req, req)
    return None if module in cap.modules else f"needs {REQUIREMENTS[req]}, which is not installed"


def missing_requirements(requires: Iterable[str], device: str | torch.device = "cpu") -> list[str]:
    """Reasons why the listed requirements are not met on `device` (empty: all met)."""
    dev = torch.device(device)
    cap = capabilities()
    return [p for r in requires if (p := _requirement_problem(str(r), dev, cap)) is not None]


def backend_requirements(backend: str, precision: str = "fp32", device: str | torch.device = "cpu") -> list[str]:
    """Requirements a backend/precision implies (a configuration need not repeat them in `requires`)."""
    dev = torch.device(device)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS[backend]:
        raise ValueError(f"backend {backend} offers precisions {', '.join(PRECISIONS[backend])}, not {precision!r}")
    reqs = {"torch": [], "onnxruntime": ["onnxruntime", "onnx"], "openvino": ["openvino", "onnx"],
            "tensorrt": ["cuda", "tensorrt"]}[backend]
    reqs = [r for r in reqs if r != "onnx"]  # onnx comes with onnxruntime/openvino installs of rifelab
    if backend == "onnxruntime" and dev.type == "cuda":
        reqs.append("onnxruntime_cuda")
    if backend == "openvino" and precision == "bf16":
        reqs.append("native_bf16")
    if backend == "openvino" and precision == "int8":
        reqs.append("nncf")
    return reqs


def backend_problem(backend: str, precision: str = "fp32", device: str | torch.device = "cpu") -> str | None:
    """Why `backend` at `precision` cannot run on `device` here, or None when it can (builds nothing)."""
    dev = torch.device(device)
    if backend == "openvino" and dev.type != "cpu":
        return f"rifelab runs OpenVINO on the CPU only; this run is on {dev.type}"
    if backend == "onnxruntime" and dev.type not in ("cpu", "cuda"):
        return f"rifelab runs ONNX Runtime with its CPU or CUDA provider; on {dev.type} it would time the CPU"
    problems = missing_requirements(backend_requirements(backend, precision, dev), dev)
    return "; ".join(problems) if problems else None


# ----------------------------------------------------------------------------- exported backends


class ExportedModel:
    """Base of the non-PyTorch backends: RIFE's `interpolate` over one built graph per padded shape.

    Subclasses implement `_build(n, h, w, scale, ensemble)` returning a function of padded (img0, img1, t)
    tensors on `self.device` -> padded frame. `applied` / `skipped` say what was done and what was not.
    """

    backend = "exported"

    def __init__(self, model: RIFE, device: str | torch.device = "cpu", precision: str = "fp32",
                 name: str | None = None, threads: int | None = None):
        if not isinstance(model, RIFE):
            raise TypeError(f"model must be a rifelab RIFE (from load_rife or load_pruned), got {type(model).__name__}")
        self.device = torch.device(device)
        problem = backend_problem(self.backend, precision, self.device)
        if problem:
            raise BackendUnavailable(f"{self.backend} ({precision}): {problem}")
        self.precision = precision
        self.name = name or f"{self.backend}-{precision}"
        self.model = copy.deepcopy(model).to(device=self.device, dtype=torch.float32).eval()  # pads; is exported
        self.threads = threads
        self.applied: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self._runners: dict[tuple, Runner] = {}
        self._workdir = tempfile.TemporaryDirectory(prefix="rifelab-backend-")

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the frames the graph takes and returns (float32; lower precisions are inside the graph)."""
        return torch.float32

    @property
    def workdir(self) -> Path:
        return Path(self._workdir.name)

    def report(self) -> dict[str, Any]:
        """Backend, precision, what was applied and what was skipped (with reasons)."""
        return {"name": self.name, "backend": self.backend, "precision": self.precision, "device": str(self.device),
                "applied": dict(self.applied), "skipped": dict(self.skipped)}

    def _threads(self) -> int:
        return int(self.threads or torch.get_num_threads())

    def _build(self, n: int, h: int, w: int, scale: float, ensemble: bool) -> Runner:
        raise NotImplementedError

    def _forward(self, img0: Frames, img1: Frames, timestep: Timestep, scale: float, ensemble: bool,
                 with_flow: bool) -> tuple[PreparedPair, tuple[torch.Tensor, ...]]:
        """The prepared pair and the padded graph outputs: (frame,), or (frame, flow, mask) with `with_flow`."""
        self.model.net.check_ensemble(ensemble)
        prep = prepare_pair(img0, img1, timestep, scale, multiple=self.model.net.padding_multiple,
                            scales=self.model.net.scale_list, device=self.device, dtype=torch.float32)
        n, hp, wp = prep.padded
        key = (n, hp, wp, prep.scale, bool(ensemble))
        run = self._runners.get(key)
        if run is None:
            run = self._build(n, hp, wp, prep.scale, bool(ensemble))
            self._runners[key] = run
        return prep, run(prep.img0.contiguous(), prep.img1.contiguous(), prep.t.contiguous(), with_flow)

    def interpolate(self, img0: Frames, img1: Frames, timestep: Timestep = 0.5,
                    scale: float = 1.0, ensemble: bool = False) -> torch.Tensor:
        """Frame at `timestep` between img0 and img1: (N,3,H,W) float in [0, 1], any H, W (as RIFE.interpolate)."""
        prep, (frame, *_) = self._forward(img0, img1, timestep, scale, ensemble, with_flow=False)
        return prep.output(frame)

    def interpolate_rgba(self, img0: torch.Tensor, img1: torch.Tensor, timestep: Timestep = 0.5,
                         scale: float = 1.0, ensemble: bool = False) -> torch.Tensor:
        """(N,4,H,W) RGBA frames: colour exactly as this backend's `interpolate` (the same compiled graph, whose
        flow and mask outputs warp and blend the alpha plane)."""
        img0, img1 = check_rgba_pair(img0, img1)
        prep, (frame, flow, mask) = self._forward(img0[:, :3], img1[:, :3], timestep, scale, ensemble, with_flow=True)
        return rgba_output(prep, frame, flow, mask, *alpha_planes(img0, img1))

    __call__ = interpolate

    def _export(self, n: int, h: int, w: int, scale: float, ensemble: bool, dynamic: bool) -> Path:
        tag = "dyn" if dynamic else f"{n}x{h}x{w}"
        path = self.workdir / f"rife_{tag}_s{scale:g}{'_ens' if ensemble else ''}.onnx"
        if not path.exists():
            export_onnx(self.model, path, w, h, batch=n, scale=scale, ensemble=ensemble, dynamic=dynamic,
                        flow_outputs=True)
        return path


class OnnxRuntimeModel(ExportedModel):
    """ONNX Runtime: CPU execution provider, or CUDA's on a CUDA run (static shape per padded input size)."""

    backend = "onnxruntime"

    def _build(self, n: int, h: int, w: int, scale: float, ensemble: bool) -> Runner:
        import onnxruntime as ort

        path = self._export(n, h, w, scale, ensemble, dynamic=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self._threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CUDAExecutionProvider"] if self.device.type == "cuda" else ["CPUExecutionProvider"]
        sess = ort.InferenceSession(str(path), opts, providers=providers)
        self.applied["provider"] = f"{providers[0]}, {opts.intra_op_num_threads} intra-op threads, all graph optimisations"
        self.applied["shape"] = "static shape per padded input size (one exported graph each)"
        if self.device.type == "cuda":
            self.applied["io"] = "inputs and outputs copied through host memory (numpy)"
        out_dev = self.device

        def run(p0: torch.Tensor, p1: torch.Tensor, t: torch.Tensor, with_flow: bool) -> tuple[torch.Tensor, ...]:
            feeds = {k: v.detach().cpu().numpy() for k, v in zip(INPUT_NAMES, (p0, p1, t))}
            names = list(FLOW_OUTPUT_NAMES) if with_flow else [OUTPUT_NAME]
            return tuple(torch.from_numpy(o).to(out_dev) for o in sess.run(names, feeds))

        return run


class OpenVinoModel(ExportedModel):
    """OpenVINO on the CPU: FP32 (precision hint f32), bf16 (native bf16 CPUs only) or NNCF post-training INT8.

    The FP32 graph pins the f32 precision hint: on CPUs with native bf16 OpenVINO would otherwise run
    bf16 by default. INT8 quantises the convolutions once, calibrated on real
    frames (`calibration`, or `calibration_count` pairs of CALIBRATION_RANGES at the first input size). Only the
    convolutions are quantised: the op types in INT8_FP32_OPS (flow arithmetic, warps, resizes) stay in fp32, and
    so do all convolutions of the IFNet blocks in `int8_fp32_blocks` (block 3, at full resolution, carries the
    finest flow detail and most of INT8's loss).
    """

    backend = "openvino"

    def __init__(self, model: RIFE, device: str | torch.device = "cpu", precision: str = "fp32",
                 name: str | None = None, threads: int | None = None,
                 calibration: tuple[torch.Tensor, torch.Tensor] | None = None, calibration_count: int = 8,
                 calibration_ranges: Mapping[str, Sequence[int]] | None = None,
                 int8_fp32_blocks: Sequence[int] = ()):
        super().__init__(model, device, precision, name, threads)
        nblocks = len(model.net.blocks)
        bad = [b for b in int8_fp32_blocks if b not in range(nblocks)]
        if bad:
            raise ValueError(f"int8_fp32_blocks {bad}: this IFNet (RIFE {model.layout.name}) has blocks 0-{nblocks - 1}")
        self.int8_fp32_blocks = tuple(int8_fp32_blocks)
        self.calibration = calibration
        self.calibration_count = int(calibration_count)
        self.calibration_ranges = dict(calibration_ranges or CALIBRATION_RANGES)
        self._ranges_given = calibration_ranges is not None
        self._ov_models: dict[tuple, Any] = {}
        self.calibration_s: float | None = None

    def _ov_model(self, h: int, w: int, scale: float, ensemble: bool) -> Any:
        """The dynamic-shape OpenVINO model for (scale, ensemble), quantised once for INT8."""
        import openvino as ov

        key = (scale, ensemble)
        if key not in self._ov_models:
            path = self._export(1, h, w, scale, ensemble, dynamic=True)
            m = ov.Core().read_model(str(path))
            if self.precision == "int8":
                m = self._quantize(m, h, w, scale)
            self._ov_models[key] = m
        return self._ov_models[key]

    def _quantize(self, m: Any, h: int, w: int, scale: float) -> Any:
        import nncf

        if self.calibration is not None:
            a, b = self.calibration
            src = "given frames" + (": " + ", ".join(f"{c} [{s}, {e})" for c, (s, e) in self.calibration_ranges.items())
                                    if self._ranges_given else "")
        else:
            a, b = range_pairs(self.calibration_ranges, self.calibration_count, (w, h), "calibration range")
            src = ", ".join(f"{c} frames [{s}, {e})" for c, (s, e) in self.calibration_ranges.items())
        items = []
        for i in range(a.shape[0]):
            p = self.model.prepare_pair(a[i : i + 1], b[i : i + 1], 0.5, scale)
            items.append({"img0": p.img0.numpy(), "img1": p.img1.numpy(), "t": p.t.numpy()})
        t0 = time.perf_counter()
        nncf.set_log_level(logging.WARNING)  # its INFO lines and progress bars would land in saved notebooks
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            q = nncf.quantize(m, nncf.Dataset(items), subset_size=len(items), fast_bias_correction=True,
                              ignored_scope=nncf.IgnoredScope(
                                  types=list(INT8_FP32_OPS), validate=False,
                                  patterns=[rf"(.*/)?block{b}/.*" for b in self.int8_fp32_blocks]))
        self.calibration_s = time.perf_counter() - t0
        self.applied["int8"] = (f"NNCF post-training INT8 of the convolutions only, calibrated on "
                                f"{len(items)} real pairs ({src}) at {a.shape[-1]}x{a.shape[-2]} in "
                                f"{self.calibration_s:.1f} s; warps, resizes and elementwise ops stay in fp32"
                                + (f", and so do the convolutions of block(s) {list(self.int8_fp32_blocks)}"
                                   if self.int8_fp32_blocks else ""))
        return q

    def _build(self, n: int, h: int, w: int, scale: float, ensemble: bool) -> Runner:
        import openvino as ov

        base = self._ov_model(h, w, scale, ensemble)
        m = base.clone()
        m.reshape({name: [n, c, h, w] for name, c in zip(INPUT_NAMES, (3, 3, 1))})
        hint = "bf16" if self.precision == "bf16" else "f32"
        config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": self._threads(),
                  "PERFORMANCE_HINT": "LATENCY"}
        compiled = ov.Core().compile_model(m, "CPU", config)
        request = compiled.create_infer_request()
        self.applied["precision"] = (f"inference precision hint {hint}"
                                     + (" (explicit: OpenVINO defaults to bf16 on native-bf16 CPUs)" if hint == "f32" else ""))
        self.applied["threads"] = f"{self._threads()} inference threads, latency hint"
        self.applied["shape"] = "one dynamic-shape export, reshaped to a static shape per padded input size"

        def run(p0: torch.Tensor, p1: torch.Tensor, t: torch.Tensor, with_flow: bool) -> tuple[torch.Tensor, ...]:
            request.infer({k: v.detach().cpu().numpy() for k, v in zip(INPUT_NAMES, (p0, p1, t))})
            count = len(FLOW_OUTPUT_NAMES) if with_flow else 1
            return tuple(torch.from_numpy(request.get_output_tensor(i).data.copy()) for i in range(count))

        return run


class TensorRTModel(ExportedModel):
    """TensorRT through torch-tensorrt (dynamo frontend), static shape per padded input size; CUDA only.

    fp16 builds the engine with fp16 kernels enabled (inputs and outputs stay float32 tensors on the GPU).
    """

    backend = "tensorrt"

    def graph(self, scale: float, ensemble: bool) -> FlowGraph:
        """The module TensorRT compiles (the same graph the ONNX backends export)."""
        return FlowGraph(self.model, scale, ensemble, flow_outputs=True).to(self.device)

    def _build(self, n: int, h: int, w: int, scale: float, ensemble: bool) -> Runner:
        import torch_tensorrt

        graph = self.graph(scale, ensemble)
        shapes = [(n, 3, h, w), (n, 3, h, w), (n, 1, h, w)]
        precisions = {torch.float16, torch.float32} if self.precision == "fp16" else {torch.float32}
        trt = torch_tensorrt.compile(graph, ir="dynamo", inputs=[torch_tensorrt.Input(s, dtype=torch.float32) for s in shapes],
                                     enabled_precisions=precisions)
        self.applied["engine"] = (f"torch-tensorrt {getattr(torch_tensorrt, '__version__', '')} dynamo frontend, "
                                  f"{'fp16 kernels enabled' if self.precision == 'fp16' else 'fp32'}, static shape {n}x{h}x{w}")

        def run(p0: torch.Tensor, p1: torch.Tensor, t: torch.Tensor, with_flow: bool) -> tuple[torch.Tensor, ...]:
            with torch.inference_mode():
                frame, flow, mask = trt(p0, p1, t)
            return (frame, flow, mask) if with_flow else (frame,)

        return run
