"""The optimisation study: configs as YAML mappings, skipped/too-slow reporting, disjoint frame uses, a smoke run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch

from dvc_checks import assert_plots_readable
from notebook_checks import assert_figures_render
from rifelab.engines.backends import CALIBRATION_RANGES
from rifelab.frames.splits import overlapping_frames, range_frames
from rifelab.measure.worker import Slowed
from rifelab.publish.notebooks import run_notebook
from rifelab.studies import baseline as baseline_study
from rifelab.studies import optimisation as opt
from rifelab.studies.base import PROFILES, ParamError, load_study_params

ROOT = Path(__file__).resolve().parent.parent

TINY = {"device": "cpu", "resolutions": ["96x64"], "target_resolution": "96x64", "clip": "bikes", "quality_pairs": 1,
        "warmup": 1, "repeats": 2, "int8_calibration": {"bikes": [100, 140]}, "int8_calibration_pairs": 1,
        "heldout_ranges": {"bikes": [60, 90]}, "heldout_triplets": 1,
        "configs": [{"name": "fp32-eager"}, {"name": "onnxruntime", "backend": "onnxruntime"},
                    {"name": "openvino-int8", "backend": "openvino", "dtype": "int8"},
                    {"name": "tensorrt-fp16", "backend": "tensorrt", "dtype": "fp16"},
                    {"name": "graphs", "cuda_graphs": True, "requires": ["cuda"]}]}


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_lists_yaml_mapping_configs_that_parse(profile):
    p = load_study_params("optimisation", opt.PARAMS, profile)
    configs = opt.study_configs(p["configs"], p["baseline"])
    assert configs[0].name == p["baseline"] and configs[0].backend == "torch"
    assert all(isinstance(e, dict) for e in p["configs"])
    assert p["target_resolution"] in p["resolutions"]
    backends = {c.backend for c in configs}
    if profile == "cpu":  # every CPU backend, half precision only where native
        assert {"torch", "onnxruntime", "openvino"} <= backends
        assert {c.dtype for c in configs if c.backend == "openvino"} == {"fp32", "bf16", "int8"}
        for c in configs:
            if c.backend == "torch" and c.dtype in ("bf16", "fp16"):
                assert {"native_bf16", "native_fp16"} & set(c.requires), c.name
            assert not c.options.get("compile"), "no torch.compile in the default CPU profile (minutes on 2 cores)"
    if profile == "cuda":  # TensorRT fp16, compile + CUDA graphs, plain fp16 side by side
        assert any(c.backend == "tensorrt" and c.dtype == "fp16" for c in configs)
        assert any(c.options.get("compile") and c.options.get("cuda_graphs") for c in configs)
        assert any(c.backend == "torch" and c.dtype == "fp16" and not c.options for c in configs)
        assert p["target_fps"] == 500 and p["target_resolution"] == "1920x1080"


def test_config_errors_name_the_problem():
    with pytest.raises(ParamError, match="plain torch fp32 eager"):
        opt.study_configs([{"name": "b", "dtype": "bf16"}], "b")
    with pytest.raises(ParamError, match="not among the configs"):
        opt.study_configs([{"name": "x"}], "fp32-eager")
    with pytest.raises(ParamError, match="unique"):
        opt.study_configs([{"name": "a"}, {"name": "a"}], "a")
    with pytest.raises(ParamError, match="backend 'ncnn'"):
        opt.study_configs([{"name": "a"}, {"name": "n", "backend": "ncnn"}], "a")
    with pytest.raises(ParamError, match="runs.*fp32.*not dtype 'int8'"):
        opt.study_configs([{"name": "a"}, {"name": "o", "backend": "onnxruntime", "dtype": "int8"}], "a")
    with pytest.raises(ParamError, match="unknown key.*channels_last"):  # engine switches are torch-only
        opt.study_configs([{"name": "a"}, {"name": "o", "backend": "openvino", "channels_last": True}], "a")
    with pytest.raises(ParamError, match="unknown requirement"):
        opt.study_configs([{"name": "a"}, {"name": "q", "requires": ["quantum"]}], "a")
    with pytest.raises(ParamError, match="expected a mapping"):
        opt.study_configs(["fp32-eager: fp32"], "fp32-eager")  # the old "NAME: options" strings are gone


@pytest.mark.parametrize("profile", PROFILES)
def test_int8_calibration_frames_are_never_scored(profile):
    """Calibration, held-out triplets and quality pairs use disjoint frames; so do the baseline's triplets."""
    p = load_study_params("optimisation", opt.PARAMS, profile)
    used = opt.frames_used(p)
    calib = used["INT8 calibration"]
    assert overlapping_frames(calib, used["held-out triplets"]) == {}
    assert overlapping_frames(calib, used["quality pairs"]) == {}
    assert overlapping_frames(used["held-out triplets"], used["quality pairs"]) == {}
    base = load_study_params("baseline", baseline_study.PARAMS, profile)
    scored = {c: range(0, 2 * base["n_triplets"] * base["stride"] + 1) for c in base["clips"]}
    assert overlapping_frames(calib, scored) == {}
    assert overlapping_frames(range_frames(CALIBRATION_RANGES), scored) == {}  # the library default too


