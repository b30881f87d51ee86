"""The "Open in Colab" badges and the notebooks' install cell, generated from the one repository address.

The address lives in pyproject.toml's `[project.urls] Repository`. Until the repository is published it holds the
placeholder owner PLACEHOLDER_OWNER; set it there, then run `python -m rifelab.publish.colab` from the project root to
rewrite every notebook's first two cells (the badge and the install cell, tagged `colab`), their paired scripts and
the README's badges. tests/test_notebooks.py checks that all of them agree with pyproject.toml.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nbformat

from rifelab.publish.notebooks import paired_script
from rifelab.publish.results import atomic_write_text

__all__ = ["PLACEHOLDER_OWNER", "COLAB_TAG", "repository_url", "colab_url", "badge", "colab_cells", "with_colab_cells",
           "readme_with_badges", "sync_all"]

PLACEHOLDER_OWNER = "REPOSITORY-OWNER-NOT-SET"  # pyproject's [project.urls] Repository until the repository is published
COLAB_TAG = "colab"  # the badge and install cells; the HTML report leaves them out
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
_README_BADGES = re.compile(r"<!-- colab badges -->.*?<!-- /colab badges -->", re.S)


def repository_url(pyproject: str | os.PathLike) -> str:
    """`Repository` of `[project.urls]` in pyproject.toml: https://github.com/OWNER/NAME."""
    text = Path(pyproject).read_text(encoding="utf-8")
    section = re.search(r"^\[project\.urls\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    match = section and re.search(r'^Repository\s*=\s*"([^"]+)"', section.group(1), re.M)
    if not match or not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", match.group(1)):
        raise ValueError(f"{pyproject}: expected [project.urls] Repository = \"https://github.com/OWNER/NAME\"")
    return match.group(1)


def colab_url(repo: str, notebook: str, branch: str = "main") -> str:
    """Colab's address of a notebook of the repository (`notebook` relative to its root, e.g. notebooks/01_x.ipynb)."""
    return f"https://colab.research.google.com/github/{repo.removeprefix('https://github.com/')}/blob/{branch}/{notebook}"


def badge(repo: str, notebook: str) -> str:
    """The Markdown badge that opens `notebook` in Colab."""
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(repo, notebook)})"


def colab_cells(repo: str, notebook: str) -> list[nbformat.NotebookNode]:
    """The badge (Markdown) and the install cell (code) that open every study notebook."""
    note = (f"{badge(repo, notebook)}\n\n"
            "*In Colab, pick a GPU runtime and set `profile = \"cuda\"` below: the cuda profile "
            "(`params-cuda.yaml`) is the one sized for Colab's GPU. The first cell installs rifelab there; where "
            "rifelab already imports it does nothing.*")
    if PLACEHOLDER_OWNER in repo:
        note += (f"\n\n*The repository address is not set yet (`{PLACEHOLDER_OWNER}` in pyproject.toml's "
                 "`[project.urls]`): it is set when the repository is published.*")
    install = ("# Colab, or a Python without rifelab: install it (does nothing where rifelab already imports)\n"
               "import importlib.util, subprocess, sys\n"
               "if importlib.util.find_spec(\"rifelab\") is None:\n"
               "    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"-q\",\n"
               f"                    \"rifelab[colab] @ git+{repo}\"], check=True)")
    meta = {"tags": [COLAB_TAG]}
    return [nbformat.v4.new_markdown_cell(note, metadata=meta), nbformat.v4.new_code_cell(install, metadata=meta)]


def with_colab_cells(nb: nbformat.NotebookNode, repo: str, notebook: str) -> nbformat.NotebookNode:
    """`nb` with its colab cells replaced by (or, without any, preceded by) the generated ones; ids kept."""
    old = [c for c in nb.cells if COLAB_TAG in c.get("metadata", {}).get("tags", [])]
    new = colab_cells(repo, notebook)
    for cell, before in zip(new, old):
        if "id" in before:
            cell["id"] = before["id"]
    rest = [c for c in nb.cells if c not in old]
    out = nbformat.from_dict(nb)
    out.cells = new + rest
    return out


def readme_with_badges(text: str, repo: str, notebooks: list[str]) -> str:
    """The README with its block between `<!-- colab badges -->` markers regenerated."""
    rows = "\n".join(f"| `{n}` | {badge(repo, n)} |" for n in notebooks)
    block = f"<!-- colab badges -->\n| notebook | open |\n| --- | --- |\n{rows}\n<!-- /colab badges -->"
    if not _README_BADGES.search(text):
        raise ValueError("README.md has no <!-- colab badges --> ... <!-- /colab badges --> block")
    return _README_BADGES.sub(lambda _: block, text)


def sync_all(root: str | os.PathLike = ".", write: bool = True) -> list[Path]:
    """Regenerate badges and install cells (notebooks, their paired scripts, README) from pyproject.toml.

    Returns the files that differ from what is generated; `write=False` only reports them (the agreement test).
    """
    import jupytext  # optional: the notebooks extra
    from jupytext.config import load_jupytext_config

    root = Path(root)
    repo = repository_url(root / "pyproject.toml")
    names = sorted(p.relative_to(root).as_posix() for p in (root / "notebooks").glob("*.ipynb"))
    wanted: dict[Path, str] = {}
    for rel in names:
        path = root / rel
        new = with_colab_cells(nbformat.read(path, as_version=4), repo, rel)
        wanted[path] = nbformat.writes(new) + "\n"
        wanted[paired_script(path)] = jupytext.writes(new, fmt="py:percent", config=load_jupytext_config(str(path)))
    readme = root / "README.md"
    wanted[readme] = readme_with_badges(readme.read_text(encoding="utf-8"), repo, names)
    changed = [p for p, text in wanted.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
    for path in changed if write else ():
        atomic_write_text(path, wanted[path])
    return changed


if __name__ == "__main__":  # python -m rifelab.publish.colab (from the project root)
    for p in sync_all():
        print(f"updated {p}")
    sys.exit(0)
