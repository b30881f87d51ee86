"""rifelab.engine: every option does what it says, outputs stay close to FP32 eager, CPU skips are reported.

Real RIFE 4.0 weights and real bigbuckbunny frames, small sizes. Stated tolerances against the FP32
eager output of the core model: exact for fp32 options that only change bookkeeping (buffers,
grids), 1e-4 max abs for channels_last and torch.compile (different kernels, same precision),
bf16 / fp16 / autocast: PSNR >= 40 dB and max abs diff <= 0.05 (values in [0, 1]).
"""

from __future__ import annotations

import argparse

import pytest
import torch

from rifelab.engines import torch_engine as engine_mod
from rifelab.engines.torch_engine import (
    Engine,
    EngineConfig,
    parse_config,
    parse_options,
)
from rifelab.measure.metrics import psnr
from rifelab.rife.model import RIFE
from rifelab.engines.cli import add_backend_options, add_model_options
from rifelab.engines.spec import ModelSpec, load_model
from rifelab.rife.checkpoints import load_rife
from rifelab.measure.benchmark import real_frame_pair

LOW_PRECISION_MIN_PSNR = 40.0
LOW_PRECISION_MAX_ABS = 0.05


@pytest.fixture(scope="module")
def model():
    return load_rife()


@pytest.fixture(scope="module")
def frames():
    # two real pairs, 160x96: not a multiple of 64, so padding and cropping are exercised
    pairs = [real_frame_pair(160, 96, index=i) for i in (10, 14)]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


@pytest.fixture(scope="module")
def reference(model, frames):
    a, b = frames
    return model.interpolate(a, b)


def _first_conv(eng: Engine) -> torch.nn.Conv2d:
    return eng.model.net.block0.conv0[0][0]


# ----------------------------------------------------------------------------- exactness of bookkeeping options


def test_plain_engine_is_bit_exact_to_core_model(model, frames, reference):
    a, b = frames
    eng = Engine(model, EngineConfig())
    assert torch.equal(eng.interpolate(a, b), reference)
    assert eng.skipped == {}


def test_static_buffers_and_cached_grids_are_exact_and_reused(model, frames, reference):
    a, b = frames
    eng = Engine(model, {"static_buffers": True, "cached_grids": True})
    out = eng.interpolate(a, b)
    assert torch.equal(out, reference)
    assert eng.fwd.grid is not None and tuple(eng.fwd.grid.shape) == (2, 128, 192, 2)  # padded to 64
    (key, bufs), = eng._buffers.items()
    ptr = bufs.img0.data_ptr()
    # a new timestep and a per-sample timestep tensor reuse the same buffers and stay exact
    out2 = eng.interpolate(a, b, timestep=0.3)
    assert bufs.img0.data_ptr() == ptr and len(eng._buffers) == 1
    assert torch.equal(out2, model.interpolate(a, b, timestep=0.3))
    ts = torch.tensor([0.25, 0.75])
    assert torch.equal(eng.interpolate(a, b, timestep=ts), model.interpolate(a, b, timestep=ts))
    # the pad region of the buffers stays zero (as the core pads with zeros)
    assert float(bufs.img0[:, :, 96:, :].abs().sum()) == 0.0 and float(bufs.img0[:, :, :, 160:].abs().sum()) == 0.0
    # the output is not a view of a reused buffer
    eng.interpolate(b, a)
    assert torch.equal(out, reference)


def test_ensemble_matches_core(model, frames):
    a, b = frames
    eng = Engine(model, {"cached_grids": True})
    assert torch.equal(eng.interpolate(a[:1], b[:1], ensemble=True), model.interpolate(a[:1], b[:1], ensemble=True))


# ----------------------------------------------------------------------------- dtype


