"""The pipeline: DVC wiring, parameter passing from templated commands, and the baseline notebook smoke run."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import papermill
import pytest
import yaml

from rifelab.notebooks import as_list, load_params, parse_unpacked_params, run_notebook
from rifelab.results import atomic_write_text, publish

ROOT = Path(__file__).resolve().parent.parent


def test_parse_dvc_unpacked_params():
    tokens = "--device auto --checkpoint None --no-fast --full --clips carphone bikes --n 3 --lr 0.001 --shift -1".split()
    assert parse_unpacked_params(tokens) == {
        "device": "auto", "checkpoint": None, "fast": False, "full": True,
        "clips": ["carphone", "bikes"], "n": 3, "lr": 0.001, "shift": -1,
    }
    assert as_list("bikes") == ["bikes"] and as_list(None) == [] and as_list([1, 2]) == [1, 2]
    with pytest.raises(ValueError, match="before any --name"):
        parse_unpacked_params(["orphan"])


def test_every_stage_lists_the_params_its_notebook_reads():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = load_params(ROOT / "params.yaml")
    for name, stage in dvc["stages"].items():
        cmd = stage["cmd"]
        if "rifelab notebook" not in cmd:
            continue
        toks = cmd.split()
        sections = toks[toks.index("--sections") + 1 :]
        assert sorted(stage["params"]) == sorted(sections), name
        nb = json.loads((ROOT / cmd.split()[2]).read_text())
        tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{name}: exactly one cell tagged 'parameters'"
        # papermill's own parser: a line it cannot parse (e.g. an '=' in a comment) hides that parameter
        declared = papermill.inspect_notebook(str(ROOT / cmd.split()[2]))
        for section in sections:
            for key in params[section]:
                assert key in declared, f"{name}: params.yaml {section}.{key} is not a (parseable) notebook parameter"


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    from rifelab.results import atomic_path

    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "x.json") as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    atomic_write_text(tmp_path / "y.txt", "ok")
    assert (tmp_path / "y.txt").read_text() == "ok"
    # the renamed file gets the mode of any file the user writes (mkstemp alone would leave 0600)
    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "z.txt", "ok")
        assert stat.S_IMODE((tmp_path / "z.txt").stat().st_mode) == 0o644
    finally:
        os.umask(umask)


def test_publish_fixed_paths(tmp_path):
    import pandas as pd

    paths = publish("demo", {"a": 1.0}, {"curve": pd.DataFrame({"x": [1], "y": [2]})}, root=tmp_path, device="cpu")
    assert tmp_path / "metrics" / "demo.json" in paths
    data = json.loads((tmp_path / "metrics" / "demo.json").read_text())
    assert data["a"] == 1.0 and data["environment"]["device"] == "cpu"
    assert (tmp_path / "plots" / "demo" / "curve.csv").read_text().startswith("x,y")


@pytest.mark.notebook
def test_baseline_notebook_smoke(tmp_path, middlebury):
    out_nb = tmp_path / "01.ipynb"
    run_notebook(ROOT / "notebooks" / "01_baseline.ipynb", out_nb, cwd=ROOT, parameters={
        "clips": ["carphone", "bikes"], "n_triplets": 2, "resolutions": "160x96", "repeats": 2, "warmup": 0,
        "dataset_path": str(middlebury), "dataset_limit": 2, "examples": 2, "results_root": str(tmp_path),
    })
    (dev_dir,) = (tmp_path / "baseline").iterdir()
    for name in ("quality_summary.csv", "quality_summary.md", "efficiency.csv", "triplet_grid.png",
                 "psnr_distribution.png", "latency_vs_resolution.png", "published_vs_ours_quality.md", "metrics.json"):
        assert (dev_dir / name).exists(), name
    metrics = json.loads((tmp_path / "metrics" / "baseline.json").read_text())
    assert metrics["quality"]["bikes"]["psnr_gain_vs_average"] > 3
    assert metrics["environment"]["torch_version"]
    assert "160x96" in metrics["efficiency"]
    assert (tmp_path / "plots" / "baseline" / "latency.csv").exists()


def test_gpu_params_file_mirrors_params_yaml():
    """params-gpu.yaml is a drop-in params.yaml: same sections and keys, GPU configs that parse."""
    from rifelab.optimisation import study_configs

    cpu = load_params(ROOT / "params.yaml")
    gpu = load_params(ROOT / "params-gpu.yaml")
    assert list(gpu) == list(cpu)
    for section in cpu:
        assert sorted(gpu[section]) == sorted(cpu[section]), section
    opt = gpu["optimisation"]
    configs = study_configs(opt["configs"], baseline=opt["baseline"])
    assert any(c.config.dtype == "fp16" and c.config.cuda_graphs for c in configs)
    assert opt["target_resolution"] in opt["resolutions"]
    assert all(s in gpu["pruning"]["sparsities"] for s in (float(f.split("@")[1]) for f in gpu["pruning"]["finetune"]))


def test_notebooks_run_on_this_interpreter(tmp_path, monkeypatch):
    """The kernel is this interpreter, not whatever 'python3' kernelspec Jupyter finds first."""
    import sys

    import nbformat

    monkeypatch.delenv("JUPYTER_PATH", raising=False)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import sys; print(sys.executable, x)")]
    src = tmp_path / "nb.ipynb"
    nbformat.write(nb, src)
    out = run_notebook(src, tmp_path / "out.ipynb", parameters={"x": 7})
    executed = json.loads(out.read_text())
    texts = [o.get("text", "") for o in executed["cells"][-1]["outputs"]]
    printed = "".join(t if isinstance(t, str) else "".join(t) for t in texts)
    assert printed.split() == [sys.executable, "7"]
    assert executed["metadata"]["kernelspec"]["name"] == "python3"  # the output opens like its source
    assert "JUPYTER_PATH" not in os.environ
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb.ipynb", "out.ipynb"]


def test_cell_timeout_from_environment(monkeypatch, tmp_path):
    from rifelab.notebooks import _env_timeout

    monkeypatch.setenv("RIFELAB_CELL_TIMEOUT", "90")
    assert _env_timeout() == 90.0
    for bad in ("soon", "-5"):
        monkeypatch.setenv("RIFELAB_CELL_TIMEOUT", bad)
        with pytest.raises(ValueError, match="RIFELAB_CELL_TIMEOUT"):
            _env_timeout()
    monkeypatch.delenv("RIFELAB_CELL_TIMEOUT")
    assert _env_timeout() is None
