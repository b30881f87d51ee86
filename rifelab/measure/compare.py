"""`rifelab bench --compare`: several configurations on the same frames, isolated and interleaved.

A configuration is written `BACKEND[:PRECISION][+SWITCH[+SWITCH...]]`, e.g. `torch`, `torch:bf16+channels_last`,
`onnxruntime`, `openvino:int8`, `torch+compile+compile_mode=max-autotune`. Each runs in its own worker process
(`rifelab.measure.harness`); PyTorch FP32 eager is the baseline (added first when not given) and the reference of
the PSNR column. The result rows give median, p10-p90, the speedup over the baseline with a paired bootstrap 95%
interval, PSNR against the FP32 eager output and the worker id; the run carries its load record and, if its checks
still failed after the re-measurements, the `noisy` flag with the reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from rifelab.engines.backends import BACKENDS, CALIBRATION_RANGES, PRECISIONS
from rifelab.engines.torch_engine import parse_config, parse_options
from rifelab.frames.images import to_tensor
from rifelab.measure.benchmark import agreement, parse_resolution, real_frame_pair
from rifelab.measure.harness import Harness, InterleavedTiming, NoiseLimits
from rifelab.measure.profiling import speedup_ci
from rifelab.measure.workloads import FrameInputs, InterpolateWorkload, ModelSpec

__all__ = ["BASELINE", "CompareConfig", "parse_compare_config", "Comparison", "compare"]

BASELINE = "torch"  # PyTorch FP32 eager


@dataclass(frozen=True)
class CompareConfig:
    """One configuration of a comparison, as written on the command line."""

    text: str
    backend: str
    precision: str
    options: tuple = ()

    def spec(self, device: str, threads: int | None, checkpoint: str | None, width: int, height: int,
             calibration_pairs: int) -> ModelSpec:
        cal = None
        if self.precision == "int8":  # calibrated at the timed size, on frames no rifelab evaluation scores
            cal = (calibration_pairs, width, height, tuple((k, tuple(v)) for k, v in CALIBRATION_RANGES.items()))
        return ModelSpec.make(dict(self.options), backend=self.backend, precision=self.precision, device=device,
                              threads=threads, checkpoint=checkpoint, name=self.text, calibration=cal)


def parse_compare_config(text: str) -> CompareConfig:
    """'openvino:int8' -> CompareConfig; errors say what is allowed."""
    head, *switches = [t.strip() for t in str(text).split("+")]
    backend, _, precision = head.partition(":")
    backend, precision = backend or "torch", precision or "fp32"
    if backend not in BACKENDS:
        raise ValueError(f"--compare {text!r}: backend {backend!r} is not one of {', '.join(BACKENDS)} "
                         "(write BACKEND[:PRECISION][+SWITCH...], e.g. openvino:int8 or torch:bf16+channels_last)")
    if precision not in PRECISIONS[backend]:
        raise ValueError(f"--compare {text!r}: {backend} runs {', '.join(PRECISIONS[backend])}, not {precision!r}")
    options = parse_options(",".join(switches)) if switches else {}
    if backend != "torch" and options:
        raise ValueError(f"--compare {text!r}: switches ({', '.join(options)}) are PyTorch engine switches; "
                         f"backend {backend} takes none")
    if backend == "torch":
        if "dtype" in options:
            raise ValueError(f"--compare {text!r}: give the precision after a colon (torch:bf16), not as a switch")
        parse_config({"dtype": precision, **options})  # unknown switches: an error naming the valid ones
    return CompareConfig(text, backend, precision, tuple(sorted(options.items())))


@dataclass
class Comparison:
    """Rows per resolution (DataFrame), the timing of each resolution (load record, checks), and what could not run."""

    rows: pd.DataFrame
    timings: dict[str, InterleavedTiming] = field(default_factory=dict)

    @property
    def noisy(self) -> bool:
        return any(t.noisy for t in self.timings.values())


def _frames(resolution: str | None, frames: tuple[np.ndarray, np.ndarray] | None) -> tuple[torch.Tensor, torch.Tensor]:
    if frames is None:
        w, h = parse_resolution(resolution or "1280x720")
        return real_frame_pair(w, h)
    a, b = to_tensor(frames[0]), to_tensor(frames[1])
    if resolution is not None:
        w, h = parse_resolution(resolution)
        a, b = (F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False).clamp_(0, 1) for x in (a, b))
    return a, b


def compare(
    configs: Sequence[str],
    resolutions: Sequence[str | None] = (None,),
    frames: tuple[np.ndarray, np.ndarray] | None = None,
    device: str = "cpu",
    threads: int | None = None,
    checkpoint: str | None = None,
    scale: float = 1.0,
    warmup: int = 2,
    rounds: int = 10,
    limits: NoiseLimits | None = None,
    calibration_pairs: int = 8,
    progress: bool = False,
) -> Comparison:
    """Time `configs` side by side on `frames` (two uint8 H,W,3 images) or a real clip pair, per resolution.

    A resolution of None means the frames' own size (1280x720 for the bundled pair). INT8 configurations are
    calibrated at each resolution (one worker per configuration and resolution).
    """
    parsed = [parse_compare_config(c) for c in configs]
    if len({c.text for c in parsed}) != len(parsed):
        raise ValueError(f"--compare lists a configuration twice: {list(configs)}")
    base = next((c for c in parsed if c.backend == "torch" and c.precision == "fp32" and not c.options), None)
    if base is None:
        base = parse_compare_config(BASELINE)
        parsed.insert(0, base)
    parsed = [base] + [c for c in parsed if c is not base]
    limits = limits or NoiseLimits()
    rows: list[dict[str, Any]] = []
    timings: dict[str, InterleavedTiming] = {}
    for res in resolutions:
        a, b = _frames(res, frames)
        h, w = a.shape[-2:]
        size = f"{w}x{h}"
        workloads = {c.text: InterpolateWorkload(c.spec(device, threads, checkpoint, w, h, calibration_pairs),
                                                 0.5, scale) for c in parsed}
        with Harness.isolated(workloads, progress) as hz:
            if base.text in hz.stopped:
                raise RuntimeError(f"the baseline {base.text} could not be built: {hz.stopped[base.text]}")
            hz.prepare({n: FrameInputs.from_tensors([(a, b)]) for n in workloads})
            t = timings[size] = hz.measure_checked(limits, warmup=warmup, rounds=rounds, baseline=base.text)
            ref = torch.from_numpy(hz.outputs(base.text)[0]["pairs"])
            for c in parsed:
                row: dict[str, Any] = {"config": c.text, "backend": c.backend, "precision": c.precision,
                                       "resolution": size}
                if c.text not in t.timings:
                    rows.append({**row, "status": "not run", "reason": t.stopped.get(c.text, "")})
                    continue
                tm = t.timings[c.text]
                ratio, lo, hi = speedup_ci(t.timings[base.text], tm, paired=True)
                out = torch.from_numpy(hz.outputs(c.text)[0]["pairs"])
                rows.append({**row, "status": "ran", "reason": "", "worker": t.workers[c.text], **tm.as_dict(),
                             "speedup": ratio, "speedup_ci95_low": lo, "speedup_ci95_high": hi,
                             "psnr_vs_fp32_db": agreement(out, ref)["psnr_vs_fp32_db"], "noisy": t.noisy})
    return Comparison(pd.DataFrame(rows), timings)