@pytest.mark.parametrize("dtype,torch_dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_low_precision_changes_weights_and_stays_close(model, frames, reference, dtype, torch_dtype):
    a, b = frames
    eng = Engine(model, {"dtype": dtype})
    assert "dtype" in eng.applied and eng.dtype == torch_dtype
    assert all(p.dtype == torch_dtype for p in eng.model.parameters())
    assert model.dtype == torch.float32, "the caller's model must not be converted"
    seen = []
    h = _first_conv(eng).register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    out = eng.interpolate(a, b)
    h.remove()
    assert seen == [torch_dtype]
    assert out.dtype == torch.float32  # same dtype out as in, like RIFE.interpolate
    assert float((out - reference).abs().max()) <= LOW_PRECISION_MAX_ABS
    assert psnr(out, reference).min() >= LOW_PRECISION_MIN_PSNR
    assert not torch.equal(out, reference)  # it really ran in lower precision


def test_autocast_keeps_fp32_weights_and_runs_convs_in_bf16(model, frames, reference):
    a, b = frames
    eng = Engine(model, {"dtype": "autocast", "autocast_dtype": "auto"})
    assert eng.autocast_dtype == torch.bfloat16  # auto on CPU
    assert eng.dtype == torch.float32
    seen = []
    h = _first_conv(eng).register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    out = eng.interpolate(a, b)
    h.remove()
    assert seen == [torch.bfloat16]
    assert psnr(out, reference).min() >= LOW_PRECISION_MIN_PSNR
    # outside the engine call autocast is off again
    assert not torch.is_autocast_enabled("cpu")


def test_unusable_dtype_is_reported_not_faked(model, frames, monkeypatch, reference):
    monkeypatch.setattr(engine_mod, "_probe_dtype", lambda dev, dt, autocast=False: "no kernel for this dtype")
    eng = Engine(model, {"dtype": "fp16"})
    assert "dtype" not in eng.applied and "no kernel" in eng.skipped["dtype"]
    assert eng.dtype == torch.float32
    assert torch.equal(eng.interpolate(*frames), reference)


# ----------------------------------------------------------------------------- memory format


def test_channels_last_changes_weights_and_inputs(model, frames, reference):
    a, b = frames
    eng = Engine(model, {"channels_last": True})
    conv = _first_conv(eng)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert eng.memory_format == torch.channels_last
    assert Engine(model, {}).memory_format == torch.contiguous_format
    fmts = []
    h = conv.register_forward_hook(lambda m, i, o: fmts.append(i[0].is_contiguous(memory_format=torch.channels_last)))
    out = eng.interpolate(a, b)
    h.remove()
    assert fmts == [True]
    assert float((out - reference).abs().max()) <= 1e-4


def test_channels_last_static_buffers_are_nhwc(model, frames, reference):
    eng = Engine(model, {"channels_last": True, "static_buffers": True, "dtype": "bf16"})
    out = eng.interpolate(*frames)
    (bufs,) = eng._buffers.values()
    assert bufs.img0.is_contiguous(memory_format=torch.channels_last) and bufs.img0.dtype == torch.bfloat16
    assert psnr(out, reference).min() >= LOW_PRECISION_MIN_PSNR


# ----------------------------------------------------------------------------- CPU: CUDA-only options reported


def test_cuda_only_options_are_skipped_on_cpu_with_reasons(model, frames, reference):
    cfg = {"tf32": True, "cudnn_benchmark": True, "cuda_graphs": True, "streams": True}
    before = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    eng = Engine(model, cfg, device="cpu")
    for k in cfg:
        assert k not in eng.applied, k
        assert k in eng.skipped and "cpu" in eng.skipped[k], (k, eng.skipped.get(k))
    assert not eng.use_graphs
    seen = []
    h = _first_conv(eng).register_forward_hook(lambda m, i, o: seen.append(torch.backends.cudnn.benchmark))
    out = eng.interpolate(*frames)
    h.remove()
    assert seen == [before[0]]  # not switched on behind the report's back
    assert torch.equal(out, reference)
    after = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    assert after == before
    assert eng.report()["skipped"] == eng.skipped


def test_threads_apply_during_call_and_are_restored(model, frames):
    old = torch.get_num_threads()
    want = 1 if old != 1 else 2
    eng = Engine(model, {"threads": want})
    seen = []
    h = _first_conv(eng).register_forward_hook(lambda m, i, o: seen.append(torch.get_num_threads()))
    eng.interpolate(*frames)
    h.remove()
    assert seen == [want] and torch.get_num_threads() == old


def test_inference_mode_switch(model, frames):
    assert Engine(model, {}).interpolate(*frames).is_inference()
    eng = Engine(model, {"inference_mode": False})
    assert eng.applied["inference_mode"] == "torch.no_grad"
    out = eng.interpolate(*frames)
    assert not out.is_inference() and not out.requires_grad


def test_interpolate_many_matches_pairs_and_reports_streams(model):
    a, b = real_frame_pair(96, 64)
    seq = torch.cat([a, b, a])
    eng = Engine(model, {"streams": True, "static_buffers": True})
    assert "streams" in eng.skipped
    many = eng.interpolate_many(seq)
    assert many.shape == (2, 3, 64, 96)
    assert torch.equal(many[0:1], model.interpolate(a, b)) and torch.equal(many[1:2], model.interpolate(b, a))
    with pytest.raises(ValueError, match="at least 2 frames"):
        eng.interpolate_many(seq[:1])


# ----------------------------------------------------------------------------- torch.compile


def test_compile_wraps_module_without_running(model):
    eng = Engine(model, {"compile": True, "compile_mode": "max-autotune-no-cudagraphs"})
    assert "compile" in eng.applied and "max-autotune-no-cudagraphs" in eng.applied["compile"]
    assert isinstance(eng.compiled, torch._dynamo.eval_frame.OptimizedModule)
    assert eng.compiled._orig_mod is eng.fwd
    assert Engine(model, {}).compiled is None


def test_compile_failure_falls_back_and_is_reported(model, frames, reference, monkeypatch):
    class FakeBackendError(RuntimeError):
        pass

    FakeBackendError.__module__ = "torch._inductor.exc"

    def broken(*_a, **_k):
        raise FakeBackendError("C++ compiler not found")

    monkeypatch.setattr(torch, "compile", lambda mod, **kw: broken)
    eng = Engine(model, {"compile": True})
    out = eng.interpolate(*frames)
    assert torch.equal(out, reference)
    assert "compile" not in eng.applied and "compiler not found" in eng.skipped["compile"]


@pytest.mark.slow
def test_compiled_engine_runs_compiled_code_and_stays_close(model):
    import torch._dynamo

    torch._dynamo.reset()
    a, b = real_frame_pair(64, 64)
    ref = model.interpolate(a, b)
    eng = Engine(model, {"compile": True, "cached_grids": True})
    torch._dynamo.utils.counters.clear()
    out = eng.interpolate(a, b)
    assert "compile" in eng.applied, eng.skipped
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert float((out - ref).abs().max()) <= 1e-4


# ----------------------------------------------------------------------------- configuration and bad input


def test_parse_options_and_config_errors():
    assert parse_options("bf16, channels_last, compile_mode:max-autotune, threads=2") == {
        "dtype": "bf16", "channels_last": True, "compile_mode": "max-autotune", "threads": 2}
    assert parse_config("fp16, cuda_graphs").cuda_graphs is True
    with pytest.raises(ValueError, match="valid options"):
        parse_config({"channel_last": True})
    with pytest.raises(ValueError, match="dtype must be one of"):
        EngineConfig(dtype="int8")
    with pytest.raises(ValueError, match="compile_mode"):
        EngineConfig(compile=True, compile_mode="fastest")
    with pytest.raises(ValueError, match="true or false"):
        EngineConfig(channels_last="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threads"):
        EngineConfig(threads=0)


def test_bad_inputs_are_clear(model, frames):
    a, b = frames
    eng = Engine(model, {"static_buffers": True})
    with pytest.raises(ValueError, match="differ in shape"):
        eng.interpolate(a, b[:, :, :64])
    with pytest.raises(TypeError, match="divide 0-255 frames by 255"):
        eng.interpolate((a * 255).to(torch.int16), (b * 255).to(torch.int16))
    with pytest.raises(ValueError, match="0-255 values: divide by 255"):
        eng.interpolate(a * 255, b * 255)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        eng.interpolate(a, b, timestep=1.5)
    with pytest.raises(ValueError, match="scale"):
        eng.interpolate(a, b, scale=3)
    with pytest.raises(TypeError, match="load_rife"):
        Engine(torch.nn.Linear(2, 2), {})  # type: ignore[arg-type]


def test_bench_options_build_the_engine():
    p = argparse.ArgumentParser()
    add_model_options(p)
    add_backend_options(p)
    args = p.parse_args(["--dtype", "bf16", "--channels-last", "--tf32", "--compile-mode", "default", "--device", "cpu"])
    spec = ModelSpec.from_args(args)
    assert spec.backend == "torch" and spec.options == {"channels_last": True, "tf32": True}
    eng = load_model(spec)
    assert eng.config.dtype == "bf16" and eng.config.channels_last and eng.config.tf32
    assert eng.config.name == "bf16-channels_last-tf32"
    assert "tf32" in eng.skipped and "channels_last" in eng.applied
    assert isinstance(eng.model, RIFE)  # what `rifelab bench` uses for GMAC counting
    with pytest.raises(SystemExit):  # the engine reads no params file: named configs live in the study
        p.parse_args(["--engine-config", "bf16-channels_last"])
