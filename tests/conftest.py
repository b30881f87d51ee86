"""Shared fixtures: real frames from the bundled clips and, when present, the Middlebury set in ../shared."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
MIDDLEBURY = ROOT.parent / "shared" / "data" / "middlebury-other"

torch.set_num_threads(min(2, torch.get_num_threads()))
# a notebook cell that hangs (a kernel that stops answering) fails its test instead of stalling the suite
os.environ.setdefault("RIFELAB_CELL_TIMEOUT", "600")


@pytest.fixture(scope="session")
def rife():
    from rifelab.rife.checkpoints import load_rife

    return load_rife()


@pytest.fixture(scope="session")
def carphone() -> np.ndarray:
    from rifelab.frames.clips import load_clip

    return load_clip("carphone", max_frames=12)


@pytest.fixture(scope="session")
def bikes() -> np.ndarray:
    from rifelab.frames.clips import load_clip

    return load_clip("bikes", max_frames=21)


@pytest.fixture(scope="session")
def middlebury() -> Path:
    if not (MIDDLEBURY / "gt").is_dir():
        pytest.skip("Middlebury frames (../shared/data/middlebury-other) not present on this machine")
    return MIDDLEBURY