def test_overlapping_frame_ranges_stop_the_run_before_anything_is_written(tmp_path):
    with pytest.raises(ParamError, match="INT8 calibration.*share frames"):
        opt.run("cpu", {**TINY, "int8_calibration": {"bikes": [80, 120]}}, tmp_path)
    assert not (tmp_path / "cpu" / "optimisation").exists() or not any((tmp_path / "cpu" / "optimisation").iterdir())


def test_smoke_run_reports_every_backend_and_every_skip(tmp_path):
    res = opt.run("cpu", TINY, tmp_path)
    df = res.tables["results"].set_index("config")
    assert list(df.index) == ["fp32-eager", "onnxruntime", "openvino-int8", "tensorrt-fp16", "graphs"]
    assert (df.loc[["fp32-eager", "onnxruntime", "openvino-int8"], "status"] == "ran").all()
    assert df.loc["fp32-eager", "speedup"] == pytest.approx(1.0) and df.loc["fp32-eager", "psnr_vs_fp32_db"] == 99
    assert df.loc["onnxruntime", "psnr_vs_fp32_db"] >= 45 and df.loc["onnxruntime", "max_abs_diff"] < 1e-3
    assert (df.loc[["fp32-eager", "onnxruntime"], ["p10_ms", "p90_ms", "fps", "peak_mem_mib"]] > 0).all().all()
    if not torch.cuda.is_available():  # reported as skipped with the reason, never timed
        assert df.loc["tensorrt-fp16", "status"] == "skipped" and "CUDA" in df.loc["tensorrt-fp16", "reason"]
        assert df.loc["graphs", "status"] == "skipped" and pd.isna(df.loc["graphs", "median_ms"])
    gt = res.tables["int8_vs_ground_truth"].set_index("config")
    assert gt.loc["fp32-eager", "psnr_change_db"] == 0 and gt.loc["fp32-eager", "psnr"] > 20
    assert "openvino-int8" in gt.index and gt.loc["openvino-int8", "n"] == 1
    assert "calibrated on 1 real pairs" in df.loc["openvino-int8", "applied"]
    anchors = res.tables["published_anchors"]
    assert (anchors["value"].astype(str) == "426.8").any() and {"engine", "fps_kind"} <= set(anchors.columns)
    text = "\n".join(res.summary)
    assert "tensorrt-fp16 @ 96x64: skipped" in text and "CPU ISA" in text and "INT8 (openvino-int8)" in text
    files = {p.name for p in res.folder.iterdir()}
    assert {"results.csv", "speedup.csv", "skipped_or_stopped.csv", "int8_vs_ground_truth.csv", "speedup_bars.png",
            "quality_vs_speed.png", "published_anchors.csv", "metrics.json"} <= files
    head = json.loads((tmp_path / "cpu" / "metrics" / "optimisation.json").read_text())
    assert head["not_run"] == 2 and head["int8_speedup"] > 0 and len(head) <= 8
    assert_plots_readable("optimisation", tmp_path / "cpu")


def _slowed(monkeypatch, name, factor):
    """Build configuration `name` as a deliberately slowed copy (rifelab.measure.worker.Slowed): deterministic."""
    real = opt._workload

    def workload(c, run):
        w = real(c, run)
        return Slowed(w, factor=factor) if c.name == name else w

    monkeypatch.setattr(opt, "_workload", workload)


