"""One HTML report of the executed study notebooks of a profile (nbconvert), written for a reader, not a debugger.

Code is hidden (the notebooks themselves hold it), the parameters cells and stderr streams (warnings, progress
bars) are left out, and the header names each notebook by its project-relative name only.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Sequence

import nbformat
from nbconvert import HTMLExporter

from rifelab.publish.headlines import headline_path, headline_sentence
from rifelab.publish.results import atomic_write_text

__all__ = ["build_report", "reader_cells", "summary_paragraph"]

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


def _title(nb: nbformat.NotebookNode, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown" and "colab" not in cell.get("metadata", {}).get("tags", []):
            match = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if match:
                return match.group(1).strip()
    return fallback


def summary_paragraph(notebooks: Sequence[Path]) -> str:
    """One paragraph from the short headlines of the studies whose executed notebooks these are (results/<profile>/
    notebooks/NN_<study>.ipynb -> results/headlines/<profile>/<study>.json); empty without any."""
    clauses = []
    for p in notebooks:
        profile, study = p.parent.parent.name, p.stem.split("_", 1)[-1]
        path = headline_path(p.parent.parent.parent, profile, study)
        if path.is_file():
            clauses.append(headline_sentence(study, json.loads(path.read_text(encoding="utf-8"))))
    clauses = [c for c in clauses if c]
    if not clauses:
        return ""
    profile = notebooks[0].parent.parent.name
    return (f"**In short** ({profile} profile, the headline of each study; details and the device in each section): "
            + "; ".join(clauses) + ".")


def build_report(notebooks: Sequence[str | os.PathLike], output: str | os.PathLike, title: str = "rifelab studies") -> Path:
    """Concatenate executed notebooks (in the given order) into one self-contained HTML file."""
    paths = [Path(p) for p in notebooks]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"executed notebooks not found: {', '.join(missing)}; run `dvc repro` first")
    merged = nbformat.v4.new_notebook()
    merged.metadata["title"] = title
    books = [nbformat.read(p, as_version=4) for p in paths]
    contents = "\n".join(f"- [{_title(nb, p.stem)}](#nb-{p.stem})" for p, nb in zip(paths, books))
    summary = summary_paragraph(paths)
    merged.cells.append(nbformat.v4.new_markdown_cell(
        f"# {title}\n\n{summary}\n\nExecuted notebooks, in order (their code is in `notebooks/`):\n\n{contents}"))
    for p, nb in zip(paths, books):
        merged.cells.append(nbformat.v4.new_markdown_cell(f'<a id="nb-{p.stem}"></a>\n\n---\n\n*Notebook `{p.name}`*'))
        merged.cells.extend(reader_cells(nb))
        if "kernelspec" in nb.metadata and "kernelspec" not in merged.metadata:
            merged.metadata["kernelspec"] = nb.metadata["kernelspec"]
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(merged)
    return atomic_write_text(output, body)
