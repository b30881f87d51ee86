"""The model contract: every CPU backend is an Interpolator, and RGBA frames run on the backend that was asked for.

Regression (issue 18): the pipeline sent RGBA batches to the fp32 PyTorch copy a backend keeps for export, so
`--backend openvino --dtype int8` silently ran PyTorch on RGBA input. Here each backend's own compute is counted
during an RGBA call, and the colour planes must equal that backend's RGB output exactly.
"""

from __future__ import annotations

import copy

import pytest
import torch

from rifelab.engines import backends as bk
from rifelab.engines.spec import ModelSpec, load_model
from rifelab.engines.torch_engine import Engine
from rifelab.frames.images import DataError
from rifelab.interpolate.pipeline import _call_model
from rifelab.interpolate.schedule import InterpolateConfig
from rifelab.measure.benchmark import real_frame_pair
from rifelab.rife.checkpoints import load_rife
from rifelab.rife.contract import AlphaUnsupported, Interpolator, prepare_pair
from rifelab.rife.model import RIFE

# (backend, precision): every backend that runs on a CPU; bf16 and int8 differ from fp32, so a PyTorch fp32
# fallback cannot pass the colour check there
CPU_BACKENDS = [("rife", "fp32"), ("torch", "fp32"), ("torch", "bf16"), ("torch", "static"), ("onnxruntime", "fp32"),
                ("openvino", "fp32"), ("openvino", "int8")]
#: "static": the engine's preallocated buffers, cached grids and channels_last (another input path, same contract)
STATIC = {"static_buffers": True, "cached_grids": True, "channels_last": True}


@pytest.fixture(scope="module")
def model() -> RIFE:
    return load_rife()


@pytest.fixture(scope="module")
def rgba():
    """A real bigbuckbunny pair at 80x48 (padded to 128x64, so the crop is exercised), with a synthetic alpha ramp."""
    a, b = real_frame_pair(80, 48, index=0)
    ramp = torch.linspace(0, 1, 80).expand(1, 1, 48, 80)
    return torch.cat([a, ramp], 1), torch.cat([b, ramp], 1)


def _build(backend: str, precision: str, model: RIFE):
    if backend == "rife":
        return copy.deepcopy(model)  # its net gets counted: keep the shared model clean
    problem = bk.backend_problem(backend, precision, "cpu") if backend != "torch" else None
    if problem:
        pytest.skip(problem)
    switches = {"calibration_count": 2} if precision == "int8" else STATIC if precision == "static" else {}
    precision = "fp32" if precision == "static" else precision
    return load_model(ModelSpec(backend, precision, switches, device="cpu"), model)


def _count_compute(m) -> list[int]:
    """Count the backend's own forward passes from now on (its graph runner, the engine's net, RIFE's net)."""
    calls = [0]

    def counted(fn):
        def run(*args, **kwargs):
            calls[0] += 1
            return fn(*args, **kwargs)
        return run

    if isinstance(m, bk.ExportedModel):
        m._runners = {k: counted(v) for k, v in m._runners.items()}
    elif isinstance(m, Engine):
        m._run_net = counted(m._run_net)
    else:
        m.net.forward_all = counted(m.net.forward_all)
    return calls


@pytest.mark.parametrize("backend,precision", CPU_BACKENDS, ids=[f"{b}-{p}" for b, p in CPU_BACKENDS])
def test_rgba_runs_on_the_backend_and_its_colour_is_the_backends_rgb_output(backend, precision, model, rgba):
    m = _build(backend, precision, model)
    assert isinstance(m, Interpolator)
    a, b = rgba
    t = torch.tensor([0.5])
    rgb = m.interpolate(a[:, :3], b[:, :3], t, 1.0, False)  # builds the graph of this shape
    calls = _count_compute(m)
    out = _call_model(m, a, b, t, InterpolateConfig())
    assert calls[0] == 1, f"{backend} {precision}: the RGBA call did not run the backend's own graph"
    assert out.shape == (1, 4, 48, 80) and out.dtype == torch.float32
    assert torch.equal(out[:, :3], rgb)
    alpha = out[:, 3]
    assert float(alpha.min()) >= 0 and float(alpha.max()) <= 1 and float(alpha.std()) > 0.2  # still a ramp
    if precision in ("bf16", "int8"):  # what a fallback to the fp32 PyTorch copy would have given
        with torch.inference_mode():
            assert not torch.equal(out[:, :3], model.interpolate(a[:, :3], b[:, :3], t))


def test_alpha_through_rife_is_blended_with_the_colour_flow(model, rgba):
    """An alpha plane equal to a colour plane comes out as that colour plane (same flow, same mask)."""
    a, b = rgba
    a, b = a.clone(), b.clone()
    a[:, 3], b[:, 3] = a[:, 1], b[:, 1]
    out = model.interpolate_rgba(a, b, 0.5)
    torch.testing.assert_close(out[:, 3], out[:, 1], atol=1e-5, rtol=0)


def test_a_model_without_interpolate_rgba_is_refused_with_what_to_do(model, rgba):
    class RgbOnly:
        device = torch.device("cpu")

        def interpolate(self, img0, img1, timestep=0.5, scale=1.0, ensemble=False):
            return model.interpolate(img0, img1, timestep, scale, ensemble)

    a, b = rgba
    with pytest.raises(AlphaUnsupported, match="flatten the frames"):
        _call_model(RgbOnly(), a, b, torch.tensor([0.5]), InterpolateConfig())
    assert issubclass(AlphaUnsupported, DataError)


def test_prepare_pair_pads_to_the_given_multiple_and_gives_back_the_input_size_and_dtype(rgba):
    a, b = rgba[0][:, :3].half(), rgba[1][:, :3].half()
    p = prepare_pair(a, b, 0.25, 1.0, multiple=32, dtype=torch.float32)
    assert p.padded == (1, 64, 96) and p.size == (48, 80) and p.img0.dtype == torch.float32
    assert p.scale_list == (8.0, 4.0, 2.0, 1.0) and float(p.t.mean()) == 0.25
    out = p.output(p.img0)
    assert out.dtype == torch.float16 and torch.equal(out, a)
    assert prepare_pair(a, b, 0.5, 0.5).multiple == 128  # default: 64 / scale
    with pytest.raises(ValueError, match="scale must be one of"):
        prepare_pair(a, b, 0.5, 3.0)
