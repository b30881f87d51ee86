"""One HTML report of the executed study notebooks of a profile (nbconvert), written for a reader, not a debugger.

Code is hidden (the notebooks themselves hold it), the parameters cells and stderr streams (warnings, progress
bars) are left out, and the header names each notebook by its project-relative name only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import nbformat
from nbconvert import HTMLExporter

from rifelab.publish.results import atomic_write_text

__all__ = ["build_report", "reader_cells"]

_DROPPED_TAGS = {"parameters", "injected-parameters", "colab"}  # colab: the badge and install cells


def reader_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """The cells a reader sees: no parameter cells, no stderr outputs; code inputs are hidden by the exporter."""
    cells = []
    for cell in nb.cells:
        if _DROPPED_TAGS & set(cell.get("metadata", {}).get("tags", [])):
            continue
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", []) if not (o.get("output_type") == "stream"
                                                                        and o.get("name") == "stderr")]
            if not cell.outputs:
                continue
        cells.append(cell)
    return cells


def build_report(notebooks: Sequence[str | os.PathLike], output: str | os.PathLike, title: str = "rifelab studies") -> Path:
    """Concatenate executed notebooks (in the given order) into one self-contained HTML file."""
    paths = [Path(p) for p in notebooks]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"executed notebooks not found: {', '.join(missing)}; run `dvc repro` first")
    merged = nbformat.v4.new_notebook()
    merged.metadata["title"] = title
    contents = "\n".join(f"- {p.stem}" for p in paths)
    merged.cells.append(nbformat.v4.new_markdown_cell(
        f"# {title}\n\nExecuted notebooks, in order (their code is in `notebooks/`):\n\n{contents}"))
    for p in paths:
        nb = nbformat.read(p, as_version=4)
        merged.cells.append(nbformat.v4.new_markdown_cell(f"---\n\n*Notebook `{p.name}`*"))
        merged.cells.extend(reader_cells(nb))
        if "kernelspec" in nb.metadata and "kernelspec" not in merged.metadata:
            merged.metadata["kernelspec"] = nb.metadata["kernelspec"]
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(merged)
    return atomic_write_text(output, body)
