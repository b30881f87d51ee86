"""Running the study notebooks headless with papermill, parameters taken from params.yaml.

Each study notebook `notebooks/NN_<study>.ipynb` is paired (jupytext, see jupytext.toml) with a percent script
`notebooks/py/NN_<study>.py` that holds its code and text only. The DVC stages depend on the script, so opening,
running or saving the notebook in JupyterLab (new metadata, outputs, execution counts) reruns nothing; JupyterLab
with jupytext saves both files, and a notebook whose code differs from its script is refused before it runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import nbformat
import yaml

from rifelab.publish.results import atomic_path, find_project_root

log = logging.getLogger(__name__)

__all__ = ["run_notebook", "parse_set", "clean_executed", "PAIRED_FOLDER", "paired_script", "check_paired",
           "NotebookOutOfSync"]

PAIRED_FOLDER = "py"  # notebooks/NN.ipynb <-> notebooks/py/NN.py (jupytext.toml at the project root)


class NotebookOutOfSync(ValueError):
    """A notebook's code or text differs from its paired script (the code-only form the pipeline depends on)."""


def paired_script(notebook: str | os.PathLike) -> Path:
    """The percent script paired with `notebook` (it may not exist, e.g. for a notebook outside the project)."""
    notebook = Path(notebook)
    return notebook.parent / PAIRED_FOLDER / f"{notebook.stem}.py"


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.cell_type, c.source.strip(), tuple(c.get("metadata", {}).get("tags", []))) for c in nb.cells]


def check_paired(notebook: str | os.PathLike) -> Path | None:
    """Raise NotebookOutOfSync when `notebook` and its paired script differ; the script, or None without one."""
    script = paired_script(notebook)
    if not script.is_file():
        return None
    import jupytext  # optional: the notebooks extra

    if _cells(jupytext.read(notebook)) != _cells(jupytext.read(script)):
        raise NotebookOutOfSync(
            f"{notebook} and its paired script {script} differ in code or text; the pipeline depends on the script. "
            f"Run `jupytext --sync {notebook}` (the file changed last wins), or open the notebook in a JupyterLab "
            "with jupytext installed (the notebooks extra), which saves both")
    return script


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
    check_paired(notebook)
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
        clean_executed(tmp, output, Path(cwd or find_project_root()))
    return output


def parse_set(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings (VALUE as YAML: 5, 0.5, [a, b], null) -> {KEY: value}; a clear error otherwise."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. --set n_triplets=5")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({exc.__class__.__name__}); "
                             "quote strings that contain ':' or '#'") from None
    return out


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return Path(path).name


def clean_executed(path: str | os.PathLike, output: str | os.PathLike, root: Path) -> None:
    """Drop machine paths from papermill's metadata of an executed notebook (input/output as project-relative)."""
    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("papermill", {})
    meta["input_path"] = _relative(meta.get("input_path", ""), root)
    meta["output_path"] = _relative(str(output), root)
    nbformat.write(nb, path)
