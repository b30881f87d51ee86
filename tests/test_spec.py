"""ModelSpec: built from the command line once, plain frozen data that travels (Ray, worker processes), one loader."""

from __future__ import annotations

import argparse
import pickle

import pytest

from rifelab.engines import backends as bk
from rifelab.engines.spec import ModelSpec, load_model
from rifelab.engines.torch_engine import Engine
from rifelab.interpolate.cli import add_batch_parser, add_interpolate_parser


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_interpolate_parser(sub)
    add_batch_parser(sub)
    return parser.parse_args(list(argv))


def test_the_command_line_becomes_a_spec_that_pickles_and_hashes():
    spec = ModelSpec.from_args(_parse("interpolate", "in", "out", "--backend", "openvino", "--dtype", "int8",
                                      "--channels-last", "--threads", "2", "--device", "cpu"))
    assert (spec.backend, spec.precision, spec.device, spec.threads) == ("openvino", "int8", "cpu", 2)
    assert spec.options == {"calibration_count": 8, "channels_last": True}
    assert pickle.loads(pickle.dumps(spec)) == spec and hash(spec) == hash(ModelSpec.make(spec.options, **{
        "backend": "openvino", "precision": "int8", "device": "cpu", "threads": 2}))
    assert spec.model_info() == {"checkpoint": "bundled rife40", "dtype": "int8"}
    batch = ModelSpec.from_args(_parse("batch", "-o", "out", "--dtype", "bf16", "--cached-grids"))
    assert batch == ModelSpec("torch", "bf16", {"cached_grids": True}) and batch.label == "bf16-cached_grids"
    with pytest.raises(Exception):
        spec.backend = "torch"  # frozen


def test_bad_specs_are_refused_with_what_would_work():
    with pytest.raises(ValueError, match="int8 runs on backend openvino"):
        ModelSpec("torch", "int8")
    with pytest.raises(ValueError, match="--backend openvino"):
        ModelSpec.from_args(_parse("interpolate", "in", "out", "--dtype", "int8"))
    with pytest.raises(ValueError, match="unknown engine switch"):
        ModelSpec("torch", "fp32", {"channel_last": True})
    with pytest.raises(ValueError, match="positive integer"):
        ModelSpec(threads=0)


def test_load_model_builds_the_backend_and_reports_switches_it_does_not_use():
    engine = load_model(ModelSpec("torch", "fp32", {"cached_grids": True}, device="cpu", threads=1))
    assert isinstance(engine, Engine) and "cached_grids" in engine.applied and engine.config.threads == 1
    if bk.backend_problem("onnxruntime", "fp32", "cpu"):
        pytest.skip("no onnxruntime here")
    ort = load_model(ModelSpec("onnxruntime", "fp32", {"channels_last": True}, device="cpu"))
    assert isinstance(ort, bk.OnnxRuntimeModel) and "--channels-last" in ort.skipped
