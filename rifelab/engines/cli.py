"""Command-line options shared by every command that runs a model, declared once, and `rifelab export`.

`add_model_options` (--device, --checkpoint, --threads), `add_scale_option` and `add_backend_options` (--backend,
--dtype, the PyTorch engine's switches, --calibration-pairs) are what `bench`, `interpolate`, `batch`, `export`,
`prune` and `info` declare; `ModelSpec.from_args` reads them back into a spec.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from rifelab.engines.export import DEFAULT_OPSET, check_export_target, export_onnx, verify_onnx
from rifelab.engines.spec import BACKENDS, ModelSpec, load_checkpoint
from rifelab.engines.torch_engine import AUTOCAST_DTYPES, COMPILE_MODES, DTYPES
from rifelab.measure.benchmark import parse_resolution
from rifelab.rife.contract import padded_size
from rifelab.rife.network import VALID_SCALES, check_scale

__all__ = ["add_device_option", "add_checkpoint_option", "add_threads_option", "add_scale_option",
           "add_model_options", "add_backend_options", "add_export_parser"]

def add_device_option(group: argparse._ActionsContainer) -> None:
    """--device."""
    group.add_argument("--device", default="auto", help="auto (default: cuda, then mps, then cpu), cpu, cuda or mps")


def add_checkpoint_option(group: argparse._ActionsContainer) -> None:
    """--checkpoint."""
    group.add_argument("--checkpoint", default=None, help="RIFE 4.x checkpoint (default: the bundled RIFE 4.0 weights)")


def add_threads_option(group: argparse._ActionsContainer) -> None:
    """--threads."""
    group.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def add_scale_option(group: argparse._ActionsContainer, default: float | None = 1.0, note: str = "") -> None:
    """--scale (`note` adds what the command does with it)."""
    shown = "default 1" if default in (None, 1.0) else f"default {default:g}"
    group.add_argument("--scale", type=float, default=default, metavar="S",
                       help=f"flow scale, one of {', '.join(f'{s:g}' for s in VALID_SCALES)} ({shown}{note}): smaller "
                       "is faster and suits large motion in high-resolution frames")


def add_model_options(group: argparse._ActionsContainer) -> None:
    """--device, --checkpoint, --threads: which weights run where."""
    add_device_option(group)
    add_checkpoint_option(group)
    add_threads_option(group)


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """--backend, --dtype (its precision), --calibration-pairs and the PyTorch engine's switches."""
    g = parser.add_argument_group("engine options (rifelab.engines.torch_engine)")
    g.add_argument("--dtype", default="fp32", choices=[*DTYPES, "int8"],
                   help="fp32 (default), fp16, bf16 (weights and activations) or autocast (mixed precision); "
                   "int8 with --backend openvino")
    g.add_argument("--autocast-dtype", default="auto", choices=list(AUTOCAST_DTYPES),
                   help="with --dtype autocast: auto (fp16 on CUDA/MPS, bf16 on CPU), fp16 or bf16")
    g.add_argument("--channels-last", action="store_true", help="NHWC memory format for weights and inputs")
    g.add_argument("--cudnn-benchmark", action="store_true", help="cuDNN autotuning per shape (CUDA only)")
    g.add_argument("--tf32", action="store_true", help="TF32 for float32 convolutions/matmuls (CUDA, Ampere+)")
    g.add_argument("--compile", action="store_true", help="torch.compile the network (slow first call)")
    g.add_argument("--compile-mode", default="default", choices=list(COMPILE_MODES), help="torch.compile mode")
    g.add_argument("--cuda-graphs", action="store_true", help="capture and replay a CUDA graph per shape (CUDA)")
    g.add_argument("--static-buffers", action="store_true", help="preallocated padded input buffers, reused")
    g.add_argument("--cached-grids", action="store_true", help="warp grids precomputed once per shape")
    g.add_argument("--no-inference-mode", action="store_true", help="torch.no_grad instead of torch.inference_mode")
    g = parser.add_argument_group("backend (rifelab.engines.backends)")
    g.add_argument("--backend", default="torch", choices=list(BACKENDS),
                   help="torch (default: the PyTorch engine with the switches above), onnxruntime (CPU, or its CUDA "
                   "provider on --device cuda), openvino (CPU; --dtype fp32, bf16 on native-bf16 CPUs, int8 via NNCF) "
                   "or tensorrt (CUDA, pip install 'rifelab[cuda]'); an unavailable one is an error saying why")
    g.add_argument("--calibration-pairs", type=int, default=8, metavar="K",
                   help="openvino int8: real frame pairs for calibration, from frames no quality evaluation uses "
                   "(default 8)")


