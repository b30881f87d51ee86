"""The measured parts of a device run. Each runs in its own process (runner.py) and appends rows to rows.jsonl.

Every configuration is a rifelab torch `Engine` (engines/torch_engine.py: dtypes, channels_last, cuDNN benchmark,
TF32, CUDA graphs with static buffers, torch.compile). Frames are real pairs (inputs.py), resized bicubically to
each resolution and fed as uint8 tensors on the device, as a decoder would hand them over (a float frame is
range-checked on the host, one synchronisation per call). Per configuration and resolution:
- latency: `profiling.time_callable`, one synchronised call at a time (median, p10/p90);
- throughput: back-to-back calls for `throughput_s`, one synchronisation at the end. Model calls/s counts
  interpolated frames per second (batch x streams x calls / s); `output_fps_2x` is VSGAN's count for a 2x
  interpolation, every original frame included: twice the model calls/s;
- peak memory: `profiling.PeakMemory` around all of it (torch.cuda.max_memory_allocated on a GPU);
- PSNR/SSIM against FP32 eager's output on every real pair (`metrics.agreement`, uint8-rounded, capped at 99 dB).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from rifelab.devicerun.inputs import Inputs, load_inputs
from rifelab.engines.torch_engine import Engine, parse_config
from rifelab.frames.images import resize, to_tensor
from rifelab.measure.metrics import agreement
from rifelab.measure.profiling import PeakMemory, synchronize, time_callable
from rifelab.rife.checkpoints import load_rife
from rifelab.rife.model import RIFE

log = logging.getLogger(__name__)

__all__ = ["Plan", "Recorder", "PART_FUNCTIONS", "FP32", "GRAPHS", "run_part"]

FP32 = "fp32-eager"
GRAPHS = "fp16-cl-cudnn-graphs"  # the batch, streams and compile parts build on this configuration
_GRAPH_OPTS = {"cuda_graphs": True, "static_buffers": True, "cached_grids": True}
GPU_CONFIGS: dict[str, dict[str, Any]] = {
    FP32: {},
    "fp32-tf32-cudnn": {"tf32": True, "cudnn_benchmark": True},
    "fp32-tf32-cl-cudnn": {"tf32": True, "channels_last": True, "cudnn_benchmark": True},
    "fp16": {"dtype": "fp16"},
    "bf16": {"dtype": "bf16"},
    "fp16-cl-cudnn": {"dtype": "fp16", "channels_last": True, "cudnn_benchmark": True},
    "bf16-cl-cudnn": {"dtype": "bf16", "channels_last": True, "cudnn_benchmark": True},
    GRAPHS: {"dtype": "fp16", "channels_last": True, "cudnn_benchmark": True, **_GRAPH_OPTS},
    "bf16-cl-cudnn-graphs": {"dtype": "bf16", "channels_last": True, "cudnn_benchmark": True, **_GRAPH_OPTS},
}
SMOKE_CONFIGS: dict[str, dict[str, Any]] = {FP32: {}, "fp32-channels_last": {"channels_last": True}}


@dataclass
class Plan:
    """What a run measures; the runner writes it to plan.json, every part reads it."""

    mode: str  # gpu | smoke
    device: str
    inputs: str
    work: str
    env: dict[str, Any]  # device_name, torch_version, cuda_version, git_commit, command: copied into every row
    resolutions: list[tuple[int, int]]
    configs: dict[str, dict[str, Any]]
    base: str  # configuration the batch/streams/compile parts build on
    batches: list[int]
    streams: list[tuple[int, int]]  # (batch, streams) pairs timed with 2 CUDA streams
    hires: tuple[int, int] | None  # FP16 artefact check resolution (None: skipped)
    hires_configs: list[str]
    compile_modes: list[str]  # tried in order while the part's time allows
    warmup: int = 3
    repeats: int = 20
    throughput_s: float = 1.0
    pairs: int | None = None
    timestep: float = 0.5
    quality_db: float = 45.0
    profile_calls: int = 10

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> "Plan":
        d = json.loads(path.read_text())
        d["resolutions"] = [tuple(r) for r in d["resolutions"]]
        d["streams"] = [tuple(s) for s in d["streams"]]
        d["hires"] = tuple(d["hires"]) if d["hires"] else None
        return cls(**d)


@dataclass
class Recorder:
    """Appends rows (with the run's environment in each) to rows.jsonl, flushed line by line."""

    plan: Plan
    part: str
    deadline: float  # time.time() after which nothing new starts
    started: float = field(default_factory=time.time)

    def row(self, config: str, resolution: tuple[int, int] | str, status: str, reason: str = "", batch: int = 1,
            streams: int = 1, **values: Any) -> dict[str, Any]:
        res = resolution if isinstance(resolution, str) else f"{resolution[0]}x{resolution[1]}"
        row = {"part": self.part, "config": config, "resolution": res, "batch": batch, "streams": streams,
               "status": status, "reason": reason, **values, **self.plan.env}
        with open(Path(self.plan.work) / "rows.jsonl", "a") as fh:
            fh.write(json.dumps(row, default=str) + "\n")
            fh.flush()
        return row

    def left(self) -> float:
        return self.deadline - time.time()


class Bench:
    """The model, real pairs per resolution and FP32 eager reference outputs, loaded once per part process."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.device = torch.device(plan.device)
        self.inputs: Inputs = load_inputs(plan.inputs, plan.pairs)
        self.model: RIFE = load_rife(str(self.inputs.weights), device=self.device)
        self._pairs: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._refs: dict[tuple[int, int], torch.Tensor] = {}

    def pairs(self, res: tuple[int, int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Real pairs at res as uint8 (1,3,H,W) tensors on the device (resized bicubically, rounded)."""
        if res not in self._pairs:
            out = []
            for a, b in self.inputs.pairs:
                x = resize(to_tensor([a, b]), *res).mul_(255).round_().to(torch.uint8).to(self.device)
                out.append((x[0:1], x[1:2]))
            self._pairs[res] = out
        return self._pairs[res]

    def engine(self, name: str, options: dict[str, Any]) -> Engine:
        return Engine(self.model, parse_config(options, name=name), device=self.device)

    def outputs(self, engine: Engine, res: tuple[int, int], batch: int = 1) -> torch.Tensor:
        """The engine's frames for every real pair (batched `batch` at a time, cycling pairs), float32 on the CPU."""
        pairs = self.pairs(res)
        outs = []
        for i in range(0, len(pairs), batch):
            chunk = [pairs[(i + j) % len(pairs)] for j in range(batch)]
            out = engine.interpolate(torch.cat([a for a, _ in chunk]), torch.cat([b for _, b in chunk]),
                                     self.plan.timestep)
            outs.append(out[: min(batch, len(pairs) - i)].float().cpu())
        return torch.cat(outs)

    def reference(self, res: tuple[int, int]) -> torch.Tensor:
        if res not in self._refs:
            eng = self.engine(FP32, {})
            self._refs[res] = self.outputs(eng, res)
            del eng
        return self._refs[res]

    def free(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def throughput(call: Callable[[], Any], device: torch.device, seconds: float, latency_s: float) -> tuple[int, float]:
    """(calls, elapsed s) of back-to-back calls for about `seconds`, one synchronisation at the end."""
    n = max(3, int(seconds / max(latency_s, 1e-6)))
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(n):
        call()
    synchronize(device)
    return n, time.perf_counter() - t0


def measure(bench: Bench, rec: Recorder, name: str, options: dict[str, Any], res: tuple[int, int], batch: int = 1,
            n_streams: int = 1, **extra: Any) -> dict[str, Any] | None:
    """Build, time and score one configuration at res; one row, also when it fails (status failed, the error)."""
    plan, dev = bench.plan, bench.device
    try:
        ref = bench.reference(res)  # before the memory peak is taken: FP32 eager's own engine is not counted
        with PeakMemory(dev) as mem:
            engines = [bench.engine(name, options) for _ in range(n_streams)]
            streams = [torch.cuda.Stream(dev) for _ in engines] if n_streams > 1 else [None]
            a, b = bench.pairs(res)[0]
            a, b = a.expand(batch, -1, -1, -1).contiguous(), b.expand(batch, -1, -1, -1).contiguous()
            for s in streams:
                if s is not None:
                    s.wait_stream(torch.cuda.current_stream(dev))  # the inputs were made on the default stream

            def call() -> None:
                for eng, s in zip(engines, streams):
                    if s is None:
                        eng.interpolate(a, b, plan.timestep)
                    else:
                        with torch.cuda.stream(s):
                            eng.interpolate(a, b, plan.timestep)

            t0 = time.perf_counter()
            call()
            synchronize(dev)
            first = time.perf_counter() - t0
            lat = time_callable(call, dev, warmup=plan.warmup, repeats=plan.repeats)
            calls, secs = throughput(call, dev, plan.throughput_s, lat.median)
            quality = agreement(bench.outputs(engines[0], res, batch), ref)
        per_s = calls * batch * n_streams / secs
        applied, skipped = engines[0].applied, engines[0].skipped
        engines.clear()  # their GPU memory goes back before the next configuration (bench.free below)
        return rec.row(name, res, "ran", batch=batch, streams=n_streams, first_call_s=first, **lat.as_dict(),
                       throughput_calls=calls, throughput_s=secs, calls_per_s=per_s, output_fps_2x=2 * per_s,
                       peak_mem_mib=mem.peak_mib, peak_mem_kind=mem.kind, **quality, options=options,
                       applied="; ".join(f"{k}: {v}" for k, v in applied.items()),
                       options_skipped="; ".join(f"{k}: {v}" for k, v in skipped.items()), **extra)
    except Exception as exc:  # noqa: BLE001 - one configuration failing (OOM, unsupported op) is a row, not an end
        log.exception("%s at %s failed", name, res)
        rec.row(name, res, "failed", f"{type(exc).__name__}: {str(exc).strip()[:300]}", batch=batch,
                streams=n_streams, options=options, **extra)
        return None
    finally:
        bench.free()


def _sweep(bench: Bench, rec: Recorder, jobs: list[tuple[str, dict[str, Any], tuple[int, int], int, int]]) -> None:
    """Measure jobs (name, options, res, batch, streams) in order; those the part's time does not reach: skipped."""
    last = 0.0
    for name, options, res, batch, n_streams in jobs:
        if rec.left() < last:
            rec.row(name, res, "skipped", f"not reached: {rec.left():.0f} s of the part's budget left, the last "
                    f"configuration took {last:.0f} s", batch=batch, streams=n_streams, options=options)
            continue
        t0 = time.time()
        measure(bench, rec, name, options, res, batch, n_streams)
        last = time.time() - t0


def part_precisions(bench: Bench, rec: Recorder) -> None:
    """Every configuration at every resolution, batch 1: precisions, TF32, channels_last, CUDA graphs."""
    p = bench.plan
    _sweep(bench, rec, [(n, o, r, 1, 1) for r in p.resolutions for n, o in p.configs.items()])


def part_fp16_4k(bench: Bench, rec: Recorder) -> None:
    """FP16 (and the other half precisions) against FP32 at hires: the warp-coordinate artefact check."""
    p = bench.plan
    assert p.hires is not None, "the runner starts this part only with a hires resolution"
    _sweep(bench, rec, [(n, p.configs[n], p.hires, 1, 1) for n in p.hires_configs])


def part_batch_streams(bench: Bench, rec: Recorder) -> None:
    """The base configuration at every batch size, then with 2 CUDA streams (two engines, one stream each)."""
    p = bench.plan
    opts = p.configs[p.base]
    jobs = [(p.base, opts, r, b, 1) for r in p.resolutions for b in p.batches]
    if bench.device.type == "cuda":
        jobs += [(p.base, opts, r, b, s) for r in p.resolutions for b, s in p.streams]
    else:
        for r in p.resolutions:
            rec.row(p.base, r, "skipped", "2 CUDA streams need a CUDA GPU", streams=2, options=opts)
    _sweep(bench, rec, jobs)


def part_compile(bench: Bench, rec: Recorder) -> None:
    """torch.compile on top of the base configuration: each mode in order while time allows, at the first
    resolution; the mode with the most calls/s then runs at the other resolutions. Compile time is reported."""
    p = bench.plan
    first, best, best_rate, last = p.resolutions[0], None, -1.0, 0.0
    for mode in p.compile_modes:
        name, opts = f"{p.base}+compile-{mode}", {**p.configs[p.base], "compile": True, "compile_mode": mode}
        if rec.left() < 2.5 * last:  # a slower mode compiles longer: try it only with room for it
            rec.row(name, first, "skipped", f"not tried: {rec.left():.0f} s left, {mode} would compile longer than "
                    f"the {last:.0f} s of the previous mode", options=opts, compile_mode=mode)
            continue
        t0 = time.time()
        row = measure(bench, rec, name, opts, first, compile_mode=mode)
        last = time.time() - t0
        if row and row["calls_per_s"] > best_rate and "compile" in row["applied"]:
            best, best_rate = (name, opts, mode), row["calls_per_s"]
    if best is not None:
        _sweep(bench, rec, [(best[0], best[1], r, 1, 1) for r in p.resolutions[1:]])


def _best(plan: Plan) -> dict[str, Any] | None:
    """The row with the most calls/s at the first resolution whose PSNR vs FP32 reaches quality_db."""
    rows = [json.loads(ln) for ln in (Path(plan.work) / "rows.jsonl").read_text().splitlines() if ln.strip()]
    first = f"{plan.resolutions[0][0]}x{plan.resolutions[0][1]}"
    ok = [r for r in rows if r["status"] == "ran" and r["resolution"] == first
          and r.get("psnr_vs_fp32_db", 0) >= plan.quality_db]
    return max(ok, key=lambda r: r["calls_per_s"]) if ok else None


def part_profile(bench: Bench, rec: Recorder) -> None:
    """The profiler's top-5 kernels (self device time; CPU ops on a CPU) of the best configuration so far.

    Profiled without CUDA graphs (a replayed graph hides its kernels from some profiler versions; the graph
    replays the same kernels) and without torch.compile (this part runs before the compile part, whose time is
    the least predictable).
    """
    p = bench.plan
    best = _best(p)
    if best is None:
        rec.row("best", p.resolutions[0], "skipped", "no configuration ran at FP32 quality before this part")
        return
    dropped = ("cuda_graphs", "static_buffers", "compile", "compile_mode")
    opts = {k: v for k, v in best["options"].items() if k not in dropped}
    eng = bench.engine(best["config"], opts)
    a, b = bench.pairs(p.resolutions[0])[0]
    a, b = a.expand(best["batch"], -1, -1, -1).contiguous(), b.expand(best["batch"], -1, -1, -1).contiguous()
    for _ in range(3):
        eng.interpolate(a, b, p.timestep)
    synchronize(bench.device)
    acts = [torch.profiler.ProfilerActivity.CPU]
    if bench.device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(p.profile_calls):
            eng.interpolate(a, b, p.timestep)
        synchronize(bench.device)
    kind = "device" if bench.device.type == "cuda" else "cpu"
    events = [(e.key, e.count, float(getattr(e, f"self_{kind}_time_total", 0.0))) for e in prof.key_averages()]
    events = [e for e in events if e[2] > 0]
    total = sum(t for _, _, t in events) or 1.0
    top = sorted(events, key=lambda e: -e[2])[:5]
    with open(Path(p.work) / "kernels.jsonl", "w") as fh:
        for rank, (key, count, us) in enumerate(top, 1):
            fh.write(json.dumps({"rank": rank, "kernel": key[:240], "calls": count, "self_time_ms": us / 1e3,
                                 "per_model_call_us": us / p.profile_calls, "share_pct": 100 * us / total,
                                 "time_kind": f"self {kind} time", "config": best["config"],
                                 "profiled_options": opts, "resolution": best["resolution"],
                                 "batch": best["batch"], "model_calls": p.profile_calls}) + "\n")
    rec.row(best["config"], p.resolutions[0], "ran", "profiled without CUDA graphs (they replay the same kernels)",
            batch=best["batch"], profiled_calls=p.profile_calls, kernels=len(top), options=opts)


PART_FUNCTIONS: dict[str, Callable[[Bench, Recorder], None]] = {
    "precisions": part_precisions,
    "fp16_4k": part_fp16_4k,
    "batch_streams": part_batch_streams,
    "compile": part_compile,
    "profile": part_profile,
}


def run_part(work: str | Path, part: str, deadline: float) -> None:
    """Run one part of the plan in `work` (called in its own process by the runner)."""
    plan = Plan.load(Path(work) / "plan.json")
    if part not in PART_FUNCTIONS:
        raise ValueError(f"unknown part {part!r}; parts: {list(PART_FUNCTIONS)}")
    t0 = time.time()
    bench = Bench(plan)
    log.info("part %s: model and %d real pairs loaded in %.1f s", part, len(bench.inputs.pairs), time.time() - t0)
    PART_FUNCTIONS[part](bench, Recorder(plan, part, deadline))
    log.info("part %s: done in %.1f s", part, time.time() - t0)
