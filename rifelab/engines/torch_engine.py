"""Inference engine around the RIFE model with switchable speed optimisations.

    from rifelab.engines.torch_engine import Engine, EngineConfig
    eng = Engine(load_rife(), EngineConfig(dtype="bf16", channels_last=True))
    out = eng.interpolate(img0, img1, timestep=0.5)        # same API as RIFE.interpolate
    eng.applied, eng.skipped                               # what was done, what was not and why

Every option either changes what it says it changes or is reported in `skipped` with the
reason (TF32, cuDNN benchmark, CUDA graphs and streams need CUDA); nothing is silently faked.
Process-wide switches (TF32, cuDNN benchmark, CPU threads) are set while the engine runs and
restored afterwards, so engines with different settings can be timed side by side.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from rifelab.measure.profiling import resolve_device
from rifelab.rife.checkpoints import load_rife
from rifelab.rife.contract import (
    Frames,
    PreparedPair,
    Timestep,
    alpha_planes,
    check_pair,
    check_rgba_pair,
    output_dtype,
    padded_size,
    rgba_output,
)
from rifelab.rife.model import RIFE
from rifelab.rife.network import (
    IFNet,
    base_grid,
    check_scale,
    grid_normaliser,
    timestep_plane,
    warp,
)

log = logging.getLogger(__name__)

__all__ = [
    "DTYPES",
    "COMPILE_MODES",
    "EngineConfig",
    "Engine",
    "EngineForward",
    "parse_config",
    "parse_options",
]

DTYPES = ("fp32", "fp16", "bf16", "autocast")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
AUTOCAST_DTYPES = ("auto", "fp16", "bf16")
_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# compile modes that capture CUDA graphs by themselves (manual capture on top would be redundant)
_COMPILE_MODES_WITH_GRAPHS = ("reduce-overhead", "max-autotune")


# ----------------------------------------------------------------------------- configuration


@dataclass
class EngineConfig:
    """Which optimisations to apply; every field is one switch (see module docstring)."""

    name: str = "fp32-eager"
    dtype: str = "fp32"  # fp32 | fp16 | bf16 (weights and activations) | autocast (fp32 weights, mixed ops)
    autocast_dtype: str = "auto"  # for dtype=autocast: auto (fp16 on CUDA/MPS, bf16 on CPU) | fp16 | bf16
    channels_last: bool = False  # NHWC memory format for weights and inputs
    cudnn_benchmark: bool = False  # let cuDNN time its convolution algorithms per shape (CUDA)
    tf32: bool = False  # TensorFloat-32 for float32 convolutions and matmuls (CUDA, Ampere or newer)
    compile: bool = False  # torch.compile the network
    compile_mode: str = "default"  # default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs
    cuda_graphs: bool = False  # capture one CUDA graph per input shape and replay it (CUDA)
    static_buffers: bool = False  # preallocated padded input buffers and t-plane, reused across calls
    cached_grids: bool = False  # warp grids and normalisers precomputed once per shape
    streams: bool = False  # interpolate_many: overlap host-to-device copies with compute (CUDA)
    inference_mode: bool = True  # torch.inference_mode (False: torch.no_grad)
    threads: int | None = None  # torch intra-op CPU threads while the engine runs (None: leave as is)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.autocast_dtype not in AUTOCAST_DTYPES:
            raise ValueError(f"autocast_dtype must be one of {AUTOCAST_DTYPES}, got {self.autocast_dtype!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {self.threads!r}")
        for f in fields(self):
            if f.type in ("bool", bool) and not isinstance(getattr(self, f.name), bool):
                raise ValueError(f"{f.name} must be true or false, got {getattr(self, f.name)!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def options(self) -> dict[str, Any]:
        """The switches only (no name)."""
        d = self.as_dict()
        d.pop("name")
        return d


def parse_options(text: str) -> dict[str, Any]:
    """'bf16, channels_last, compile_mode:max-autotune' -> {'dtype': 'bf16', 'channels_last': True, ...}.

    A dtype name sets `dtype`, a bare option name switches it on, `key:value` (or `key=value`) sets a value.
    """
    d: dict[str, Any] = {}
    for tok in (t.strip() for t in str(text).split(",")):
        if not tok:
            continue
        if tok in DTYPES:
            d["dtype"] = tok
        elif "=" in tok or ":" in tok:
            k, v = re.split(r"[=:]", tok, maxsplit=1)
            d[k.strip()] = _parse_scalar(v.strip())
        else:
            d[tok] = True
    return d


def parse_config(spec: dict[str, Any] | EngineConfig | str, name: str | None = None) -> EngineConfig:
    """EngineConfig from a dict (option -> value), a config, or an option string like 'bf16, channels_last'.

    Unknown options are an error naming the valid ones.
    """
    if isinstance(spec, EngineConfig):
        return spec
    if isinstance(spec, str):
        spec = parse_options(spec)
        if name is None:
            name = "-".join(str(v) if k == "dtype" else k for k, v in spec.items()) or "fp32-eager"
    if not isinstance(spec, dict):
        raise TypeError(f"an engine configuration must be a dict, an option string or EngineConfig, got {type(spec).__name__}")
    valid = {f.name for f in fields(EngineConfig)}
    unknown = sorted(set(spec) - valid)
    if unknown:
        raise ValueError(f"unknown engine option(s) {unknown}; valid options: {sorted(valid)}")
    d = dict(spec)
    if name is not None and "name" not in d:
        d["name"] = name
    return EngineConfig(**d)


def _parse_scalar(v: str) -> Any:
    low = v.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    try:
        return int(v)
    except ValueError:
        return v


# ----------------------------------------------------------------------------- the forward pass


class EngineForward(nn.Module):
    """IFNet's coarse-to-fine forward with an optional cached warp grid for one padded shape.

    Numerically the same as `IFNet.forward` (the cached grid holds the very values the core warp
    computes); kept free of host-to-device copies so it can be captured in a CUDA graph.
    """

    def __init__(self, net: IFNet, cached_grids: bool = False, channels_last: bool = False):
        super().__init__()
        self.net = net
        self.cached_grids = cached_grids
        self.channels_last = channels_last
        self.grid: torch.Tensor | None = None  # (N, H, W, 2) identity grid in [-1, 1]
        self.grid_norm: torch.Tensor | None = None  # (1, 1, 1, 2): (W-1)/2, (H-1)/2
        self.grid_key: tuple | None = None

    def set_shape(self, n: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> None:
        """Precompute the warp grid for padded frames of n x h x w (no-op when already cached)."""
        compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        key = (n, h, w, str(device), compute)
        if not self.cached_grids or key == self.grid_key:
            return
        self.grid = base_grid(n, h, w, device, compute).permute(0, 2, 3, 1).contiguous()
        self.grid_norm = grid_normaliser(h, w, device, compute).view(1, 1, 1, 2)
        self.grid_key = key

    def warp(self, img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """Backward warp; cached grid when one fits, else the core warp. Half precision warps in fp32."""
        grid = self.grid
        if grid is None or self.grid_norm is None or grid.shape[:3] != (flow.shape[0], *flow.shape[2:]):
            return warp(img, flow)
        out_dtype = img.dtype
        g = grid + flow.permute(0, 2, 3, 1).to(grid.dtype) / self.grid_norm
        out = F.grid_sample(img.to(grid.dtype), g, mode="bilinear", padding_mode="border", align_corners=True)
        return out.to(out_dtype)

    def _cat(self, tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Channel concat of a block's input; kept in NHWC when channels_last (cat alone falls back to NCHW)."""
        x = torch.cat(tensors, 1)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(
        self,
        img0: torch.Tensor,
        img1: torch.Tensor,
        t: torch.Tensor,
        scale_list: Sequence[float] | None = None,
        ensemble: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(frame, flow, mask logits) for padded inputs: colour and, for RGBA, what the alpha is blended with."""
        return self.net.forward_all(img0, img1, t, scale_list, ensemble, warp_fn=self.warp, cat_fn=self._cat)


# ----------------------------------------------------------------------------- engine


@dataclass
class _Buffers:
    """Static padded inputs (and, with CUDA graphs, the captured graph and its output)."""

    img0: torch.Tensor
    img1: torch.Tensor
    t: torch.Tensor
    graph: torch.cuda.CUDAGraph | None = None
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (frame, flow, mask) a graph writes
    last_t: float | None = field(default=None)
    keep_alive: tuple = ()  # tensors a captured graph reads (the warp grid of its shape)


class Engine:
    """RIFE with a chosen set of optimisations; `interpolate` has the core model's signature.

    `applied` maps each option that took effect to what was done; `skipped` maps each requested
    option that does not apply here to the reason. The wrapped model is a copy: the caller's
    model is left untouched.
    """

    def __init__(
        self,
        model: RIFE | None = None,
        config: EngineConfig | dict[str, Any] | str | None = None,
        device: str | torch.device | None = None,
        checkpoint: str | None = None,
    ):
        self.config = parse_config(config if config is not None else {})
        if model is None:
            model = load_rife(checkpoint, device=resolve_device(device or "auto"))
        elif not isinstance(model, RIFE):
            raise TypeError(f"model must be a rifelab RIFE (from load_rife or load_pruned), got {type(model).__name__}")
        dev = resolve_device(device) if device is not None else model.device
        self.model: RIFE = copy.deepcopy(model).to(dev).eval()
        self.device = dev
        self.applied: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.autocast_dtype: torch.dtype | None = None
        self._buffers: dict[tuple, _Buffers] = {}
        self._compile_failed = False
        self._setup()

    # ------------------------------------------------------------------ setup

    def _skip(self, option: str, reason: str) -> None:
        self.skipped[option] = reason
        log.info("engine %s: %s skipped: %s", self.config.name, option, reason)

    def _setup(self) -> None:
        cfg, dev = self.config, self.device
        is_cuda = dev.type == "cuda"
        # dtype
        if cfg.dtype in ("fp16", "bf16"):
            dt = _TORCH_DTYPES[cfg.dtype]
            problem = _probe_dtype(dev, dt)
            if problem:
                self._skip("dtype", f"{cfg.dtype} does not run on {dev.type}: {problem}; the engine stays in fp32")
            else:
                self.model.to(dtype=dt)
                note = ""
                if dev.type == "cpu" and dt == torch.float16:
                    note = "; fp16 convolutions on CPU may have no fast kernel (measure before using)"
                self.applied["dtype"] = f"weights and activations in {cfg.dtype}, warps in fp32{note}"
        elif cfg.dtype == "autocast":
            want = cfg.autocast_dtype
            if want == "auto":
                want = "bf16" if dev.type == "cpu" else "fp16"
            dt = _TORCH_DTYPES[want]
            available = getattr(torch.amp, "is_autocast_available", lambda _t: dev.type in ("cpu", "cuda"))
            problem = None if available(dev.type) else f"torch has no autocast for {dev.type}"
            problem = problem or _probe_dtype(dev, dt, autocast=True)
            if problem:
                self._skip("dtype", f"autocast to {want} on {dev.type}: {problem}; the engine stays in fp32")
            else:
                self.autocast_dtype = dt
                self.applied["dtype"] = f"autocast: fp32 weights, eligible ops (convolutions) in {want}"
        # memory format
        if cfg.channels_last:
            self.model.net.to(memory_format=torch.channels_last)
            self.applied["channels_last"] = "weights and inputs in channels_last (NHWC) memory format"
        # CUDA-only switches
        if cfg.cudnn_benchmark:
            if not is_cuda:
                self._skip("cudnn_benchmark", f"cuDNN is a CUDA library; it is not used on {dev.type}")
            elif not torch.backends.cudnn.is_available():
                self._skip("cudnn_benchmark", "this torch build has no cuDNN")
            else:
                self.applied["cudnn_benchmark"] = "torch.backends.cudnn.benchmark=True while the engine runs"
        if cfg.tf32:
            if not is_cuda:
                self._skip("tf32", f"TF32 is a tensor-core format of NVIDIA GPUs; not available on {dev.type}")
            elif torch.cuda.get_device_capability(dev)[0] < 8:
                self._skip("tf32", f"TF32 needs compute capability 8.0 or newer, this GPU has "
                           f"{'.'.join(map(str, torch.cuda.get_device_capability(dev)))}")
            elif cfg.dtype in ("fp16", "bf16") and "dtype" in self.applied:
                self._skip("tf32", f"TF32 only changes float32 convolutions/matmuls; the engine runs in {cfg.dtype}")
            else:
                self.applied["tf32"] = "TF32 for float32 convolutions and matmuls while the engine runs"
        if is_cuda and "tf32" not in self.applied:
            self.applied["tf32_off"] = ("TF32 disabled while the engine runs, so float32 means IEEE float32 "
                                        "(torch enables TF32 for cuDNN convolutions by default)")
        graphs_wanted = cfg.cuda_graphs
        if cfg.cuda_graphs:
            if not is_cuda:
                self._skip("cuda_graphs", f"CUDA graphs need a CUDA device; this is {dev.type}")
                graphs_wanted = False
            elif cfg.compile and cfg.compile_mode in _COMPILE_MODES_WITH_GRAPHS:
                self._skip("cuda_graphs", f"torch.compile mode {cfg.compile_mode!r} captures CUDA graphs itself")
                graphs_wanted = False
            else:
                self.applied["cuda_graphs"] = "one CUDA graph per input shape/scale, captured on first use, replayed"
        self.use_graphs = graphs_wanted
        if cfg.streams:
            if not is_cuda:
                self._skip("streams", f"copy/compute overlap needs CUDA streams; this is {dev.type}")
            else:
                self.applied["streams"] = "interpolate_many: uploads on a copy stream overlap compute"
        # buffers and grids
        self.use_static = cfg.static_buffers or graphs_wanted
        if cfg.static_buffers:
            self.applied["static_buffers"] = "padded input buffers and t-plane preallocated per shape, reused"
        elif graphs_wanted:
            self.applied["static_buffers"] = "implied by cuda_graphs (a graph replays fixed buffers)"
        self.fwd = EngineForward(self.model.net, cached_grids=cfg.cached_grids or graphs_wanted,
                                 channels_last=cfg.channels_last)
        if cfg.cached_grids:
            self.applied["cached_grids"] = "warp grid and normaliser precomputed once per shape"
        elif graphs_wanted:
            self.applied["cached_grids"] = "implied by cuda_graphs (no host-to-device copy inside the graph)"
        self.applied["inference_mode"] = "torch.inference_mode" if cfg.inference_mode else "torch.no_grad"
        if cfg.threads is not None:
            if dev.type == "cpu":
                self.applied["threads"] = f"torch.set_num_threads({cfg.threads}) while the engine runs"
            else:
                self._skip("threads", f"CPU thread count does not drive compute on {dev.type}")
        # compile last (wraps the final module)
        self.compiled: Any = None
        if cfg.compile:
            if not hasattr(torch, "compile"):
                self._skip("compile", f"torch {torch.__version__} has no torch.compile")
            else:
                self.compiled = torch.compile(self.fwd, mode=cfg.compile_mode, dynamic=False)
                self.applied["compile"] = f"torch.compile(mode={cfg.compile_mode!r}, dynamic=False), compiled on first use"

    # ------------------------------------------------------------------ runtime context

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        """Process-wide switches on for the call, restored afterwards; grad mode; autocast."""
        cfg = self.config
        saved: list[tuple[Any, str, Any]] = []

        def setattr_saved(obj: Any, name: str, value: Any) -> None:
            saved.append((obj, name, getattr(obj, name)))
            setattr(obj, name, value)

        old_threads = torch.get_num_threads()
        try:
            if "cudnn_benchmark" in self.applied:
                setattr_saved(torch.backends.cudnn, "benchmark", True)
            if "tf32" in self.applied:
                setattr_saved(torch.backends.cuda.matmul, "allow_tf32", True)
                setattr_saved(torch.backends.cudnn, "allow_tf32", True)
            elif "tf32_off" in self.applied:
                setattr_saved(torch.backends.cuda.matmul, "allow_tf32", False)
                setattr_saved(torch.backends.cudnn, "allow_tf32", False)
            if "threads" in self.applied and cfg.threads != old_threads:
                torch.set_num_threads(int(cfg.threads))  # type: ignore[arg-type]
            grad = torch.inference_mode() if cfg.inference_mode else torch.no_grad()
            amp = (
                torch.autocast(self.device.type, dtype=self.autocast_dtype)
                if self.autocast_dtype is not None
                else contextlib.nullcontext()
            )
            with grad, amp:
                yield
        finally:
            for obj, name, value in reversed(saved):
                setattr(obj, name, value)
            if torch.get_num_threads() != old_threads:
                torch.set_num_threads(old_threads)

    # ------------------------------------------------------------------ public API

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the weights (fp32 under autocast)."""
        return self.model.dtype

    @property
    def memory_format(self) -> torch.memory_format:
        w = self.model.net.block0.conv0[0][0].weight
        return torch.channels_last if w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() else torch.contiguous_format

    def report(self) -> dict[str, Any]:
        """Config name, options applied (with what was done) and skipped (with the reason)."""
        return {"name": self.config.name, "device": str(self.device), "applied": dict(self.applied),
                "skipped": dict(self.skipped)}

    def interpolate(
        self,
        img0: Frames,
        img1: Frames,
        timestep: Timestep = 0.5,
        scale: float = 1.0,
        ensemble: bool = False,
    ) -> torch.Tensor:
        """Frame at `timestep` between img0 and img1: (N,3,H,W) float in [0, 1], any H, W (as RIFE.interpolate)."""
        with self._context():
            return self._interpolate(img0, img1, timestep, scale, ensemble)

    def interpolate_rgba(
        self,
        img0: torch.Tensor,
        img1: torch.Tensor,
        timestep: Timestep = 0.5,
        scale: float = 1.0,
        ensemble: bool = False,
    ) -> torch.Tensor:
        """(N,4,H,W) RGBA frames: colour exactly as this engine's `interpolate`, alpha with the same flow and mask."""
        img0, img1 = check_rgba_pair(img0, img1)
        with self._context():
            prep, (frame, flow, mask) = self._forward(img0[:, :3], img1[:, :3], timestep, scale, ensemble)
            return rgba_output(prep, frame, flow, mask, *alpha_planes(img0, img1))

    __call__ = interpolate

    def interpolate_many(
        self, frames: torch.Tensor, timestep: float = 0.5, scale: float = 1.0
    ) -> torch.Tensor:
        """In-between frames of consecutive pairs of `frames` (T,3,H,W) -> (T-1,3,H,W), on frames' device.

        With `streams` on CUDA, frame i+1 is uploaded on a copy stream while pair i is computed,
        and results are downloaded on the copy stream too.
        """
        if not isinstance(frames, torch.Tensor) or frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError("frames must be a (T,3,H,W) float tensor in [0, 1]; convert uint8 with rifelab.frames.images.to_tensor")
        if frames.shape[0] < 2:
            raise ValueError(f"need at least 2 frames to interpolate between, got {frames.shape[0]}")
        if "streams" in self.applied and frames.device.type == "cpu":
            return self._interpolate_many_streams(frames, timestep, scale)
        outs = []
        with self._context():
            for i in range(frames.shape[0] - 1):
                a = frames[i : i + 1].to(self.device)
                b = frames[i + 1 : i + 2].to(self.device)
                outs.append(self._interpolate(a, b, timestep, scale, False).to(frames.device))
        return torch.cat(outs, 0)

    # ------------------------------------------------------------------ internals

    def _run_net(self, p0: torch.Tensor, p1: torch.Tensor, t: torch.Tensor, scale_list: tuple,
                 ensemble: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.compiled is not None and not self._compile_failed:
            try:
                return self.compiled(p0, p1, t, scale_list, ensemble)
            except Exception as exc:  # noqa: BLE001 - backend errors vary (no compiler, unsupported op)
                if _is_compile_error(exc):
                    self._compile_failed = True
                    self.applied.pop("compile", None)
                    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
                    self._skip("compile", f"torch.compile failed on {self.device.type}: {type(exc).__name__}: {first}")
                    log.warning("engine %s: torch.compile failed, running eager: %s", self.config.name, first)
                else:
                    raise
        return self.fwd(p0, p1, t, scale_list, ensemble)

    def _interpolate(self, img0: Frames, img1: Frames, timestep: Timestep, scale: float,
                     ensemble: bool) -> torch.Tensor:
        prep, (frame, _, _) = self._forward(img0, img1, timestep, scale, ensemble)
        return prep.output(frame).clone() if self.use_graphs else prep.output(frame)

    def _forward(self, img0: Frames, img1: Frames, timestep: Timestep, scale: float,
                 ensemble: bool) -> tuple[PreparedPair, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The prepared pair and the padded (frame, flow, mask) of one optimised pass (inside `_context`)."""
        if self.use_static:
            prep = self._static_inputs(img0, img1, timestep, scale, ensemble)
        else:
            prep = self.model.prepare_pair(img0, img1, timestep, scale, ensemble)
            if self.config.channels_last:
                prep = replace(prep, **{k: getattr(prep, k).contiguous(memory_format=torch.channels_last)
                                        for k in ("img0", "img1", "t")})
        n, hp, wp = prep.padded
        self.fwd.set_shape(n, hp, wp, self.device, self.model.dtype)
        if self.use_graphs:
            bufs = self._buffers[(n, hp, wp, prep.scale, ensemble)]
            if bufs.graph is None:
                self._capture(bufs, prep.scale_list, ensemble)
            assert bufs.graph is not None and bufs.out is not None
            bufs.graph.replay()
            return prep, bufs.out
        return prep, self._run_net(prep.img0, prep.img1, prep.t, prep.scale_list, ensemble)

    def _static_inputs(self, img0: Frames, img1: Frames, timestep: Timestep, scale: float,
                       ensemble: bool) -> PreparedPair:
        """The pair copied into this shape's preallocated padded buffers (validated as `prepare_pair` does)."""
        out_dtype = output_dtype(img0)
        scale = check_scale(scale)
        self.model.net.check_ensemble(ensemble)
        scale_list = tuple(self.model.net.scale_list(scale))
        a, b = check_pair(img0, img1)
        n, _, h, w = a.shape
        mult = self.model.padding_multiple(scale)
        hp, wp = padded_size(h, w, mult)
        key = (n, hp, wp, scale, ensemble)
        bufs = self._buffers.get(key)
        dt = self.model.dtype
        fmt = torch.channels_last if self.config.channels_last else torch.contiguous_format
        if bufs is None:
            if len(self._buffers) >= 8:
                self._buffers.clear()

            def zeros(c: int) -> torch.Tensor:
                return torch.zeros((n, c, hp, wp), device=self.device, dtype=dt).contiguous(memory_format=fmt)

            bufs = _Buffers(zeros(3), zeros(3), zeros(1))
            self._buffers[key] = bufs
        bufs.img0[:, :, :h, :w].copy_(a, non_blocking=True)
        bufs.img1[:, :, :h, :w].copy_(b, non_blocking=True)
        if isinstance(timestep, torch.Tensor):
            bufs.t.copy_(timestep_plane(timestep.detach(), n, hp, wp, bufs.t))
            bufs.last_t = None
        else:
            tf = float(timestep)
            if not 0.0 <= tf <= 1.0:
                raise ValueError(f"timestep must lie in [0, 1], got {timestep!r}")
            if bufs.last_t != tf:
                bufs.t.fill_(tf)
                bufs.last_t = tf
        return PreparedPair(bufs.img0, bufs.img1, bufs.t, scale, scale_list, mult, (h, w), out_dtype, a.device)

    def _capture(self, bufs: _Buffers, scale_list: tuple, ensemble: bool) -> None:
        """Warm up on a side stream (cuDNN autotuning, compilation), then capture one CUDA graph."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self._run_net(bufs.img0, bufs.img1, bufs.t, scale_list, ensemble)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            bufs.out = tuple(self._run_net(bufs.img0, bufs.img1, bufs.t, scale_list, ensemble))
        bufs.graph = graph
        bufs.keep_alive = (self.fwd.grid, self.fwd.grid_norm)  # another shape must not free them

    def _interpolate_many_streams(self, frames: torch.Tensor, timestep: float, scale: float) -> torch.Tensor:
        dev = self.device
        host = frames if frames.is_pinned() else frames.pin_memory()
        out = torch.empty((frames.shape[0] - 1, *frames.shape[1:]), dtype=frames.dtype).pin_memory()
        copy_stream = torch.cuda.Stream(dev)
        compute = torch.cuda.current_stream(dev)

        def upload(i: int) -> tuple[torch.Tensor, torch.cuda.Event]:
            with torch.cuda.stream(copy_stream):
                d = host[i : i + 1].to(dev, non_blocking=True)
                ev = torch.cuda.Event()
                ev.record(copy_stream)
            return d, ev

        with self._context():
            cur, nxt = upload(0), upload(1)
            for i in range(frames.shape[0] - 1):
                compute.wait_event(cur[1])
                compute.wait_event(nxt[1])
                cur[0].record_stream(compute)
                nxt[0].record_stream(compute)
                following = upload(i + 2) if i + 2 < frames.shape[0] else None  # overlaps the compute below
                res = self._interpolate(cur[0], nxt[0], timestep, scale, False)
                done = torch.cuda.Event()
                done.record(compute)
                with torch.cuda.stream(copy_stream):
                    copy_stream.wait_event(done)
                    out[i].copy_(res[0], non_blocking=True)
                    res.record_stream(copy_stream)
                cur = nxt
                if following is not None:
                    nxt = following
        torch.cuda.synchronize(dev)
        return out


def _is_compile_error(exc: Exception) -> bool:
    """True for errors raised by the torch.compile stack (dynamo/inductor/compiler), not by the model."""
    mod = type(exc).__module__ or ""
    text = f"{type(exc).__name__}: {exc}"
    return (
        mod.startswith("torch._dynamo")
        or mod.startswith("torch._inductor")
        or "BackendCompilerFailed" in text
        or "InductorError" in text
        or "CppCompileError" in text
        or "compiler" in text.lower() and "not found" in text.lower()
    )


def _probe_dtype(device: torch.device, dtype: torch.dtype, autocast: bool = False) -> str | None:
    """None if a tiny conv / transposed conv / upsample / grid_sample runs in `dtype` on `device`, else the error."""
    try:
        with torch.inference_mode():
            ctx = torch.autocast(device.type, dtype=dtype) if autocast else contextlib.nullcontext()
            wdt = torch.float32 if autocast else dtype
            x = torch.rand(1, 4, 8, 8, device=device, dtype=wdt)
            with ctx:
                y = F.conv2d(x, torch.rand(4, 4, 3, 3, device=device, dtype=wdt), padding=1)
                y = F.conv_transpose2d(y, torch.rand(4, 4, 4, 4, device=device, dtype=wdt), stride=2, padding=1)
                y = F.interpolate(y, scale_factor=0.5, mode="bilinear", align_corners=False)
                F.grid_sample(y.float(), torch.zeros(1, 8, 8, 2, device=device), align_corners=True)
        return None
    except (RuntimeError, TypeError, NotImplementedError) as exc:
        return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
