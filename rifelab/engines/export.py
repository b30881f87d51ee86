"""ONNX export of the RIFE flow network, checked on real frames.

    from rifelab.export import export_onnx, verify_onnx
    path = export_onnx(load_rife(), "rife40_1280x720.onnx", 1280, 720)     # static shape, opset 17
    verify_onnx(load_rife(), path)    # {'max_abs_diff': ..., 'psnr_db': ...} vs PyTorch, real frames

The graph takes padded frames (height and width a multiple of 64/scale, as `RIFE.prepare` pads
them) and a timestep plane, and returns the padded middle frame: inputs `img0`, `img1` (N,3,H,W),
`t` (N,1,H,W), output `frame` (N,3,H,W), all float32. The flow scale and `ensemble` are baked in.
`dynamic=True` leaves N, H and W symbolic (ONNX Runtime and OpenVINO run such a graph; TensorRT
needs an optimisation profile, so static is the default).
"""

from __future__ import annotations

import copy
import io
import logging
import os
import re
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from rifelab.measure.benchmark import parse_resolution, real_frame_pair
from rifelab.measure.metrics import error_stats
from rifelab.publish.results import atomic_path, refuse_link
from rifelab.rife.model import RIFE
from rifelab.rife.contract import padded_size
from rifelab.rife.network import check_scale

log = logging.getLogger(__name__)

__all__ = [
    "ExportError",
    "DEFAULT_OPSET",
    "INPUT_NAMES",
    "OUTPUT_NAME",
    "FlowGraph",
    "FLOW_OUTPUT_NAMES",
    "export_onnx",
    "check_onnx_dtypes",
    "verify_onnx",
    "check_export_target",
    "written_by_rifelab",
]

DEFAULT_OPSET = 17  # GridSample needs >= 16
INPUT_NAMES = ("img0", "img1", "t")
OUTPUT_NAME = "frame"
#: outputs of a graph exported with `flow_outputs`: the frame, the flows (N,4,H,W) and the blend logits (N,1,H,W)
FLOW_OUTPUT_NAMES = (OUTPUT_NAME, "flow", "mask")
_ONNX_FLOAT32 = 1
_ONNX_TYPE_NAMES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
                    10: "float16", 11: "float64", 16: "bfloat16"}


class ExportError(RuntimeError):
    """The network could not be exported (or the exported graph is unusable); names the operator or dtype."""


