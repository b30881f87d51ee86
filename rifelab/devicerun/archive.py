"""The device-run archive: one `device_run.tar.gz` holding a run's raw results, written there, checked here.

Layout (every member under `device_run/`):
    manifest.json     mode, exact command, start/end, deadline, inputs, code (commit, fingerprint), format
    environment.json  device name, torch/CUDA/cuDNN versions, git commit, CPU, time (profiling.environment_record)
    rows.jsonl        one measurement per line (ROW_KEYS at least); status ran | skipped | failed
    parts.jsonl       one line per part of the run: ok | timed out | failed | skipped, seconds, budget, reason
    kernels.jsonl     the profiler's top kernels of the best configuration (empty when that part did not run)
    log.txt           what the parts printed
"""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rifelab.publish.results import atomic_path

__all__ = ["ARCHIVE_NAME", "TOP", "MEMBERS", "ROW_KEYS", "PARTS", "ArchiveError", "DeviceRun", "write_archive",
           "read_archive", "read_jsonl"]

ARCHIVE_NAME = "device_run.tar.gz"
TOP = "device_run"
FORMAT = 1
MEMBERS = ("manifest.json", "environment.json", "rows.jsonl", "parts.jsonl", "kernels.jsonl", "log.txt")
# every row carries what produced it, so a row read alone still says where and how it was measured
ROW_KEYS = ("part", "config", "resolution", "batch", "streams", "status", "reason", "device_name", "torch_version",
            "cuda_version", "git_commit", "command")
# in run order: the profiler before compile, so the slowest, least predictable part cannot take its time
PARTS = ("precisions", "fp16_4k", "batch_streams", "profile", "compile", "pruning_finetune")
MANIFEST_KEYS = ("format", "mode", "command", "started_utc", "finished_utc", "wall_s", "deadline_s", "code")


class ArchiveError(ValueError):
    """A device-run archive is missing, unreadable or not laid out as `archive.py` says."""


@dataclass
class DeviceRun:
    """The contents of one archive."""

    path: Path
    manifest: dict[str, Any]
    environment: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    parts: list[dict[str, Any]] = field(default_factory=list)
    kernels: list[dict[str, Any]] = field(default_factory=list)
    log: str = ""


def read_jsonl(text: str, where: str) -> list[dict[str, Any]]:
    """Lines of JSON objects -> list of dicts; a clear error naming the file and line otherwise."""
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ArchiveError(f"{where} line {i} is not JSON ({exc.msg}); the run that wrote it was cut off "
                               "mid-line or the file was edited") from None
        if not isinstance(obj, dict):
            raise ArchiveError(f"{where} line {i} is not a JSON object")
        out.append(obj)
    return out


def write_archive(folder: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Pack MEMBERS of `folder` into out_dir/ARCHIVE_NAME (temporary name, then renamed); a missing member is an
    error."""
    folder, out = Path(folder), Path(out_dir) / ARCHIVE_NAME
    missing = [m for m in MEMBERS if not (folder / m).is_file()]
    if missing:
        raise ArchiveError(f"cannot pack {folder}: missing {missing}")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        with tarfile.open(tmp, "w:gz") as tar:
            for m in MEMBERS:
                tar.add(folder / m, arcname=f"{TOP}/{m}", recursive=False)
    return out


def _members(tar: tarfile.TarFile, path: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for info in tar.getmembers():
        name = info.name
        if name.startswith("/") or ".." in Path(name).parts or not name.startswith(f"{TOP}/"):
            raise ArchiveError(f"{path}: member {name!r} lies outside {TOP}/; not a device-run archive")
        if info.isdir():
            continue
        if not info.isfile():
            raise ArchiveError(f"{path}: member {name!r} is not a plain file (links are refused)")
        fh = tar.extractfile(info)
        assert fh is not None
        found[name[len(TOP) + 1:]] = fh.read()
    return found


def read_archive(path: str | os.PathLike) -> DeviceRun:
    """Read and check an archive: every member present, JSON valid, every row and part complete."""
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"device-run archive not found: {path}; run `bash scripts/device_run.sh $OUT` on the "
                           f"GPU machine and land its {ARCHIVE_NAME} (see README, GPU run)")
    try:
        with tarfile.open(path, "r:gz") as tar:
            files = _members(tar, path)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArchiveError(f"{path} is not a readable tar.gz ({exc}); copy it again from the device's output") from None
    missing = [m for m in MEMBERS if m not in files]
    extra = sorted(set(files) - set(MEMBERS))
    if missing or extra:
        raise ArchiveError(f"{path}: layout differs from rifelab.devicerun.archive: missing {missing}, "
                           f"unexpected {extra}")
    try:
        manifest = json.loads(files["manifest.json"])
        environment = json.loads(files["environment.json"])
    except json.JSONDecodeError as exc:
        raise ArchiveError(f"{path}: manifest.json or environment.json is not JSON ({exc.msg})") from None
    lacking = [k for k in MANIFEST_KEYS if k not in manifest]
    if lacking:
        raise ArchiveError(f"{path}: manifest.json lacks {lacking}")
    if manifest["format"] != FORMAT:
        raise ArchiveError(f"{path}: archive format {manifest['format']} but this rifelab reads format {FORMAT}")
    run = DeviceRun(path, manifest, environment,
                    rows=read_jsonl(files["rows.jsonl"].decode(), "rows.jsonl"),
                    parts=read_jsonl(files["parts.jsonl"].decode(), "parts.jsonl"),
                    kernels=read_jsonl(files["kernels.jsonl"].decode(), "kernels.jsonl"),
                    log=files["log.txt"].decode(errors="replace"))
    for i, row in enumerate(run.rows, 1):
        lacking = [k for k in ROW_KEYS if k not in row]
        if lacking:
            raise ArchiveError(f"{path}: rows.jsonl line {i} lacks {lacking}")
    listed = [p.get("part") for p in run.parts]
    if sorted(listed) != sorted(PARTS):
        raise ArchiveError(f"{path}: parts.jsonl lists {listed}; every part {list(PARTS)} must be there once, "
                           "with its status (a part not reached is recorded as skipped with the reason)")
    return run

