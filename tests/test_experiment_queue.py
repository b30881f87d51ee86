"""A parameter sweep on DVC's experiment queue, as the README shows it: queue two values, run the queue, show them.

The sweep runs the interactive study's real notebook (`rifelab notebook ... --profile cpu`) with tiny params in a
temporary git + DVC repository, so the project's own results and lock file are never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rifelab.studies import interactive

REPO = Path(__file__).resolve().parent.parent
TINY = {"clip": "carphone", "max_frames": 5, "triplet_stride": 1, "strip_timesteps": [0.5], "bench_clip": "carphone",
        "bench_frames": 2, "bench_multi": 3, "bench_batch_size": 2, "bench_repeats": 1}


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


@pytest.mark.slow
@pytest.mark.notebook
def test_sweep_on_the_dvc_experiment_queue(tmp_path):
    repo = tmp_path / "sweep"
    (repo / "notebooks").mkdir(parents=True)
    shutil.copy(REPO / "notebooks" / interactive.NOTEBOOK, repo / "notebooks")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["interactive"].update(TINY)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    tracked = ["common.seed"] + [f"interactive.{k}" for k, p in interactive.PARAMS.items() if p.tracked]
    stage = {
        "cmd": f"{sys.executable} -m rifelab.cli notebook notebooks/{interactive.NOTEBOOK} --profile cpu "
               "--results-root results",
        "deps": [f"notebooks/{interactive.NOTEBOOK}"],
        "params": tracked,
        "outs": [{"results/cpu/interactive": {"cache": False}}],
        "metrics": [{"results/headlines/cpu/interactive.json": {"cache": False}}],
    }
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"interactive": stage}}, sort_keys=False))
    env = dict(os.environ, PYTHONPATH=str(REPO), GIT_AUTHOR_NAME="rifelab test", GIT_AUTHOR_EMAIL="test@rifelab",
               GIT_COMMITTER_NAME="rifelab test", GIT_COMMITTER_EMAIL="test@rifelab", DVC_NO_ANALYTICS="1")
    dvc = [sys.executable, "-m", "dvc"]
    _run(["git", "init", "-q"], repo, env)
    _run([*dvc, "init", "-q"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "tiny sweep"], repo, env)

    for stride in (1, 2):  # what the README shows: queue the sweep points, start the queue, show the table
        _run([*dvc, "exp", "run", "--queue", "-S", f"interactive.triplet_stride={stride}", "-n", f"stride{stride}"],
             repo, env)
    _run([*dvc, "queue", "start", "-j", "1"], repo, env)
    end = time.monotonic() + 540
    while time.monotonic() < end:
        status = _run([*dvc, "queue", "status"], repo, env)
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert status.count("Success") == 2, status

    shown = json.loads(_run([*dvc, "exp", "show", "--json"], repo, env))
    found = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs", []):
                data = rev["data"]
                stride = data["params"]["params.yaml"]["data"]["interactive"]["triplet_stride"]
                found[rev["name"]] = (stride, data["metrics"]["results/headlines/cpu/interactive.json"]["data"])
    assert sorted(found) == ["stride1", "stride2"]
    assert found["stride1"][0] == 1 and found["stride2"][0] == 2
    psnr = {name: m["psnr_db"] for name, (_, m) in found.items()}
    assert all(20 < v < 60 for v in psnr.values()) and psnr["stride1"] != psnr["stride2"]  # two real runs
    assert not (repo / "results").exists()  # the workspace stays as it was; results live in the experiments
    table = _run([*dvc, "exp", "show", "--no-pager", "--csv"], repo, env)
    assert "stride1" in table and "psnr_db" in table
