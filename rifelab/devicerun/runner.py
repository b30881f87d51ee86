"""A whole device run: the plan, one subprocess per part under one global deadline, then one archive.

Each part gets its budget plus whatever earlier parts left unused, never more than the time left before the
global deadline less the budgets of the parts still to come (and a reserve for packing). A part that overruns is
killed with its process group (compile workers included); the rows it wrote stay. A part the deadline does not reach, and the pruning fine-tuning, are
recorded as skipped with the reason. Nothing is dropped silently: archive.read_archive checks the layout.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from rifelab.devicerun.archive import PARTS, read_archive, write_archive
from rifelab.devicerun.inputs import INPUTS_MANIFEST, code_fingerprint
from rifelab.devicerun.parts import FP32, GPU_CONFIGS, GRAPHS, SMOKE_CONFIGS, Plan
from rifelab.measure.profiling import environment_record

log = logging.getLogger(__name__)

__all__ = ["DEADLINE_S", "BUDGETS", "PRUNING_REASON", "make_plan", "run"]

DEADLINE_S = {"gpu": 450.0, "smoke": 80.0}  # the whole run, start to archive; device_run.sh adds a hard limit
BUDGETS = {  # seconds per part; unused time passes on to the next part
    "gpu": {"precisions": 100, "fp16_4k": 35, "batch_streams": 70, "profile": 35, "compile": 190},
    "smoke": {"precisions": 35, "fp16_4k": 0, "batch_streams": 20, "compile": 0, "profile": 15},
}
MIN_PART_S = {"gpu": 20.0, "smoke": 5.0}  # less left than this: the part is skipped
RESERVE_S = 8.0  # kept for writing and checking the archive
PRUNING_REASON = (
    "left out: the cuda profile's fine-tuning (6 pruned configurations x 4000 distillation steps of batch 16) is "
    "far beyond an 8-minute run; it also needs torch-pruning (absent on the device machine; a small wheel could "
    "travel) and decodes its training clips with PyAV (absent, too large to carry). Adding it needs a prepared "
    "crop set in the inputs and a carried torch-pruning wheel, and a run of its own")
ROW_ENV = ("device_name", "torch_version", "cuda_version", "cudnn_version", "git_commit")


def make_plan(mode: str, work: Path, inputs: Path, env: dict[str, Any]) -> Plan:
    """The GPU plan (1080p and 720p, every configuration, batch 1/4/8, 2 streams, 4K FP16, compile) or the smoke one."""
    if mode == "gpu":
        return Plan(mode, "cuda", str(inputs), str(work), env, resolutions=[(1920, 1080), (1280, 720)],
                    configs=GPU_CONFIGS, base=GRAPHS, batches=[1, 4, 8], streams=[(1, 2), (4, 2)],
                    hires=(3840, 2160), hires_configs=[FP32, "fp16", GRAPHS, "bf16"],
                    compile_modes=["default", "max-autotune-no-cudagraphs"], warmup=5, repeats=20,
                    throughput_s=0.6)
    return Plan(mode, "cpu", str(inputs), str(work), env, resolutions=[(64, 64)], configs=SMOKE_CONFIGS,
                base=FP32, batches=[1, 2], streams=[], hires=None, hires_configs=[], compile_modes=[], warmup=0,
                repeats=2, throughput_s=0.0, pairs=1, profile_calls=2)


def _code(inputs: Path, root: Path) -> dict[str, Any]:
    """The commit the inputs were prepared at, and whether the code that runs is the code prepared."""
    prepared = json.loads((inputs / INPUTS_MANIFEST).read_text()) if (inputs / INPUTS_MANIFEST).is_file() else {}
    now = code_fingerprint(root)
    same = prepared.get("fingerprint") == now
    commit = prepared.get("git_commit", "unknown")
    label = commit if same and not prepared.get("uncommitted_changes", True) else f"{commit}+uncommitted-changes"
    return {"prepared_commit": commit, "prepared_uncommitted_changes": prepared.get("uncommitted_changes"),
            "fingerprint_prepared": prepared.get("fingerprint"), "fingerprint_run": now,
            "same_code_as_prepared": same, "commit_label": label}


def _run_part(part: str, work: Path, timeout: float, logfile: Any) -> tuple[str, str]:
    """Run one part in its own process group; (status, reason)."""
    soft = time.time() + max(timeout - max(5.0, 0.1 * timeout), 0.5 * timeout)  # stop starting new work here
    cmd = [sys.executable, "-m", "rifelab.devicerun.cli", "part", part, "--work", str(work),
           "--deadline", f"{soft:.1f}"]
    proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return "timed out", f"killed after its {timeout:.0f} s; the rows it wrote are kept"
    finally:
        if proc.poll() is None:  # the runner itself is stopped (SIGTERM): its own session would outlive the command
            os.killpg(proc.pid, signal.SIGKILL)
    return ("ok", "") if rc == 0 else ("failed", f"exit status {rc} (see log.txt)")


def _not_applicable(part: str, plan: Plan) -> str | None:
    """Why a part has nothing to do under this plan (then no process is started for it), or None."""
    if part == "pruning_finetune":
        return PRUNING_REASON
    if part == "fp16_4k" and (plan.hires is None or plan.device != "cuda"):
        return "needs a CUDA GPU (half precision at 3840x2160)"
    if part == "compile" and not plan.compile_modes:
        return "smoke run: torch.compile takes minutes on a CPU; the GPU run compiles"
    return None


def _parts(plan: Plan, deadline: float, logfile: Any) -> list[dict[str, Any]]:
    mode, work = plan.mode, Path(plan.work)
    records, banked = [], 0.0
    for part in PARTS:
        budget = BUDGETS[mode].get(part, 0)
        why = _not_applicable(part, plan)
        if why:
            records.append({"part": part, "status": "skipped", "seconds": 0.0, "budget_s": 0.0, "reason": why})
            continue
        later = sum(BUDGETS[mode].get(q, 0) for q in PARTS[PARTS.index(part) + 1:] if not _not_applicable(q, plan))
        left = deadline - time.time() - RESERVE_S
        if left < MIN_PART_S[mode]:
            records.append({"part": part, "status": "skipped", "seconds": 0.0, "budget_s": budget,
                            "reason": f"global deadline: {max(left, 0):.0f} s left of the run's "
                                      f"{DEADLINE_S[mode]:.0f} s"})
            continue
        timeout = max(min(budget + banked, left - later), MIN_PART_S[mode])
        logfile.write(f"\n=== part {part}: up to {timeout:.0f} s ===\n")
        logfile.flush()
        t0 = time.time()
        status, reason = _run_part(part, work, timeout, logfile)
        spent = time.time() - t0
        banked = max(0.0, timeout - spent)
        records.append({"part": part, "status": status, "seconds": round(spent, 2), "budget_s": round(timeout, 1),
                        "reason": reason})
        log.info("part %s: %s in %.0f s", part, status, spent)
    return records


def run(out_dir: str | os.PathLike, mode: str, inputs: str | os.PathLike, root: str | os.PathLike, command: str,
        deadline_s: float | None = None) -> Path:
    """Measure the plan of `mode` (gpu | smoke) and write one archive into out_dir; returns its path."""
    if mode == "gpu" and not torch.cuda.is_available():
        raise RuntimeError(f"the GPU run needs CUDA, but torch {torch.__version__} sees no CUDA device here; "
                           "use --smoke on a CPU")
    started, inputs, root = time.time(), Path(inputs).resolve(), Path(root).resolve()
    deadline = started + (deadline_s or DEADLINE_S[mode])
    code = _code(inputs, root)
    os.environ.setdefault("RIFELAB_GIT_COMMIT", code["commit_label"])  # used where git is absent (device machine)
    device = "cuda" if mode == "gpu" else "cpu"
    env = environment_record(device)
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(gpu_memory_mib=props.total_memory / 2**20, gpu_multiprocessors=props.multi_processor_count,
                   gpu_capability=f"{props.major}.{props.minor}")
    work = Path(tempfile.mkdtemp(prefix="device_run-"))
    try:
        plan = make_plan(mode, work, inputs, {**{k: env.get(k) for k in ROW_ENV}, "command": command})
        plan.save(work / "plan.json")
        for name in ("rows.jsonl", "kernels.jsonl"):
            (work / name).touch()
        with open(work / "log.txt", "w") as logfile:
            parts = _parts(plan, deadline, logfile)
        finished = time.time()
        manifest = {"format": 1, "mode": mode, "command": command,
                    "started_utc": _utc(started), "finished_utc": _utc(finished),
                    "wall_s": round(finished - started, 1), "deadline_s": deadline_s or DEADLINE_S[mode],
                    "code": code, "inputs": _inputs_record(inputs),
                    "plan": json.loads((work / "plan.json").read_text())}
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
        (work / "environment.json").write_text(json.dumps(env, indent=1, default=str))
        (work / "parts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in parts))
        path = write_archive(work, out_dir)
        read_archive(path)  # the layout check: a malformed archive fails here, on the device
        return path
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _inputs_record(inputs: Path) -> dict[str, Any]:
    path = inputs / INPUTS_MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
