"""Optimisation study (notebook 02): every engine configuration timed side by side on real frames.

For each resolution: the FP32 eager baseline and every configuration are warmed up, scored against
the baseline's output on real clip frame pairs (PSNR, SSIM, max/mean abs difference), then timed in
interleaved rounds (one call of each configuration per round), so slow drifts of a shared machine
hit all of them alike. Speedups are baseline median / configuration median from the same run.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .engine import Engine, EngineConfig, parse_config
from .models import RIFE
from .profiling import PeakMemory, Timing, synchronize, time_callable

log = logging.getLogger(__name__)

__all__ = [
    "StudyConfig",
    "study_configs",
    "real_pairs",
    "run_study",
    "speedup_table",
    "best_rows",
    "profile_engine",
    "op_categories",
    "claims_table",
    "plot_speedups",
    "plot_quality_vs_speed",
]

#: Figures of report 000 (RIFE 4.6, RTX 3090, resolution not stated): claims, not measurements of ours.
REPORT_000_CLAIMS: list[dict[str, Any]] = [
    {"configuration": "Baseline FP32", "claimed_fps": "27.28-31.17", "claimed_ms": "32.08-36.65",
     "claimed_memory_mb": "814", "claimed_speedup": "1.00x", "status in report": "measured (reference)"},
    {"configuration": "Optimised FP32", "claimed_fps": "37.59", "claimed_ms": "",
     "claimed_memory_mb": "750", "claimed_speedup": "1.35x", "status in report": "'verified'"},
    {"configuration": "Baseline FP16", "claimed_fps": "32-38", "claimed_ms": "",
     "claimed_memory_mb": "450", "claimed_speedup": "~1.2x", "status in report": "table only, no run shown"},
    {"configuration": "Optimised FP16", "claimed_fps": "45-55 (text: 50-60)", "claimed_ms": "",
     "claimed_memory_mb": "400", "claimed_speedup": "1.8-2.0x", "status in report": "'estimated', never measured"},
    {"configuration": "FP16 quality", "claimed_fps": "", "claimed_ms": "",
     "claimed_memory_mb": "", "claimed_speedup": "",
     "status in report": "PSNR 40-50 dB, SSIM 0.995-0.999, max diff 0.051, avg diff 0.040 (units not stated)"},
]


@dataclass
class StudyConfig:
    """One configuration of the study: the engine options and the resolutions it runs at."""

    config: EngineConfig
    resolutions: list[str] | None = None  # None: every resolution of the study

    @property
    def name(self) -> str:
        return self.config.name


def _config_entries(configs: Any) -> list[tuple[str, dict[str, Any]]]:
    """(name, options dict) pairs from any accepted form of the `configs` parameter."""
    from .engine import parse_options

    if isinstance(configs, dict):
        items = list(configs.items())
    elif isinstance(configs, (list, tuple)):
        items = []
        for entry in configs:
            if isinstance(entry, str):
                parts = re.split(r"[:=]", entry, maxsplit=1)
                if len(parts) != 2 or not parts[0].strip():
                    raise ValueError(f"config entry {entry!r} must look like 'NAME: option, option, key:value'")
                items.append((parts[0].strip(), parts[1]))
            elif isinstance(entry, dict) and entry:
                items.extend(entry.items())  # {'NAME': 'options'}, as YAML reads 'NAME: options
            else:
                raise ValueError(f"config entry {entry!r} must be a string 'NAME: options' or a one-key mapping")
    elif isinstance(configs, str):
        return _config_entries([configs])
    else:
        raise ValueError("configs must be a list of 'NAME: options' strings or a mapping NAME -> options")
    out = []
    for name, opts in items:
        if opts is None:
            opts = {}
        if isinstance(opts, str):
            opts = parse_options(opts)
        if not isinstance(opts, dict):
            raise ValueError(f"options of config {name!r} must be a string or mapping, got {opts!r}")
        out.append((str(name), dict(opts)))
    return out


def study_configs(configs: Any, baseline: str = "fp32-eager") -> list[StudyConfig]:
    """Parse params' `configs`: 'NAME: options' strings (or a mapping NAME -> options).

    Options (see rifelab.engine.parse_options) are engine switches plus `resolutions` (a list, or
    'resolutions:A+B' in strings) limiting
    where a config runs. The baseline comes first and must be plain FP32 eager.
    """
    entries = _config_entries(configs)
    if not entries:
        raise ValueError("configs is empty: list at least the FP32 eager baseline (see params.yaml)")
    names = [n for n, _ in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"config names must be unique; repeated: {dup}")
    if baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not among the configs ({', '.join(names)}); add it")
    out: list[StudyConfig] = []
    for name, opts in entries:
        res = opts.pop("resolutions", None)
        if isinstance(res, str):
            res = [r.strip() for r in res.split("+") if r.strip()]
        if res is not None and (not isinstance(res, list) or not res):
            raise ValueError(f"resolutions of config {name!r} must be like 640x360 or 640x360+1280x720, got {res!r}")
        cfg = parse_config(opts, name=name)
        out.append(StudyConfig(cfg, [str(r) for r in res] if res else None))
    base = next(c for c in out if c.name == baseline)
    if base.config.options() != EngineConfig(name=baseline).options():
        raise ValueError(f"baseline {baseline!r} must be plain fp32 eager (all options default), got {base.config.options()}")
    if base.resolutions is not None:
        raise ValueError("the baseline must run at every resolution (remove its resolutions option)")
    return [base] + [c for c in out if c.name != baseline]


def real_pairs(
    clip: str, count: int, width: int, height: int, start: int = 0, stride: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` pairs of consecutive real clip frames (every `stride` frames from `start`) resized to width x height.

    Returns two (count,3,H,W) float tensors in [0, 1] (bicubic resize, clamped).
    """
    from .data import load_clip, to_tensor

    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    frames = load_clip(clip, max_frames=start + (count - 1) * stride + 2)
    idx = [start + i * stride for i in range(count)]
    if idx[-1] + 1 >= len(frames):
        raise ValueError(f"clip {clip!r} has {len(frames)} frames; {count} pairs every {stride} frames from {start} do not fit")
    x = to_tensor(frames)
    a, b = x[idx], x[[i + 1 for i in idx]]
    if a.shape[-2:] != (height, width):
        a = F.interpolate(a, size=(height, width), mode="bicubic", align_corners=False).clamp_(0, 1)
        b = F.interpolate(b, size=(height, width), mode="bicubic", align_corners=False).clamp_(0, 1)
    return a, b


