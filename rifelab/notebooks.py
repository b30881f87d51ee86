"""Running the study notebooks headless with papermill, parameters taken from params.yaml."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml

from .results import atomic_path, find_project_root

log = logging.getLogger(__name__)

__all__ = ["load_params", "notebook_parameters", "run_notebook"]


def load_params(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read params.yaml (default: the project root's)."""
    path = Path(path) if path is not None else find_project_root() / "params.yaml"
    if not path.exists():
        raise FileNotFoundError(f"params file not found: {path}; run from the project root or pass its path")
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of sections at the top level")
    return data


def notebook_parameters(params: dict[str, Any], section: str, common: str = "common") -> dict[str, Any]:
    """Flat notebook parameters: the `common` section overlaid by the study's own section."""
    if section not in params:
        raise KeyError(f"params has no section {section!r}; sections present: {sorted(params)}")
    merged: dict[str, Any] = dict(params.get(common) or {})
    merged.update(params[section] or {})
    return merged


def run_notebook(
    notebook: str | os.PathLike,
    output: str | os.PathLike,
    parameters: dict[str, Any] | None = None,
    cwd: str | os.PathLike | None = None,
    kernel_name: str | None = None,
    log_output: bool = False,
) -> Path:
    """Execute `notebook` with papermill, injecting `parameters`; write the executed copy atomically."""
    import papermill as pm

    notebook = Path(notebook)
    if not notebook.exists():
        raise FileNotFoundError(f"notebook not found: {notebook}")
    output = Path(output)
    with atomic_path(output) as tmp:
        tmp_nb = tmp.with_suffix(".ipynb")
        try:
            pm.execute_notebook(
                str(notebook),
                str(tmp_nb),
                parameters=parameters or {},
                cwd=str(cwd or notebook.parent),
                kernel_name=kernel_name,
                log_output=log_output,
                progress_bar=False,
            )
            os.replace(tmp_nb, tmp)
        finally:
            if tmp_nb.exists():
                tmp_nb.unlink()
    return output
