"""One HTML report of all executed study notebooks (nbconvert)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import nbformat

from .results import atomic_write_text

__all__ = ["build_report"]


def build_report(notebooks: Sequence[str | os.PathLike], output: str | os.PathLike, title: str = "rifelab studies") -> Path:
    """Concatenate executed notebooks (in the given order) into one self-contained HTML file."""
    from nbconvert import HTMLExporter

    paths = [Path(p) for p in notebooks]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"executed notebooks not found: {', '.join(missing)}; run `dvc repro` first")
    merged = nbformat.v4.new_notebook()
    merged.metadata["title"] = title
    contents = "\n".join(f"- {p.stem}" for p in paths)
    merged.cells.append(nbformat.v4.new_markdown_cell(f"# {title}\n\nExecuted notebooks, in order:\n\n{contents}"))
    for p in paths:
        nb = nbformat.read(p, as_version=4)
        merged.cells.append(nbformat.v4.new_markdown_cell(f"---\n\n*Notebook `{p.name}`*"))
        merged.cells.extend(nb.cells)
        if "kernelspec" in nb.metadata and "kernelspec" not in merged.metadata:
            merged.metadata["kernelspec"] = nb.metadata["kernelspec"]
    exporter = HTMLExporter()
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(merged)
    return atomic_write_text(output, body)
