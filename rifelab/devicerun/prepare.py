"""Preparing a device run here (PyAV, git): real frame pairs as PNG, the flow weights, the commit, the payload size.

The device machine has no PyAV and no package registry, and one call carries at most 64 MiB (working tree
included). So the frames are decoded here, written losslessly, and the RIFE 4.0 checkpoint is reduced to the
tensors the fast path runs (the teacher block, contextnet and unet are never used: 35 MB -> 20.7 MB, values
unchanged). What a call sends, and fitting it under the limit: rifelab.devicerun.payload.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import subprocess
from pathlib import Path

import torch

from rifelab.devicerun.inputs import INPUTS_MANIFEST, WEIGHTS_FILE, code_fingerprint, pair_files
from rifelab.frames.assets import ASSETS, fetch, sha256_file
from rifelab.frames.clips import load_clip
from rifelab.frames.images import write_image
from rifelab.publish.results import atomic_path, atomic_write_text
from rifelab.rife.network import SKIPPED_GROUPS

log = logging.getLogger(__name__)

__all__ = ["PAIR_STEP", "prepare_inputs"]

PAIR_STEP = 8  # real pair k is frames 8k, 8k+1 of the clip (the optimisation study's quality pairs)


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, text=True, capture_output=True, check=True).stdout


def prepare_inputs(dest: str | os.PathLike, root: str | os.PathLike, pairs: int = 3,
                   clip: str = "bigbuckbunny") -> Path:
    """Write `pairs` real frame pairs, the fast-path weights and inputs.json (commit, fingerprint) into dest."""
    if pairs < 1:
        raise ValueError(f"pairs must be >= 1, got {pairs}")
    dest, root = Path(dest), Path(root)
    dest.mkdir(parents=True, exist_ok=True)
    frames = load_clip(clip, max_frames=PAIR_STEP * (pairs - 1) + 2)
    for k in range(pairs):
        for name, frame in zip(pair_files(k), frames[PAIR_STEP * k: PAIR_STEP * k + 2]):
            write_image(dest / name, frame)
    source = fetch("rife40")
    state = torch.load(source, map_location="cpu", weights_only=True)
    fast = {k: v for k, v in state.items() if k.removeprefix("module.").split(".")[0] not in SKIPPED_GROUPS}
    with atomic_path(dest / WEIGHTS_FILE) as tmp:
        torch.save(fast, tmp)
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
        dirty = bool(_git(root, "status", "--porcelain", "--", "rifelab", "scripts/device_run.sh").strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", True
    manifest = {
        "clip": clip, "pairs": pairs, "frames": [[PAIR_STEP * k, PAIR_STEP * k + 1] for k in range(pairs)],
        "width": int(frames.shape[2]), "height": int(frames.shape[1]), "format": "png (lossless, as decoded)",
        "weights": {"file": WEIGHTS_FILE, "source": ASSETS["rife40"].description,
                    "source_sha256": ASSETS["rife40"].sha256, "sha256": sha256_file(dest / WEIGHTS_FILE),
                    "dropped_groups": list(SKIPPED_GROUPS), "tensors": len(fast)},
        "git_commit": commit, "uncommitted_changes": dirty, "fingerprint": code_fingerprint(root),
        "prepared_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(dest / INPUTS_MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return dest