QUIET = {"max_spread": 100.0, "max_other_cpu": None, "max_steal": None, "attempts": 2}  # CI machines are shared
PAIR = [{"name": "fp32-eager"}, {"name": "cl", "channels_last": True}]


def test_a_configuration_far_slower_than_the_baseline_is_stopped_and_reported(tmp_path, monkeypatch):
    _slowed(monkeypatch, "slow", 10.0)
    configs = [{"name": "fp32-eager"}, {"name": "slow"}, {"name": "cl", "channels_last": True}]
    res = opt.run("cpu", {**TINY, "configs": configs, "max_slowdown": 3.0, "noise": QUIET}, tmp_path)
    df = res.tables["results"].set_index("config")
    assert df.loc["slow", "status"] == "too slow" and "baseline" in df.loc["slow", "reason"]
    assert df.loc["cl", "status"] == "ran"
    assert any(line.startswith("slow @ 96x64: too slow") for line in res.summary)


def test_every_configuration_runs_in_its_own_worker_and_a_clean_run_carries_no_flag(tmp_path):
    res = opt.run("cpu", {**TINY, "configs": PAIR, "noise": QUIET}, tmp_path)
    df = res.tables["results"].set_index("config")
    workers = set(df["worker"])
    assert len(workers) == 2 and os.getpid() not in workers
    assert not df["noisy"].any() and not res.headline["noisy"] and not res.metrics["timing"]["96x64"]["noisy"]
    assert not any("noisy" in line for line in res.summary)
    load = res.tables["timing_load"]
    assert {"other_cpu", "load_avg_1m", "steal_share", "attempts"} <= set(load.columns)
    assert json.loads((tmp_path / "cpu" / "metrics" / "optimisation.json").read_text())["noisy"] is False


def test_an_injected_slowdown_is_re_measured_then_published_flagged_noisy(tmp_path, monkeypatch):
    _slowed(monkeypatch, "fp32-eager", 10.0)  # the baseline slowed: the speedups leave the physical bound
    res = opt.run("cpu", {**TINY, "configs": PAIR, "noise": QUIET, "max_speedup": 3.0}, tmp_path)
    df = res.tables["results"].set_index("config")
    assert df["noisy"].all() and df["timing_attempts"].eq(QUIET["attempts"]).all()
    assert res.headline["noisy"] is True
    assert json.loads((tmp_path / "cpu" / "metrics" / "optimisation.json").read_text())["noisy"] is True
    assert "beyond the physical bound" in res.tables["timing_load"]["failed_checks"].iloc[0]
    assert res.summary[0].startswith("**noisy timing at 96x64**")
    assert any(line.startswith("(noisy) **96x64**") for line in res.summary)


def test_fp32_eager_disagreeing_with_the_baseline_study_flags_the_run(tmp_path):
    (tmp_path / "cpu" / "metrics").mkdir(parents=True)
    from rifelab.measure.profiling import device_name

    (tmp_path / "cpu" / "metrics" / "baseline.json").write_text(json.dumps(
        {"ms_96x64": 1e5, "environment": {"device_name": device_name("cpu")}}))
    res = opt.run("cpu", {**TINY, "configs": PAIR, "noise": {**QUIET, "attempts": 1}}, tmp_path)
    assert res.headline["noisy"] is True
    assert "in the baseline study at 96x64" in res.tables["timing_load"]["failed_checks"].iloc[0]


def test_bad_noise_limits_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ParamError, match="noise: unknown key"):
        opt.run("cpu", {**TINY, "noise": {"max_sprad": 2}}, tmp_path)


@pytest.mark.notebook
def test_notebook_runs_thin_with_tiny_params(tmp_path):
    out = tmp_path / "02.ipynb"
    tiny = {**TINY, "configs": TINY["configs"][:2] + TINY["configs"][3:]}
    run_notebook(ROOT / "notebooks" / "02_optimisation.ipynb", out,
                 {"profile": "cpu", "overrides": tiny, "results_root": str(tmp_path)}, cwd=ROOT)
    text = json.dumps(nbformat.read(out, as_version=4))
    assert "What this run measured" in text and "skipped" in text and "426.8" in text
    assert_figures_render(out, min_images=2)