class FlowGraph(nn.Module):
    """IFNet with the flow scale and ensemble fixed: (img0, img1, t) padded -> padded frame.

    This is the graph every exported backend (ONNX Runtime, OpenVINO, TensorRT) runs. With `flow_outputs` it
    also returns the flow and the mask logits (the backends blend an alpha plane with them).
    """

    def __init__(self, model: RIFE, scale: float = 1.0, ensemble: bool = False, flow_outputs: bool = False):
        super().__init__()
        model.net.check_ensemble(ensemble)
        self.net = copy.deepcopy(model.net).float().cpu().eval()
        self.scale_list = tuple(self.net.scale_list(check_scale(scale)))
        self.ensemble = bool(ensemble)
        self.flow_outputs = bool(flow_outputs)

    def forward(self, img0: torch.Tensor, img1: torch.Tensor,
                t: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.flow_outputs:
            return self.net(img0, img1, t, self.scale_list, self.ensemble)  # node names under /net/ as before
        return self.net.forward_all(img0, img1, t, self.scale_list, self.ensemble)


def _failing_operator(exc: BaseException) -> str | None:
    """The aten operator named in an exporter error, if any."""
    text = f"{exc}\n{exc.__cause__ or ''}"
    m = re.search(r"operator '([^']+)'", text) or re.search(r"((?:aten|prim|onnx)::[A-Za-z0-9_.]+)", text)
    return m.group(1) if m else None


def check_onnx_dtypes(onnx_model: Any) -> None:
    """Raise ExportError naming the first node that makes a non-float32 floating tensor.

    A float64 tensor on the image path (the trace of a float64 constant, e.g. a warp grid) makes
    ONNX Runtime refuse GridSample and doubles the cost everywhere else.
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(onnx_model)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    for init in inferred.graph.initializer:
        types[init.name] = init.data_type
    for node in inferred.graph.node:
        for out in node.output:
            dt = types.get(out)
            if node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value":
                        dt = a.t.data_type
            if dt in (10, 11, 16):
                raise ExportError(
                    f"the exported graph computes in {_ONNX_TYPE_NAMES[dt]} at node {node.name or out!r} "
                    f"(op {node.op_type}); every floating tensor must be float32 (trace the model in float32 "
                    "and build constants such as warp grids in float32)")
    for inp in inferred.graph.input:
        if inp.type.tensor_type.elem_type != _ONNX_FLOAT32:
            name = _ONNX_TYPE_NAMES.get(inp.type.tensor_type.elem_type, inp.type.tensor_type.elem_type)
            raise ExportError(f"graph input {inp.name!r} is {name}; expected float32")


def written_by_rifelab(path: str | os.PathLike) -> bool:
    """Whether `path` is an ONNX model `rifelab export` wrote (it carries rifelab's metadata entries)."""
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - anything that does not parse as ONNX is not ours
        return False
    return any(p.key == "rifelab.variant" for p in proto.metadata_props)


def check_export_target(path: str | os.PathLike) -> Path:
    """`path`, or ExportError when it is a link or a file `rifelab export` did not write (never replaced)."""
    p = refuse_link(path)
    if p.exists() and (not p.is_file() or not written_by_rifelab(p)):
        raise ExportError(f"{p} exists and was not written by rifelab (it is not an ONNX model with rifelab's "
                          "metadata), so it is not replaced; move it away or choose another --output")
    return p


def export_onnx(
    model: RIFE,
    path: str | os.PathLike,
    width: int,
    height: int,
    batch: int = 1,
    scale: float = 1.0,
    ensemble: bool = False,
    dynamic: bool = False,
    opset: int = DEFAULT_OPSET,
    flow_outputs: bool = False,
) -> Path:
    """Export the flow network for width x height frames (padded inside) to ONNX at `path`; returns the path.

    Static shape (batch, 3, H, W) with H, W the padded size unless `dynamic` (then N, H, W are symbolic).
    `flow_outputs` adds the outputs `flow` and `mask` (FLOW_OUTPUT_NAMES) after `frame`.
    Raises ExportError naming the operator that does not export or the dtype that is wrong.
    """
    import onnx

    if opset < 16:
        raise ExportError(f"opset {opset} has no GridSample (the warp); use opset 16 or newer")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    check_export_target(path)
    ph, pw = padded_size(height, width, model.padding_multiple(check_scale(scale)))
    graph = FlowGraph(model, scale, ensemble, flow_outputs)
    outputs = list(FLOW_OUTPUT_NAMES if flow_outputs else (OUTPUT_NAME,))
    x = torch.rand(batch, 3, ph, pw)
    example = (x, x.flip(-1).contiguous(), torch.full((batch, 1, ph, pw), 0.5))
    axes = {0: "batch", 2: "height", 3: "width"}
    dynamic_axes = {n: axes for n in (*INPUT_NAMES, *outputs)} if dynamic else None
    path = Path(path)
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings about shapes turned into constants are expected
            with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
                torch.onnx.export(graph, example, buf, input_names=list(INPUT_NAMES), output_names=outputs,
                                  opset_version=opset, dynamic_axes=dynamic_axes, do_constant_folding=True,
                                  dynamo=False)
    except Exception as exc:  # noqa: BLE001 - exporter errors come in many types; re-raised with the operator
        op = _failing_operator(exc)
        lines = [ln for ln in str(exc).strip().splitlines() if "operator" in ln.lower()] or str(exc).strip().splitlines()
        first = (lines or [type(exc).__name__])[0][:300]
        where = f"operator {op}" if op else "an operator"
        raise ExportError(f"ONNX export (opset {opset}) failed at {where}: {first}") from exc
    proto = onnx.load_from_string(buf.getvalue())
    check_onnx_dtypes(proto)
    meta = {"rifelab.scale": str(check_scale(scale)), "rifelab.ensemble": str(bool(ensemble)),
            "rifelab.frame_size": f"{width}x{height}", "rifelab.padded_size": f"{pw}x{ph}",
            "rifelab.variant": model.variant, "rifelab.layout": model.layout.name, "rifelab.dynamic": str(bool(dynamic))}
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    log.info("exported %s (%dx%d padded to %dx%d, opset %d%s)", path, width, height, pw, ph, opset,
             ", dynamic N/H/W" if dynamic else "")
    return path


def verify_onnx(
    model: RIFE,
    path: str | os.PathLike,
    width: int | None = None,
    height: int | None = None,
    clip: str = "bigbuckbunny",
    pairs: Sequence[int] = (0, 40),
    timestep: float = 0.5,
) -> dict[str, Any]:
    """Run the ONNX graph (ONNX Runtime, CPU) and PyTorch on real clip frame pairs; compare the outputs.

    Returns max/mean abs difference and the PSNR of the ONNX output against PyTorch's (unrounded floats,
    values in [0, 1]), over `pairs` (start frames in `clip`), at width x height (default: the export's size).
    """
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    scale = float(meta.get("rifelab.scale", 1.0))
    ensemble = meta.get("rifelab.ensemble", "False") == "True"
    if width is None or height is None:
        width, height = parse_resolution(meta.get("rifelab.frame_size", "640x384"))
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    batch = batch_dim.dim_value if batch_dim.HasField("dim_value") else 1
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ref_model = copy.deepcopy(model).float().cpu()
    maxes, maes, rmses = [], [], []
    for start in pairs:
        a, b = real_frame_pair(width, height, clip=clip, index=start)
        a, b = a.expand(batch, -1, -1, -1), b.expand(batch, -1, -1, -1)
        ref = ref_model.interpolate(a, b, timestep, scale, ensemble)
        p = ref_model.prepare_pair(a, b, timestep, scale, ensemble)
        out = sess.run([OUTPUT_NAME], {"img0": p.img0.numpy(), "img1": p.img1.numpy(), "t": p.t.numpy()})[0]
        out = p.crop(torch.from_numpy(out))
        e = error_stats(out, ref)
        maxes.append(float(e["max_abs"].max()))
        maes.append(float(e["mae"].mean()))
        rmses.append(float(np.sqrt(np.mean(e["rmse"] ** 2))))
    rmse = float(np.sqrt(np.mean(np.square(rmses))))
    return {"path": str(path), "resolution": f"{width}x{height}", "clip": clip, "pairs": list(pairs),
            "max_abs_diff": max(maxes), "mean_abs_diff": float(np.mean(maes)),
            "psnr_db": float("inf") if rmse == 0 else float(-20 * np.log10(rmse))}
