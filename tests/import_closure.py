"""The rifelab modules a module imports, directly or not (static, from the source): what a DVC stage depends on."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "rifelab"


def module_file(name: str) -> Path | None:
    """Source file of a dotted rifelab module name (package -> its __init__.py), or None outside rifelab."""
    if name != "rifelab" and not name.startswith("rifelab."):
        return None
    parts = name.split(".")[1:]
    base = PKG.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def direct_imports(path: Path) -> set[str]:
    """Dotted rifelab modules that `path` imports (absolute or relative, at any depth of the file)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from . import plots` imports a module
    return {m for m in found if module_file(m) is not None}


def closure(module: str) -> set[Path]:
    """Files of `module` and of every rifelab module it imports, transitively (packages' __init__ included)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            f = module_file(".".join(parts[:i]))
            if f is not None and f not in seen:
                seen.add(f)
                todo.extend(direct_imports(f))
    return seen


RUNNER = ("rifelab/__init__.py", "rifelab/cli.py", "rifelab/publish/__init__.py", "rifelab/publish/notebooks.py")


def stage_code(stage: str) -> list[str]:
    """The rifelab files a dvc.yaml stage depends on: its study's import closure (+ the notebook runner)."""
    if stage == "device_run":  # `rifelab device-report`: notebook 05 renders the archive, then the report
        files = {str(p.relative_to(ROOT)) for p in closure("rifelab.devicerun.render")}
        return sorted(files | set(RUNNER) | {"rifelab/publish/report.py"})
    if stage == "report":  # `rifelab report`: the report builder
        return sorted({str(p.relative_to(ROOT)) for p in closure("rifelab.publish.report")} | {"rifelab/cli.py"})
    study = "pruning" if stage == "finetune" else stage
    files = {str(p.relative_to(ROOT)) for p in closure(f"rifelab.studies.{study}")}
    return sorted(files if stage == "finetune" else files | set(RUNNER))


def write_dvc_deps(path: Path = ROOT / "dvc.yaml") -> None:
    """Rewrite every study stage's `rifelab/` deps in dvc.yaml from the import closure (comments kept)."""
    lines = path.read_text().splitlines(keepends=True)
    out: list[str] = []
    stage = None
    for line in lines:
        stripped = line.strip()
        if line.startswith("  ") and not line.startswith("   ") and stripped.endswith(":"):
            stage = stripped[:-1]
        if stripped.startswith("- rifelab/") and stage not in (None, "assets"):
            indent = line[: len(line) - len(line.lstrip())]
            if out and out[-1].strip().startswith("- rifelab/"):
                continue
            out.extend(f"{indent}- {f}\n" for f in stage_code(stage))
            continue
        out.append(line)
    path.write_text("".join(out))


if __name__ == "__main__":  # python tests/import_closure.py: refresh dvc.yaml's code deps after moving modules
    write_dvc_deps()