def _quality(pred: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    from .metrics import error_stats, psnr, ssim

    p = psnr(pred, ref)
    s = ssim(pred, ref)
    e = error_stats(pred, ref)
    return {
        "psnr_vs_fp32_db": float(np.mean(np.minimum(p, 99.0))),  # identical uint8 frames: capped at 99 dB
        "psnr_vs_fp32_min_db": float(np.min(np.minimum(p, 99.0))),
        "ssim_vs_fp32": float(np.mean(s)),
        "max_abs_diff": float(np.max(e["max_abs"])),
        "mean_abs_diff": float(np.mean(e["mae"])),
    }


def run_study(
    model: RIFE,
    configs: list[StudyConfig],
    resolutions: list[str],
    device: str | torch.device,
    warmup: int = 1,
    repeats: int = 5,
    clip: str = "bigbuckbunny",
    quality_pairs: int = 2,
    timestep: float = 0.5,
    scale: float = 1.0,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, Engine]]:
    """Time and score every configuration at every resolution; returns (rows, engines by name).

    The first configuration is the baseline. Quality is measured against the baseline's output on
    `quality_pairs` real pairs; timing uses the first pair. `first_call_s` includes compilation or
    CUDA-graph capture.
    """
    from tqdm.auto import tqdm

    from .bench import parse_resolution

    dev = torch.device(device)
    engines = {c.name: Engine(model, c.config, device=dev) for c in configs}
    rows: list[dict[str, Any]] = []
    total = sum(1 for r in resolutions for c in configs if c.resolutions is None or r in c.resolutions)
    bar = tqdm(total=total * (repeats + 1), desc="optimisation study", disable=not progress)
    for res in resolutions:
        w, h = parse_resolution(res)
        a, b = real_pairs(clip, quality_pairs, w, h)
        a, b = a.to(dev), b.to(dev)
        active = [c for c in configs if c.resolutions is None or res in c.resolutions]
        ref: torch.Tensor | None = None
        info: dict[str, dict[str, Any]] = {}
        for c in active:
            eng = engines[c.name]
            bar.set_postfix_str(f"{res} {c.name} warm-up")
            t0 = time.perf_counter()
            eng.interpolate(a[:1], b[:1], timestep, scale)
            synchronize(dev)
            first = time.perf_counter() - t0
            with PeakMemory(dev) as mem:
                for _ in range(warmup):
                    eng.interpolate(a[:1], b[:1], timestep, scale)
                outs = torch.cat([eng.interpolate(a[i : i + 1], b[i : i + 1], timestep, scale)
                                  for i in range(a.shape[0])]).float().cpu()
            if ref is None:
                ref = outs
            info[c.name] = {"first_call_s": first, "peak_mem_mib": mem.peak_mib, "peak_mem_kind": mem.kind,
                            "mem_growth_mib": mem.delta_bytes / 2**20, **_quality(outs, ref)}
            bar.update(1)
        samples: dict[str, list[float]] = {c.name: [] for c in active}
        for r in range(repeats):
            for c in active:
                eng = engines[c.name]
                bar.set_postfix_str(f"{res} round {r + 1}/{repeats}")
                t = time_callable(lambda: eng.interpolate(a[:1], b[:1], timestep, scale), dev, warmup=0, repeats=1)
                samples[c.name].extend(t.samples)
            bar.update(len(active))
        base_med = float(np.median(samples[configs[0].name]))
        for c in active:
            eng = engines[c.name]
            tm = Timing.from_samples(samples[c.name], warmup=warmup)
            rows.append({
                "config": c.name, "resolution": f"{w}x{h}", "width": w, "height": h,
                **tm.as_dict(),
                "speedup": base_med / tm.median,
                "speedup_p10": base_med / tm.p90, "speedup_p90": base_med / tm.p10,
                **info[c.name],
                "dtype": str(eng.dtype).replace("torch.", "") if eng.autocast_dtype is None
                else f"autocast-{str(eng.autocast_dtype).replace('torch.', '')}",
                "applied": ", ".join(sorted(eng.applied)),
                "skipped": "; ".join(f"{k}: {v}" for k, v in eng.skipped.items()),
            })
    bar.close()
    return pd.DataFrame(rows), engines


