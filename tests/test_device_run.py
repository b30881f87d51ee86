"""The GPU run (scripts/device_run.sh): device-side imports, the CPU smoke run, the archive's checks, the deadline,
the payload check, and rendering the cuda profile's results from a stored archive without touching anything else."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from dvc_checks import DVC
from import_closure import ROOT, stage_code

from rifelab.cli import main as cli_main
from rifelab.devicerun import runner
from rifelab.devicerun.archive import (
    ARCHIVE_NAME,
    MEMBERS,
    PARTS,
    ROW_KEYS,
    TOP,
    ArchiveError,
    read_archive,
    write_archive,
)
from rifelab.devicerun.parts import Plan
from rifelab.engines.torch_engine import parse_config

# what the lent GPU machine lacks (KINDS.md): the device side must import without any of them
ABSENT_ON_DEVICE = ["av", "openvino", "nncf", "ptflops", "torch_pruning", "papermill", "dvc", "nbformat", "nbconvert",
                    "tensorrt", "torch_tensorrt", "ray", "jupyter_client", "ipykernel"]


def test_device_side_imports_nothing_the_gpu_machine_lacks():
    code = f"""
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {ABSENT_ON_DEVICE!r}:
            raise ImportError("not on the device machine: " + name)
sys.meta_path.insert(0, Absent())
import rifelab.devicerun.cli
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-1500:]


