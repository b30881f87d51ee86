"""Notebooks that survive a user's hands: trial runs never touch the committed results, figures render."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from notebook_checks import assert_figures_render
from rifelab.publish.results import COMMITTED_RESULTS, SCRATCH, input_folders, results_base

ROOT = Path(__file__).resolve().parent.parent
# notebook 04 (synthetic depth, no model) with the tiny parameters of tests/test_coalign.py
COALIGN_TINY = {"frames": [20], "resolutions": ["32x24"], "dilations": [1, 3], "factor": 2, "iterations": 60,
                "stopping_rules": [{"rule": "plateau", "tol": 1e-4, "patience": 10}], "refine_iterations": [0, 10],
                "timing_repeats": 1, "example_frames": 3}


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A committed copy of the project's notebook-facing files, with committed results, as a fresh clone has them."""
    proj = tmp_path / "proj"
    for rel in (".gitignore", "params.yaml", "params-cuda.yaml", "params-mps.yaml", "dvc.yaml",
                "notebooks/04_coalign.ipynb"):
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, proj / rel)
    committed = proj / COMMITTED_RESULTS / "cpu" / "metrics" / "coalign.json"
    committed.parent.mkdir(parents=True)
    committed.write_text('{"committed": true}\n')
    _git(proj, "init", "-q")
    _git(proj, "add", "-A")
    _git(proj, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone")
    return proj


def _notebook_cli(proj: Path, *extra: str) -> subprocess.CompletedProcess:
    sets = [f"--set={k}={json.dumps(v)}" for k, v in COALIGN_TINY.items()]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "rifelab.cli", "notebook", "notebooks/04_coalign.ipynb", *sets, *extra],
                          cwd=proj, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.notebook
def test_trial_runs_leave_the_committed_results_and_git_status_alone(project, tmp_path):
    """`rifelab notebook` without --results-root (what JupyterLab and Colab runs do: results_root = None) writes into
    the ignored scratch folder and names it first; with --results-root the executed notebook goes there too."""
    committed = (project / "results/cpu/metrics/coalign.json").read_text()
    run = _notebook_cli(project)
    assert run.returncode == 0, run.stderr[-2000:]
    scratch = project / SCRATCH / "cpu"
    assert str(scratch) in run.stdout.splitlines()[0] and "scratch" in run.stdout.splitlines()[0]
    executed = scratch / "notebooks" / "04_coalign.ipynb"
    first = next(o for c in json.loads(executed.read_text())["cells"] for o in c.get("outputs", []))
    assert "Trial run" in "".join(first.get("text", "")) and str(scratch) in "".join(first.get("text", ""))
    assert (scratch / "metrics" / "coalign.json").is_file()
    assert_figures_render(executed, min_images=3)

    elsewhere = tmp_path / "x"
    run = _notebook_cli(project, "--results-root", str(elsewhere))
    assert run.returncode == 0, run.stderr[-2000:]
    assert (elsewhere / "cpu" / "notebooks" / "04_coalign.ipynb").is_file()  # the executed notebook follows the root
    assert (elsewhere / "cpu" / "metrics" / "coalign.json").is_file()
    assert not (project / COMMITTED_RESULTS / "cpu" / "notebooks").exists()
    assert (project / "results/cpu/metrics/coalign.json").read_text() == committed
    assert _git(project, "status", "--porcelain", "--untracked-files=all") == ""


def test_read_only_inputs_come_from_the_committed_results_whatever_the_root(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert results_base("cpu") == ROOT / SCRATCH / "cpu"
    assert results_base("cpu", tmp_path) == tmp_path / "cpu"
    assert input_folders("cpu", tmp_path, "finetune") == [tmp_path / "cpu" / "finetune",
                                                           ROOT / "results" / "cpu" / "finetune"]
    assert input_folders("cpu", ROOT / "results", "finetune") == [ROOT / "results" / "cpu" / "finetune"]


@pytest.mark.skipif(not (ROOT / "results" / "cpu" / "finetune" / "lite.pt").is_file(), reason="no committed checkpoints")
def test_notebook_03_in_a_trial_folder_finds_the_committed_checkpoints(tmp_path, monkeypatch):
    from rifelab.studies import pruning
    from rifelab.studies.base import load_study_params

    monkeypatch.chdir(ROOT)
    p = load_study_params("pruning", pruning.PARAMS, "cpu")
    assert pruning.finetune_source(p, "cpu", tmp_path / "try") == ROOT / "results" / "cpu" / "finetune"
    assert not (tmp_path / "try").exists()
