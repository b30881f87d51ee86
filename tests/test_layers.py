"""Layering rules the package layout promises: argparse only in the CLI layer, the interpolation tool free of engines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from import_closure import ROOT, closure

PKG = ROOT / "rifelab"


def _is_cli(path: Path) -> bool:
    return path.name == "cli.py"  # rifelab/cli.py and every package's cli.py


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_cli_layer_imports_argparse():
    offenders = sorted(str(p.relative_to(ROOT)) for p in PKG.rglob("*.py")
                       if not _is_cli(p) and "argparse" in _imports(p))
    assert not offenders, f"argparse outside the CLI layer (move the parser to the package's cli.py): {offenders}"


def test_the_interpolation_tool_and_the_interactive_study_do_not_depend_on_the_exported_backends():
    """An ONNX Runtime / OpenVINO / export edit must not rerun notebook 00 (its dvc deps are this closure)."""
    for module in ("rifelab.interpolate.run", "rifelab.interpolate.pipeline"):
        engines = sorted(str(p.relative_to(ROOT)) for p in closure(module) if p.parent.name == "engines")
        assert not engines, f"{module} imports {engines}"
    exported = {PKG / "engines" / "backends.py", PKG / "engines" / "export.py"}
    assert not exported & closure("rifelab.studies.interactive")


def test_the_top_package_imports_nothing_at_import_time():
    """rifelab/__init__.py is in every stage's closure: what it imports becomes every stage's dependency."""
    top = closure("rifelab")
    assert {p.relative_to(ROOT).as_posix() for p in top} == {"rifelab/__init__.py"}


def test_the_public_api_resolves_to_the_defining_modules():
    import importlib

    import rifelab

    for name, module in rifelab._PUBLIC.items():
        assert getattr(rifelab, name) is getattr(importlib.import_module(module), name), name
    assert set(rifelab._PUBLIC) <= set(dir(rifelab))
    with pytest.raises(AttributeError, match="public names"):
        rifelab.no_such_name  # noqa: B018


def test_library_modules_import_from_the_defining_module_not_the_top_package():
    """`from rifelab import X` inside rifelab/ would hide X's module from the static closure (dvc deps)."""
    offenders = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "rifelab" and not node.level:
                offenders.append(f"{path.relative_to(ROOT)}: from rifelab import {', '.join(a.name for a in node.names)}")
    assert not offenders, offenders
