"""What a device run reads: real frame pairs (PNG), the RIFE flow weights and the commit they were prepared at.

Prepared here by `rifelab device-prepare` (rifelab.devicerun.prepare, which needs PyAV) into INPUTS_DIR, carried
to the device machine, read there by `load_inputs` with nothing but numpy, PIL/imageio and torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rifelab.frames.images import read_image

__all__ = ["INPUTS_DIR", "INPUTS_MANIFEST", "WEIGHTS_FILE", "Inputs", "InputsError", "load_inputs", "pair_files",
           "code_fingerprint"]

INPUTS_DIR = ".device_inputs"  # ignored by git; named in the device tool's `carry`
INPUTS_MANIFEST = "inputs.json"
WEIGHTS_FILE = "flownet-fast.pt"  # the flow network's tensors only (the groups the fast path never runs dropped)


class InputsError(ValueError):
    """The prepared inputs are missing or incomplete."""


@dataclass
class Inputs:
    """Real frame pairs (uint8 (H, W, 3) each), the weights file and the preparation record."""

    folder: Path
    pairs: list[tuple[np.ndarray, np.ndarray]]
    weights: Path
    manifest: dict[str, Any]


def pair_files(k: int) -> tuple[str, str]:
    """File names of real pair k."""
    return f"pair{k}_0.png", f"pair{k}_1.png"


def load_inputs(folder: str | os.PathLike, max_pairs: int | None = None) -> Inputs:
    """Read the prepared inputs; a clear error saying how to prepare them when anything is missing."""
    folder = Path(folder)
    hint = ("prepare them on a machine with PyAV: `bash scripts/device_run.sh --prepare` (writes "
            f"{INPUTS_DIR}/), then name {INPUTS_DIR} in the device tool's carry")
    manifest_path = folder / INPUTS_MANIFEST
    if not manifest_path.is_file():
        raise InputsError(f"no prepared inputs at {folder} ({INPUTS_MANIFEST} missing); {hint}")
    manifest = json.loads(manifest_path.read_text())
    n = int(manifest["pairs"]) if max_pairs is None else min(int(manifest["pairs"]), max_pairs)
    needed = [f for k in range(n) for f in pair_files(k)] + [WEIGHTS_FILE]
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing:
        raise InputsError(f"prepared inputs at {folder} lack {missing}; {hint}")
    pairs = [(read_image(folder / a), read_image(folder / b)) for a, b in (pair_files(k) for k in range(n))]
    return Inputs(folder, pairs, folder / WEIGHTS_FILE, manifest)


def code_fingerprint(root: str | os.PathLike) -> str:
    """sha256 over the rifelab sources and the device script: whether the code that ran is the code prepared."""
    root = Path(root)
    h = hashlib.sha256()
    files = sorted((root / "rifelab").rglob("*.py")) + [root / "scripts" / "device_run.sh"]
    for f in files:
        if f.is_file():
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()
