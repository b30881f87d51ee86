"""rifelab: reproducible studies of RIFE frame interpolation and RollingDepth co-alignment.

The public API, importable from the top (internal module paths may move behind it):

    from rifelab import load_rife, load_pruned           # RIFE 4.x weights; a pruned model saved by `rifelab prune`
    from rifelab import ModelSpec, load_model            # the same network on torch / ONNX Runtime / OpenVINO / TensorRT
    from rifelab import interpolate_sequence, InterpolateConfig   # frames or a video in, frames or a video out
    from rifelab import SnippetSet, AlignConfig, align, solve_lsq, merge   # RollingDepth co-alignment

The studies are `rifelab.studies.<study>` (interactive, baseline, optimisation, pruning, coalign).

Names are resolved on first use (PEP 562), by module path: `import rifelab` imports nothing else, so a DVC stage,
whose code dependencies are the static import closure of its study, does not depend on every package through here.
Library modules import from the defining modules, never from this namespace (tests/test_layers.py checks both).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it
_PUBLIC = {
    "load_rife": "rifelab.rife.checkpoints",
    "load_pruned": "rifelab.pruning.apply",
    "ModelSpec": "rifelab.engines.spec",
    "load_model": "rifelab.engines.spec",
    "interpolate_sequence": "rifelab.interpolate.run",
    "InterpolateConfig": "rifelab.interpolate.schedule",
    "SnippetSet": "rifelab.depth.snippets",
    "AlignConfig": "rifelab.depth.coalign",
    "align": "rifelab.depth.coalign",
    "merge": "rifelab.depth.coalign",
    "solve_lsq": "rifelab.depth.lsq",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first access, then keep it here."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'rifelab' has no attribute {name!r}; public names: {', '.join(_PUBLIC)}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