def speedup_table(df: pd.DataFrame) -> pd.DataFrame:
    """config x resolution table of speedups over the FP32 eager baseline (same run)."""
    t = df.pivot_table(index="config", columns="resolution", values="speedup", sort=False)
    t.index.name = "config"
    return t


def best_rows(df: pd.DataFrame, resolution: str, dtype_prefix: str | None = None) -> pd.Series | None:
    """Fastest row at `resolution` (optionally only configs whose dtype starts with `dtype_prefix`)."""
    sub = df[df["resolution"] == resolution]
    if dtype_prefix is not None:
        sub = sub[sub["dtype"].str.contains(dtype_prefix)]
    if sub.empty:
        return None
    return sub.loc[sub["median_ms"].idxmin()]


_CATEGORIES = [
    # inductor's generated code: on CPU its kernels run inside the "Call CompiledFxGraph" event (self time)
    ("compiled graph (inductor code: fused ops and the convolutions it calls)",
     ("compiledfxgraph", "cpp_fused", "triton_", "compiled region")),
    ("convolution", ("conv", "mkldnn_convolution", "cudnn", "gemm", "winograd", "implicit_gemm", "sm80", "sm90",
                     "xmma", "cutlass")),
    ("activation (PReLU)", ("prelu",)),
    ("resampling (interpolate, grid_sample)", ("upsample", "grid_sampler", "grid_sample", "interpolate")),
    ("layout / copies / concat", ("copy", "cat", "contiguous", "to_copy", "clone", "fill", "empty", "pad",
                                 "permute", "memcpy", "memset", "_to", "stack")),
    ("elementwise (add, mul, sigmoid)", ("add", "mul", "div", "sigmoid", "sub", "neg", "elementwise", "vectorized")),
]


def _category(name: str) -> str:
    low = name.lower()
    for cat, keys in _CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "other"


