"""rifelab.export and rifelab.backends: exported graphs match PyTorch on real frames, unavailable backends are
reported (never faked), INT8 calibration frames are disjoint from every evaluation frame.

Stated tolerances, on real bigbuckbunny frames, values in [0, 1], against the PyTorch FP32 output:
- ONNX export run by ONNX Runtime, and OpenVINO FP32: max abs diff <= 1e-4 (float32, different kernels)
- OpenVINO INT8 (NNCF, 2 calibration pairs): PSNR >= 30 dB (uint8-rounded)
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pytest
import torch

from rifelab.engines import backends as bk
from rifelab.engines.spec import ModelSpec, load_model
from rifelab.frames.splits import overlapping_frames, range_frames, range_pairs
from rifelab.rife import network as models_mod
from rifelab.measure.benchmark import agreement, real_frame_pair
from rifelab.rife.contract import padded_size
from rifelab.engines.export import ExportError, FlowGraph, check_onnx_dtypes, export_onnx, verify_onnx
from rifelab.rife.network import base_grid
from rifelab.rife.checkpoints import load_rife

FP32_MAX_ABS = 1e-4


def _load(backend: str, model, precision: str = "fp32", **switches):
    return load_model(ModelSpec(backend, precision, switches, device="cpu"), model)
INT8_MIN_PSNR = 30.0


@pytest.fixture(scope="module")
def model():
    return load_rife()


@pytest.fixture(scope="module")
def pair():
    # 2 real pairs, 160x96: not a multiple of 64, so padding and cropping are exercised
    a0, b0 = real_frame_pair(160, 96, index=0)
    a1, b1 = real_frame_pair(160, 96, index=20)
    return torch.cat([a0, a1]), torch.cat([b0, b1])


@pytest.fixture(scope="module")
def reference(model, pair):
    a, b = pair
    return model.interpolate(a, b, torch.tensor([0.5, 0.25]))


# ----------------------------------------------------------------------------- export


def test_warp_grid_matches_linspace_and_traces_in_float32():
    g = base_grid(1, 5, 7, torch.device("cpu"), torch.float32)
    assert g.dtype == torch.float32
    xs = torch.linspace(-1, 1, 7)
    ys = torch.linspace(-1, 1, 5)
    assert torch.allclose(g[0, 0, 0], xs, atol=1e-6) and torch.allclose(g[0, 1, :, 0], ys, atol=1e-6)
    assert g[0, 0, 0, 0] == -1 and g[0, 1, 0, 0] == -1


def test_export_matches_pytorch_on_real_frames(model, tmp_path):
    path = export_onnx(model, tmp_path / "r.onnx", 160, 96)
    rep = verify_onnx(model, path)
    assert rep["resolution"] == "160x96" and rep["pairs"]
    assert rep["max_abs_diff"] <= FP32_MAX_ABS and rep["psnr_db"] >= 80
    import onnx

    proto = onnx.load(str(path))
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, *padded_size(96, 160, 64)] == [1, 3, 128, 192]  # static, padded
    assert {"GridSample", "Conv"} <= {n.op_type for n in proto.graph.node}


def test_dynamic_export_runs_at_other_sizes(model, tmp_path):
    path = export_onnx(model, tmp_path / "d.onnx", 128, 64, dynamic=True)
    for w, h in [(128, 64), (200, 130)]:
        assert verify_onnx(model, path, w, h, pairs=(0,))["max_abs_diff"] <= FP32_MAX_ABS


def test_export_errors_name_the_operator_and_the_dtype(model, tmp_path, monkeypatch):
    class Doubles(torch.nn.Module):
        def forward(self, x):
            return (x.double() * 2).float()

    import io

    import onnx

    buf = io.BytesIO()
    torch.onnx.export(Doubles(), (torch.rand(1, 3, 4, 4),), buf, dynamo=False, opset_version=17)
    with pytest.raises(ExportError, match="float64"):
        check_onnx_dtypes(onnx.load_from_string(buf.getvalue()))

    def bad_warp(img, flow):
        return img + torch.linalg.svd(flow[:, :1, :2, :2])[1].sum()

    monkeypatch.setattr(models_mod, "warp", bad_warp)
    with pytest.raises(ExportError, match="aten::linalg_svd"):
        export_onnx(model, tmp_path / "bad.onnx", 64, 64)
    with pytest.raises(ExportError, match="GridSample"):
        export_onnx(model, tmp_path / "old.onnx", 64, 64, opset=13)
    assert not (tmp_path / "bad.onnx").exists()


def test_cli_export_reports_the_check(tmp_path, capsys):
    from rifelab.cli import main

    out = tmp_path / "e.onnx"
    assert main(["export", "--resolution", "128x64", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.exists() and "max abs diff" in text and "PSNR" in text


# ----------------------------------------------------------------------------- backends


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_fp32_backends_match_pytorch(model, pair, reference, backend):
    a, b = pair
    m = _load(backend, model)
    out = m.interpolate(a, b, torch.tensor([0.5, 0.25]))  # per-sample timesteps, padded 160x96
    assert out.shape == a.shape and out.dtype == a.dtype
    assert (out - reference).abs().max().item() <= FP32_MAX_ABS
    single = m.interpolate(a[:1], b[:1], 0.5)  # another batch size: another graph
    assert (single - reference[:1]).abs().max().item() <= FP32_MAX_ABS
    assert len(m._runners) == 2 and m.report()["backend"] == backend and not m.skipped
    if backend == "openvino":  # FP32 pins the f32 hint: OpenVINO would run bf16 on a native-bf16 CPU
        assert "f32" in m.applied["precision"]


def test_openvino_int8_calibrates_on_held_out_frames(model, pair, reference):
    pytest.importorskip("nncf")
    a, b = pair
    m = _load("openvino", model, "int8", calibration_count=2)
    out = m.interpolate(a, b, torch.tensor([0.5, 0.25]))
    q = agreement(out, reference)
    assert q["psnr_vs_fp32_db"] >= INT8_MIN_PSNR and q["max_abs_diff"] > 0  # quantised: close, not identical
    assert "calibrated on 2 real pairs" in m.applied["int8"] and m.calibration_s is not None


def test_int8_fp32_blocks_keep_those_convolutions_unquantised(model, pair):
    pytest.importorskip("nncf")
    a, b = pair
    m = _load("openvino", model, "int8", calibration_count=1, int8_fp32_blocks=[3])
    m.interpolate(a, b)
    (q,) = m._ov_models.values()
    quantised = {op.get_friendly_name() for op in q.get_ops() if op.get_type_name() == "Convolution"
                 and any(i.get_source_output().get_node().get_type_name() in ("FakeQuantize", "Convert", "Multiply")
                         for i in op.inputs()[1:])}
    assert quantised and not [n for n in quantised if "/block3/" in n]
    assert "block(s) [3]" in m.applied["int8"]
    with pytest.raises(ValueError, match="blocks 0-3"):
        _load("openvino", model, "int8", int8_fp32_blocks=[4])


def test_calibration_pairs_come_from_the_calibration_ranges():
    a, b = range_pairs({"bikes": (100, 110)}, 3, (96, 64), "calibration range")
    assert a.shape == b.shape == (3, 3, 64, 96)
    from rifelab.frames.clips import load_clip
    from rifelab.frames.images import to_tensor

    frames = to_tensor(load_clip("bikes", start=100, max_frames=10))
    first = torch.nn.functional.interpolate(frames[:1], size=(64, 96), mode="bicubic", align_corners=False).clamp(0, 1)
    assert torch.equal(a[:1], first)  # the first pair starts at frame 100
    with pytest.raises(ValueError, match="no frame pair"):
        range_pairs({"bikes": (5, 6)}, 1, (96, 64), "calibration range")


@pytest.mark.parametrize("profile", ["cpu", "cuda", "mps"])
def test_calibration_frames_are_disjoint_from_every_evaluation(profile):
    """The default INT8 calibration frames are never scored by the baseline or the pruning evaluation."""
    from rifelab.studies.base import params_file, read_params_file

    params = read_params_file(params_file(profile))
    used: dict[str, set[int]] = {}
    base = params["baseline"]
    for clip in base["clips"]:
        used.setdefault(clip, set()).update(range(0, 2 * int(base["n_triplets"]) * int(base["stride"]) + 1))
    for clip, (start, stop) in params["pruning"]["eval_ranges"].items():
        used.setdefault(clip, set()).update(range(start, stop))
    assert overlapping_frames(range_frames(bk.CALIBRATION_RANGES), used) == {}
    assert overlapping_frames({"bikes": range(0, 5)}, {"bikes": [4, 9]}) == {"bikes": [4]}


# ----------------------------------------------------------------------------- unavailable backends


def test_tensorrt_without_cuda_is_reported_not_faked(model):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    problem = bk.backend_problem("tensorrt", "fp16", "cpu")
    assert problem and "CUDA" in problem
    with pytest.raises(bk.BackendUnavailable, match="CUDA"):
        _load("tensorrt", model, "fp16")


def test_tensorrt_graph_exports_up_to_where_cuda_is_needed(model):
    """What TensorRT compiles is the FlowGraph; torch.export (its dynamo frontend's first step) takes it on CPU."""
    g = FlowGraph(model, 1.0, False)
    x = torch.rand(1, 3, 64, 64)
    ep = torch.export.export(g, (x, x, torch.full((1, 1, 64, 64), 0.5)))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert any("grid_sampler" in t for t in targets) and any("conv" in t for t in targets)
    assert torch.equal(model.interpolate(x, x), model.interpolate(x, x))  # exporting left no fake tensor behind


_REAL_CAPS = bk.capabilities()


def _caps(**changes):
    return dataclasses.replace(_REAL_CAPS, **changes)


def test_missing_packages_and_isa_are_reported(model, monkeypatch):
    monkeypatch.setattr(bk, "capabilities", lambda: _caps(modules=("onnx",)))
    assert "not installed" in bk.backend_problem("openvino", "fp32", "cpu")
    with pytest.raises(bk.BackendUnavailable, match="onnxruntime package, which is not installed"):
        _load("onnxruntime", model)
    monkeypatch.setattr(bk, "capabilities", lambda: _caps(native_bf16=False, amx=False, avx512=False,
                                                          cpu_capability="AVX2"))
    with pytest.raises(bk.BackendUnavailable, match="native bf16.*AVX2"):
        _load("openvino", model, "bf16")
    assert bk.missing_requirements(["native_bf16"], "cpu") and not bk.missing_requirements(["native_bf16"], "cuda")
    monkeypatch.setattr(bk, "capabilities", lambda: _caps(compiler=None))
    assert "C++ compiler" in bk.missing_requirements(["compile"], "cpu")[0]
    with pytest.raises(ValueError, match="unknown requirement"):
        bk.missing_requirements(["quantum"], "cpu")
    with pytest.raises(ValueError, match="precisions"):
        bk.backend_requirements("onnxruntime", "int8")


def test_cli_bench_json_rows_and_unavailable_backend(tmp_path, capsys):
    from rifelab.cli import main

    out = tmp_path / "b.json"
    args = ["bench", "--backend", "onnxruntime", "--resolution", "96x64", "--warmup", "0", "--repeats", "1",
            "--no-macs", "--device", "cpu", "--json", str(out)]
    assert main(args) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {"backend", "resolution", "median_ms", "fps", "psnr_vs_fp32_db"} <= set(rows[0])
    assert rows[0]["backend"] == "onnxruntime" and rows[0]["psnr_vs_fp32_db"] >= 45
    if not torch.cuda.is_available():
        capsys.readouterr()
        assert main(["bench", "--backend", "tensorrt", "--dtype", "fp16", "--device", "cpu", "--no-macs"]) == 2
        assert "needs CUDA" in capsys.readouterr().err
    assert main(["bench", "--dtype", "int8", "--device", "cpu", "--no-macs"]) == 2


def test_interpolate_cli_takes_the_backend():
    from rifelab.interpolate.cli import add_interpolate_parser, load_interpolation_model

    parser = argparse.ArgumentParser()
    add_interpolate_parser(parser.add_subparsers())
    args = parser.parse_args(["interpolate", "in", "out", "--device", "cpu", "--backend", "onnxruntime",
                              "--channels-last"])
    m = load_interpolation_model(args)
    assert isinstance(m, bk.OnnxRuntimeModel) and "--channels-last" in m.skipped
    a = torch.rand(1, 3, 64, 64)
    assert np.isfinite(m.interpolate(a, a.flip(-1), 0.5).numpy()).all()
