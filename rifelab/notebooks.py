"""Running the study notebooks headless with papermill, parameters taken from params.yaml."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml

from .results import atomic_path, find_project_root

log = logging.getLogger(__name__)

__all__ = ["load_params", "notebook_parameters", "run_notebook", "parse_unpacked_params", "as_list"]


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


THIS_INTERPRETER_KERNEL = "rifelab-this-python"


def _env_timeout() -> float | None:
    value = os.environ.get("RIFELAB_CELL_TIMEOUT", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"RIFELAB_CELL_TIMEOUT must be a number of seconds, got {value!r}") from None
    if seconds <= 0:
        raise ValueError(f"RIFELAB_CELL_TIMEOUT must be positive, got {value!r}")
    return seconds


@contextlib.contextmanager
def _this_interpreter_kernel() -> Iterator[str]:
    """A kernelspec, visible only while the block runs, that starts a kernel with this very interpreter.

    Papermill would otherwise start whatever "python3" kernelspec Jupyter finds first (often another
    environment's), so the notebook could import a different rifelab, or none, than the command that runs it.
    """
    with tempfile.TemporaryDirectory(prefix="rifelab-kernel-") as tmp:
        spec = Path(tmp) / "kernels" / THIS_INTERPRETER_KERNEL
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python ({sys.executable})",
            "language": "python",
        }))
        old = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = tmp + (os.pathsep + old if old else "")
        try:
            yield THIS_INTERPRETER_KERNEL
        finally:
            if old is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = old


def run_notebook(
    notebook: str | os.PathLike,
    output: str | os.PathLike,
    parameters: dict[str, Any] | None = None,
    cwd: str | os.PathLike | None = None,
    kernel_name: str | None = None,
    log_output: bool = False,
    cell_timeout: float | None = None,
) -> Path:
    """Execute `notebook` with papermill, injecting `parameters`; write the executed copy atomically.

    Without `kernel_name` the kernel runs on the interpreter running this function (not whatever
    "python3" kernelspec Jupyter would pick); papermill leaves the notebook's kernelspec metadata as it was.
    `cell_timeout` (seconds; default: the RIFELAB_CELL_TIMEOUT environment variable, else none) fails a
    cell that runs longer, instead of waiting forever on a kernel that stopped answering.
    """
    import papermill as pm

    notebook = Path(notebook)
    if not notebook.exists():
        raise FileNotFoundError(f"notebook not found: {notebook}")
    output = Path(output)
    with contextlib.ExitStack() as stack:
        kernel = kernel_name or stack.enter_context(_this_interpreter_kernel())
        tmp = stack.enter_context(atomic_path(output))  # temporary name ends in .ipynb, renamed on success
        pm.execute_notebook(
            str(notebook),
            str(tmp),
            parameters=parameters or {},
            cwd=str(cwd or notebook.parent),
            kernel_name=kernel,
            log_output=log_output,
            progress_bar=False,
            execution_timeout=cell_timeout if cell_timeout is not None else _env_timeout(),
        )
    return output


def _scalar(token: str) -> Any:
    if token in ("None", "null", "~"):
        return None
    try:
        return yaml.safe_load(token)
    except yaml.YAMLError:
        return token


def parse_unpacked_params(tokens: list[str]) -> dict[str, Any]:
    """Parse DVC's dictionary unpacking (`--key v`, `--key v1 v2`, `--flag`, `--no-flag`) back to values.

    DVC renders `${section}` in a stage command as such flags; this turns them into notebook parameters.
    One value gives a scalar, several a list (notebooks accept either where they expect a list: `as_list`).
    """
    params: dict[str, Any] = {}
    key: str | None = None
    values: list[str] = []

    def flush() -> None:
        if key is None:
            return
        if not values:
            if key.startswith("no-") or key.startswith("no_"):
                params[key[3:]] = False
            else:
                params[key] = True
        elif len(values) == 1:
            params[key] = _scalar(values[0])
        else:
            params[key] = [_scalar(v) for v in values]

    for tok in tokens:
        if tok.startswith("--") and len(tok) > 2 and not _is_number(tok):
            flush()
            key, values = tok[2:], []
        else:
            if key is None:
                raise ValueError(f"unexpected parameter value {tok!r} before any --name")
            values.append(tok)
    flush()
    return params


def _is_number(tok: str) -> bool:
    try:
        float(tok)
        return True
    except ValueError:
        return False


def as_list(value: Any) -> list[Any]:
    """A parameter that may arrive as a scalar (one item) or a list, as a list; None -> []."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]
