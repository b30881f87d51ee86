"""JupyterLab saves a study notebook in its committed form: code and text, no outputs, counts or front-end metadata.

Installed with rifelab as Jupyter server configuration (`etc/jupyter/jupyter_server_config.d/rifelab.json`, the way
Jupyter extensions configure themselves), this pre-save hook keeps `git status` clean after a study notebook is opened,
run and saved: the file on disk stays byte-identical unless its code or text changed. It touches only the study
notebooks of a rifelab project (`notebooks/NN_<study>.ipynb` beside a `jupytext.toml`); the live session keeps its
outputs, and the executed copies live in `results/<profile>/notebooks/` and the report.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = ["KERNELSPEC", "is_study_notebook", "committed_form", "pre_save_hook"]

# the one notebook metadata committed: the standard Python kernel (JupyterLab opens it without asking, papermill reads
# the language from it); a run's interpreter, versions and widget state stay out
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}

_STUDY_NOTEBOOK = re.compile(r"\d\d_\w+\.ipynb")


def is_study_notebook(path: str | Path) -> bool:
    """Whether `path` is a study notebook of a rifelab project (notebooks/NN_<study>.ipynb with jupytext.toml above)."""
    path = Path(path)
    return (bool(_STUDY_NOTEBOOK.fullmatch(path.name)) and path.parent.name == "notebooks"
            and (path.parent.parent / "jupytext.toml").is_file())


def committed_form(nb: dict[str, Any]) -> dict[str, Any]:
    """The notebook as committed, in place: outputs, execution counts, cell metadata but tags, and notebook metadata
    but the standard kernelspec dropped (what JupyterLab, Colab and jupytext add)."""
    nb["metadata"] = {"kernelspec": dict(KERNELSPEC)}
    for cell in nb.get("cells", []):
        tags = cell.get("metadata", {}).get("tags")
        cell["metadata"] = {"tags": tags} if tags else {}
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return nb


def pre_save_hook(model: dict[str, Any], path: str, contents_manager: Any = None, **_: Any) -> None:
    """Jupyter's ContentsManager.pre_save_hook: study notebooks are saved in their committed form."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    root = getattr(contents_manager, "root_dir", "") or ""
    if is_study_notebook(Path(root) / path.lstrip("/")):
        committed_form(model["content"])