@pytest.mark.slow
def test_smoke_run_writes_one_checked_archive(tmp_path):
    out = tmp_path / "out"
    t0 = time.time()
    proc = subprocess.run(["bash", "scripts/device_run.sh", "--smoke", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
    assert time.time() - t0 < 240  # a loose bound: the 2 minutes hold on an idle CI runner
    assert [p.name for p in out.iterdir()] == [ARCHIVE_NAME]  # one archive: the device tool returns <= 8 files
    run = read_archive(out / ARCHIVE_NAME)
    assert run.manifest["mode"] == "smoke" and run.manifest["command"] == f"bash scripts/device_run.sh --smoke {out}"
    assert sorted(p["part"] for p in run.parts) == sorted(PARTS)
    assert all(row["command"] == run.manifest["command"] and row["torch_version"] for row in run.rows)
    assert all(set(ROW_KEYS) <= set(row) for row in run.rows)
    fp32 = [r for r in run.rows if r["part"] == "precisions" and r["config"] == "fp32-eager"]
    assert fp32 and fp32[0]["status"] == "ran" and fp32[0]["psnr_vs_fp32_db"] == 99.0
    assert fp32[0]["calls_per_s"] > 0 and fp32[0]["output_fps_2x"] == pytest.approx(2 * fp32[0]["calls_per_s"])
    reasons = {p["part"]: p["reason"] for p in run.parts if p["status"] == "skipped"}
    assert {"fp16_4k", "compile", "pruning_finetune"} <= set(reasons) and all(reasons.values())


def _fixture_archive(folder: Path, out: Path) -> Path:
    """A GPU-like archive with SYNTHETIC rows (labelled as such): only the rendering is under test."""
    folder.mkdir()
    env = {"device_name": "FIXTURE GPU (synthetic rows, not a measurement)", "torch_version": "2.11.0+cu130",
           "cuda_version": "13.0", "cudnn_version": 91000, "git_commit": "0123456789abcdef"}
    cmd = "bash scripts/device_run.sh /out"
    base = {"batch": 1, "streams": 1, "reason": "", **env, "command": cmd, "peak_mem_mib": 900.0, "first_call_s": 1.0,
            "median_ms": 3.0, "p90_ms": 3.5, "max_abs_diff": 0.01}
    rows = [
        {"part": "precisions", "config": "fp32-eager", "resolution": "1920x1080", "status": "ran", "calls_per_s": 100.0,
         "psnr_vs_fp32_db": 99.0},
        {"part": "precisions", "config": "fp16-cl-cudnn-graphs", "resolution": "1920x1080", "status": "ran",
         "calls_per_s": 400.0, "psnr_vs_fp32_db": 52.0},
        {"part": "precisions", "config": "bf16-cl-cudnn-graphs", "resolution": "1920x1080", "status": "ran",
         "calls_per_s": 450.0, "psnr_vs_fp32_db": 41.0},  # faster, but below FP32 quality: never the best
        {"part": "precisions", "config": "fp32-eager", "resolution": "1280x720", "status": "ran", "calls_per_s": 220.0,
         "psnr_vs_fp32_db": 99.0},
        {"part": "precisions", "config": "fp16", "resolution": "1920x1080", "status": "ran", "calls_per_s": 250.0,
         "psnr_vs_fp32_db": 52.3},
        {"part": "fp16_4k", "config": "fp16", "resolution": "3840x2160", "status": "ran", "calls_per_s": 60.0,
         "psnr_vs_fp32_db": 47.5},
        {"part": "compile", "config": "fp16-cl-cudnn-graphs+compile-default", "resolution": "1920x1080",
         "status": "ran", "calls_per_s": 420.0, "psnr_vs_fp32_db": 51.0, "compile_mode": "default"},
        {"part": "batch_streams", "config": "fp16-cl-cudnn-graphs", "resolution": "1920x1080", "status": "skipped",
         "reason": "not reached: 2 s of the part's budget left", "streams": 2},
    ]
    rows = [{**base, **r, "output_fps_2x": 2 * r.get("calls_per_s", 0),
             "psnr_vs_fp32_min_db": r.get("psnr_vs_fp32_db", 0) - 1} for r in rows]
    parts = [{"part": p, "status": "ok", "seconds": 10.0, "budget_s": 50.0, "reason": ""} for p in PARTS[:-1]]
    parts.append({"part": PARTS[-1], "status": "skipped", "seconds": 0.0, "budget_s": 0.0, "reason": "left out"})
    kernels = [{"rank": 1, "kernel": "sm90_xmma_fprop_implicit_gemm_f16", "calls": 40, "self_time_ms": 50.0,
                "per_model_call_us": 5000.0, "share_pct": 61.0, "time_kind": "self device time",
                "config": "fp16-cl-cudnn", "resolution": "1920x1080", "batch": 1}]
    manifest = {"format": 1, "mode": "gpu", "command": cmd, "started_utc": "2026-12-01T10:00:00Z",
                "finished_utc": "2026-12-01T10:07:00Z", "wall_s": 420.0, "deadline_s": 450.0, "code": {}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "environment.json").write_text(json.dumps(env))
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "parts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in parts))
    (folder / "kernels.jsonl").write_text("".join(json.dumps(k) + "\n" for k in kernels))
    (folder / "log.txt").write_text("fixture\n")
    return write_archive(folder, out)


def _tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        h.update(str(f.relative_to(folder)).encode() + (f.read_bytes() if f.is_file() else b""))
    return h.hexdigest()


@pytest.mark.notebook
def test_cuda_report_renders_from_a_stored_archive_and_touches_nothing_else(tmp_path):
    archive = _fixture_archive(tmp_path / "raw", tmp_path / "device_out")
    results = tmp_path / "results"
    cpu = results / "cpu" / "metrics"
    cpu.mkdir(parents=True)
    (cpu / "optimisation.json").write_text('{"committed": true}')
    before = _tree_hash(results / "cpu")
    assert cli_main(["device-report", str(archive), "--results-root", str(results)]) == 0
    assert _tree_hash(results / "cpu") == before
    written = {str(p.relative_to(results)) for p in results.rglob("*") if p.is_file()}
    written -= {"cpu/metrics/optimisation.json"}
    assert all(w.startswith("cuda/") for w in written), written
    assert {"cuda/device_run.tar.gz", "cuda/notebooks/05_device_run.ipynb", "cuda/device_report.html",
            "cuda/metrics/device_run.json", "cuda/device_run/summary_1920x1080.csv",
            "cuda/device_run/kernels_top5.csv", "cuda/device_run/calls_per_s.png"} <= written
    assert (results / "cuda" / ARCHIVE_NAME).read_bytes() == archive.read_bytes()  # landed unchanged
    head = json.loads((results / "cuda" / "metrics" / "device_run.json").read_text())
    assert head["best_config"] == "fp16-cl-cudnn-graphs+compile-default b1 s1"  # bf16's 450 calls/s is at 41 dB
    assert head["goal"] == "missed" and head["goal_fraction"] == pytest.approx(420 / 500)
    html = (results / "cuda" / "device_report.html").read_text()
    assert "nothing was re-timed" in html and "FIXTURE GPU" in html and "2026-12-01T10:00:00Z" in html
    assert "sm90_xmma_fprop_implicit_gemm_f16" in html
    assert "PSNR vs FP32 47.5 dB (min 46.5; 52.3 dB at 1920x1080)" in html  # FP16 at 4K beside FP16 at 1080p
    nb = (results / "cuda" / "notebooks" / "05_device_run.ipynb").read_text()
    assert "FIXTURE GPU" in nb and "image/png" in nb  # the executed notebook shows the summary and the figure


def test_device_run_stage_renders_the_landed_archive_into_the_cuda_profile_only():
    st = DVC["stages"]["device_run"]
    assert st["cmd"] == "rifelab device-report results/cuda/device_run.tar.gz --results-root results"
    assert "results/cuda/device_run.tar.gz" in st["deps"] and "notebooks/py/05_device_run.py" in st["deps"]
    assert sorted(d for d in st["deps"] if d.startswith("rifelab/")) == stage_code("device_run")
    outs = [next(iter(o)) for o in st["outs"] + st["metrics"]]
    assert outs and all(o.startswith("results/cuda/") for o in outs)


def test_archive_with_a_wrong_layout_is_refused(tmp_path):
    good = _fixture_archive(tmp_path / "raw", tmp_path / "ok")
    read_archive(good)
    with pytest.raises(ArchiveError, match="not found"):
        read_archive(tmp_path / "none.tar.gz")
    bad = tmp_path / "missing.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        for m in MEMBERS[1:]:
            tar.add(tmp_path / "raw" / m, arcname=f"{TOP}/{m}")
    with pytest.raises(ArchiveError, match="missing \\['manifest.json'\\]"):
        read_archive(bad)
    outside = tmp_path / "outside.tar.gz"
    with tarfile.open(outside, "w:gz") as tar:
        tar.add(tmp_path / "raw" / "log.txt", arcname="../log.txt")
    with pytest.raises(ArchiveError, match="outside"):
        read_archive(outside)
    (tmp_path / "raw" / "parts.jsonl").write_text(json.dumps({"part": "precisions"}) + "\n")
    with pytest.raises(ArchiveError, match="every part"):
        read_archive(write_archive(tmp_path / "raw", tmp_path / "parts"))


def test_parts_past_the_global_deadline_are_skipped_with_the_reason(tmp_path):
    plan = runner.make_plan("gpu", tmp_path, tmp_path, {})
    records = runner._parts(plan, deadline=time.time() - 1, logfile=None)  # no process is started
    assert [r["part"] for r in records] == list(PARTS)
    assert all(r["status"] == "skipped" for r in records)
    assert all("global deadline" in r["reason"] for r in records if r["part"] != "pruning_finetune")
    assert "torch-pruning" in records[-1]["reason"]
    plan.save(tmp_path / "plan.json")
    gpu = Plan.load(tmp_path / "plan.json")  # the GPU plan, as each part process reads it
    assert gpu.resolutions == [(1920, 1080), (1280, 720)] and gpu.batches == [1, 4, 8] and gpu.hires == (3840, 2160)


def test_each_part_keeps_its_budget_and_the_last_ends_before_the_deadline(tmp_path, monkeypatch):
    given: dict[str, float] = {}

    def fake_part(part, work, timeout, logfile):
        given[part] = timeout
        return "ok", ""

    monkeypatch.setattr(runner, "_run_part", fake_part)
    plan = runner.make_plan("gpu", tmp_path, tmp_path, {})
    deadline = time.time() + runner.DEADLINE_S["gpu"]
    runner._parts(plan, deadline, io.StringIO())
    assert list(given) == list(runner.BUDGETS["gpu"]) == [p for p in PARTS if p != "pruning_finetune"]
    assert all(given[p] >= b for p, b in runner.BUDGETS["gpu"].items())
    assert time.time() + given["compile"] <= deadline - runner.RESERVE_S + 1


def test_every_planned_configuration_is_a_valid_engine_configuration(tmp_path):
    plan = runner.make_plan("gpu", tmp_path, tmp_path, {})
    for name, options in plan.configs.items():
        parse_config(options, name=name)  # an unknown switch would only show on the GPU machine otherwise
    for mode in plan.compile_modes:
        assert parse_config({**plan.configs[plan.base], "compile": True, "compile_mode": mode}).compile_mode == mode
    assert plan.base in plan.configs and set(plan.hires_configs) <= set(plan.configs)
    assert plan.configs[plan.base]["cuda_graphs"] and plan.configs[plan.base]["static_buffers"]