def profile_engine(
    engine: Engine, img0: torch.Tensor, img1: torch.Tensor, timestep: float = 0.5, scale: float = 1.0, top: int = 12
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """torch.profiler of one warm call: (top operators by self time, time per operator category).

    On CUDA the device (kernel) time is used, on CPU the self CPU time of every recorded event (self
    times do not overlap; a torch.compile'd graph's fused kernels show up as its "Call CompiledFxGraph").
    """
    from torch.profiler import ProfilerActivity, profile

    engine.interpolate(img0, img1, timestep, scale)  # warm
    acts = [ProfilerActivity.CPU]
    cuda = engine.device.type == "cuda"
    if cuda:
        acts.append(ProfilerActivity.CUDA)
    with profile(activities=acts) as prof:
        engine.interpolate(img0, img1, timestep, scale)
        synchronize(engine.device)
    rows = []
    for ev in prof.key_averages():
        if cuda:
            t_us = getattr(ev, "self_device_time_total", None)
            if t_us is None:
                t_us = getattr(ev, "self_cuda_time_total", 0)
        else:
            t_us = ev.self_cpu_time_total
        if t_us and t_us > 0:
            rows.append({"operator": ev.key, "calls": ev.count, "self_ms": t_us / 1e3})
    ops = pd.DataFrame(rows, columns=["operator", "calls", "self_ms"])
    if ops.empty:
        return ops, pd.DataFrame(columns=["category", "self_ms", "share_pct"])
    total = ops["self_ms"].sum()
    ops = ops.assign(share_pct=100 * ops["self_ms"] / total).sort_values("self_ms", ascending=False)
    cats = (ops.assign(category=ops["operator"].map(_category)).groupby("category", as_index=False)["self_ms"].sum()
            .sort_values("self_ms", ascending=False))
    cats["share_pct"] = 100 * cats["self_ms"] / total
    return ops.head(top).reset_index(drop=True), cats.reset_index(drop=True)


def op_categories() -> list[str]:
    """Names of the operator categories used by `profile_engine`."""
    return [c for c, _ in _CATEGORIES] + ["other"]


def claims_table(df: pd.DataFrame | None = None, resolution: str | None = None) -> pd.DataFrame:
    """Report 000's figures (labelled as claims) beside our measured speedups for the closest configurations."""
    claims = pd.DataFrame(REPORT_000_CLAIMS)
    claims.insert(0, "source", "CLAIM: report 000 (RIFE 4.6, RTX 3090)")
    if df is None or df.empty:
        return claims
    sub = df if resolution is None else df[df["resolution"] == resolution]
    ours = []
    for conf in claims["configuration"]:
        if "FP32" in conf and "Baseline" in conf:
            pick = sub[sub["config"] == sub["config"].iloc[0]]
        elif "FP32" in conf:
            pick = sub[sub["dtype"] == "float32"].nlargest(1, "speedup")
        elif "Baseline FP16" in conf:
            fp16 = sub[sub["dtype"] == "float16"]
            pick = fp16.loc[fp16["applied"].str.count(",").sort_values(kind="stable").index[:1]]
        elif "FP16" in conf and "quality" not in conf:
            pick = sub[sub["dtype"].str.contains("16")].nlargest(1, "speedup")
        else:
            pick = sub[sub["dtype"].str.contains("16")].nlargest(1, "speedup")
        if pick.empty:
            ours.append("")
            continue
        r = pick.iloc[0]
        if "quality" in conf:
            ours.append(f"{r['config']}: PSNR {r['psnr_vs_fp32_db']:.1f} dB, SSIM {r['ssim_vs_fp32']:.4f}, "
                        f"max diff {r['max_abs_diff']:.3f}, mean diff {r['mean_abs_diff']:.4f} (vs FP32, [0,1])")
        else:
            ours.append(f"{r['config']}: {r['fps']:.2f} FPS, {r['speedup']:.2f}x @ {r['resolution']}")
    claims["measured here (this device, RIFE 4.0)"] = ours
    return claims


def plot_speedups(df: pd.DataFrame, title: str = "") -> Any:
    """Grouped bar chart: speedup over FP32 eager per configuration and resolution (p10-p90 whiskers)."""
    import matplotlib.pyplot as plt

    res = list(dict.fromkeys(df["resolution"]))
    names = list(dict.fromkeys(df["config"]))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names) + 2), 4))
    width = 0.8 / max(1, len(res))
    for j, r in enumerate(res):
        sub = df[df["resolution"] == r].set_index("config")
        xs, ys, lo, hi = [], [], [], []
        for i, n in enumerate(names):
            if n in sub.index:
                row = sub.loc[n]
                xs.append(i + (j - (len(res) - 1) / 2) * width)
                ys.append(row["speedup"])
                lo.append(row["speedup"] - row["speedup_p10"])
                hi.append(row["speedup_p90"] - row["speedup"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=r)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel("speedup over FP32 eager (x)")
    ax.set_title(title or "Speedup over the FP32 eager baseline (same run)")
    ax.legend(title="resolution")
    fig.tight_layout()
    return fig


def plot_quality_vs_speed(df: pd.DataFrame, title: str = "") -> Any:
    """Scatter: speedup (x) against PSNR vs the FP32 output (y, identical output plotted at 99 dB)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    markers = ["o", "s", "^", "D", "v", "P"]
    for j, (r, sub) in enumerate(df.groupby("resolution", sort=False)):
        ax.scatter(sub["speedup"], sub["psnr_vs_fp32_db"], marker=markers[j % len(markers)], label=r)
        for _, row in sub.iterrows():
            ax.annotate(row["config"], (row["speedup"], row["psnr_vs_fp32_db"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.axvline(1.0, color="k", lw=0.6)
    ax.set_xlabel("speedup over FP32 eager (x)")
    ax.set_ylabel("PSNR vs FP32 eager output (dB; 99 = identical)")
    ax.set_title(title or "Quality against speed")
    ax.legend(title="resolution")
    fig.tight_layout()
    return fig


def target_verdict(value: float, target: float) -> str:
    """'met' / 'missed' with the numbers, for the notebook's text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "not measured"
    return f"{'met' if value >= target else 'missed'} ({value:.2f} vs target {target:g})"