# ----------------------------------------------------------------------------- rifelab export


def _cmd_export(args: argparse.Namespace) -> int:
    w, h = parse_resolution(args.resolution)
    out = check_export_target(args.output or f"rife_{w}x{h}_s{args.scale:g}{'_dyn' if args.dynamic else ''}.onnx")
    model = load_checkpoint(replace(ModelSpec.from_args(args), device="cpu"))
    export_onnx(model, out, w, h, batch=args.batch, scale=args.scale, ensemble=args.ensemble, dynamic=args.dynamic,
                opset=args.opset)
    ph, pw = padded_size(h, w, model.padding_multiple(check_scale(args.scale)))
    print(f"exported {out}: inputs img0, img1 (N,3,{ph},{pw}), t (N,1,{ph},{pw}); output frame; opset {args.opset}"
          f"{'; N, H, W dynamic' if args.dynamic else '; static shape'}")
    if args.no_verify:
        return 0
    sizes = [(w, h)]
    if args.dynamic:  # a dynamic graph is checked at a second size too
        sizes.append((max(64, w // 2), max(64, h // 2)))
    worst = None
    for vw, vh in sizes:
        rep = verify_onnx(model, out, vw, vh, clip=args.clip)
        print(f"verified on real frames ({rep['clip']} pairs {rep['pairs']}, {rep['resolution']}, ONNX Runtime CPU vs "
              f"PyTorch): max abs diff {rep['max_abs_diff']:.3g}, mean abs diff {rep['mean_abs_diff']:.3g}, "
              f"PSNR {rep['psnr_db']:.1f} dB")
        worst = rep if worst is None or rep["max_abs_diff"] > worst["max_abs_diff"] else worst
    if worst is not None and worst["max_abs_diff"] > args.tolerance:
        print(f"rifelab export: error: max abs diff {worst['max_abs_diff']:.3g} exceeds --tolerance {args.tolerance:g}")
        return 1
    return 0


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `export` subcommand to `rifelab`'s subparsers; returns its parser."""
    p = subparsers.add_parser(
        "export", help="export the flow network to ONNX and check it against PyTorch on real frames",
        description="Export RIFE's flow network for one frame size and flow scale to ONNX (static shape by default; "
        "--dynamic leaves batch, height and width symbolic). The graph takes padded frames img0, img1 (N,3,H,W) and a "
        "timestep plane t (N,1,H,W) and returns the padded middle frame. The export is then run with ONNX Runtime on "
        "real frames of a bundled clip and compared with PyTorch (max abs diff, PSNR).")
    p.add_argument("--resolution", default="1280x720", metavar="WxH", help="frame size, width x height (default 1280x720)")
    p.add_argument("--output", "-o", default=None, help="ONNX file to write (default: rife_<W>x<H>_s<scale>.onnx)")
    add_checkpoint_option(p)
    add_scale_option(p, note="; baked into the graph")
    p.add_argument("--ensemble", action="store_true", help="bake in the flow ensemble (swapped pair averaged)")
    p.add_argument("--batch", type=int, default=1, help="batch size of a static graph (default 1)")
    p.add_argument("--dynamic", action="store_true", help="symbolic batch, height and width (ONNX Runtime, OpenVINO)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET}, at least 16)")
    p.add_argument("--clip", default="bigbuckbunny", help="bundled clip whose frames verify the export")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="fail when the max abs diff vs PyTorch exceeds this (values in [0, 1]; default 1e-3)")
    p.add_argument("--no-verify", action="store_true", help="skip the check on real frames")
    p.set_defaults(func=_cmd_export)
    return p
