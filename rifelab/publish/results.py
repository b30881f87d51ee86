"""Writing study results: tables (CSV + Markdown), figures (PNG), metrics (JSON), atomically.

Every file goes to a temporary name in the same folder and is renamed into place, so an
interrupted run never leaves a half-written result. JSON metrics carry the environment record.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, Iterator

import pandas as pd

from rifelab.measure.profiling import environment_record

__all__ = ["PROFILES", "PROFILE_FILES", "COMMITTED_RESULTS", "SCRATCH", "results_base", "input_folders", "find_project_root", "UnsafePathError",
           "refuse_link", "open_new", "atomic_path", "atomic_write_text", "temp_path_beside", "save_table", "save_figure",
           "save_json", "to_markdown"]

REPO_ROOT = Path(__file__).resolve().parent.parent
#: the device profiles: each has its params file and its results/<profile>/ folder (the one declaration)
PROFILES = ("cpu", "cuda", "mps")
PROFILE_FILES = {"cpu": "params.yaml", "cuda": "params-cuda.yaml", "mps": "params-mps.yaml"}
COMMITTED_RESULTS = "results"  # the pipeline's results, committed; written only by `dvc repro` (--results-root results)
SCRATCH = "scratch"  # where every other run writes: trial runs in JupyterLab, Colab, `rifelab notebook` (git ignores it)


class UnsafePathError(ValueError):
    """A path where rifelab would write is a symbolic link (writing would change the file it points to)."""


def refuse_link(path: str | os.PathLike) -> Path:
    """`path`, or UnsafePathError naming it when it is a symbolic link (rifelab never writes through one)."""
    p = Path(path)
    if p.is_symlink():
        try:
            target = os.readlink(p)
        except OSError:
            target = "?"
        raise UnsafePathError(
            f"{p} is a symbolic link (to {target}); rifelab never writes through a link, which would change the "
            "file it points to. Remove the link or choose another output"
        )
    return p


def open_new(path: str | os.PathLike, mode: str = "w", exclusive: bool = False) -> IO:
    """Open `path` for writing without following a link (O_NOFOLLOW): a link there raises UnsafePathError.

    `exclusive`: the file must not exist yet (O_EXCL); otherwise an existing regular file is truncated.
    `mode` is "w" (text, utf-8) or "wb".
    """
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | (os.O_EXCL if exclusive else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK) or Path(path).is_symlink():
            refuse_link(path)
        raise
    return os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"}))


def temp_path_beside(final: Path) -> Path:
    """A new empty file next to `final` (hidden, same suffix) with the permissions a plain open() would give.

    mkstemp creates files readable by the owner only; once renamed they would keep that mode, so the
    mode is set from the umask as for any other file the user writes.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp" + final.suffix, dir=final.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_current_umask())
    return Path(tmp)


def _current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask must set it to read it,
    which would briefly give files created by other threads, e.g. the interpolation writer, mode 0666)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        umask = os.umask(0o077)
        os.umask(umask)
    return umask


_UMASK_LOCK = threading.Lock()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    The temporary is created with O_EXCL (never through a link), and a symbolic link at `path` is refused
    (UnsafePathError naming it) before and after the block, so no file a link points to is replaced.
    """
    final = refuse_link(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = temp_path_beside(final)
    try:
        yield tmp_path
        refuse_link(final)
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def find_project_root(start: str | os.PathLike | None = None) -> Path:
    """Nearest ancestor of `start` (default: cwd) holding params.yaml or dvc.yaml; else the repo or cwd."""
    here = Path(start or os.getcwd()).resolve()
    for cand in (here, *here.parents):
        if (cand / "params.yaml").exists() or (cand / "dvc.yaml").exists():
            return cand
    if (REPO_ROOT / "params.yaml").exists():
        return REPO_ROOT
    return here


def results_base(profile: str, results_root: str | os.PathLike | None = None) -> Path:
    """`<results_root>/<profile>`; without a root, the project's scratch folder (never the committed results)."""
    return (Path(results_root) if results_root is not None else find_project_root() / SCRATCH) / profile


def input_folders(profile: str, results_root: str | os.PathLike | None, name: str) -> list[Path]:
    """Where a study looks for `name`, a read-only input made by an earlier stage: this run's root, then the committed
    results of the project (so a trial run in any folder uses the pipeline's checkpoints)."""
    own = results_base(profile, results_root) / name
    committed = find_project_root() / COMMITTED_RESULTS / profile / name
    return [own] if own.resolve() == committed.resolve() else [own, committed]


def to_markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """Markdown table of a DataFrame (index dropped unless named)."""
    keep_index = df.index.name is not None or any(n is not None for n in (df.index.names or []))
    return df.to_markdown(index=keep_index, floatfmt=floatfmt)


def save_table(df: pd.DataFrame, folder: str | os.PathLike, name: str, floatfmt: str = ".4g") -> tuple[Path, Path]:
    """Save a table as `<name>.csv` and `<name>.md` in `folder`; returns both paths."""
    folder = Path(folder)
    keep_index = df.index.name is not None
    csv_path, md_path = folder / f"{name}.csv", folder / f"{name}.md"
    with atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=keep_index)
    atomic_write_text(md_path, to_markdown(df, floatfmt) + "\n")
    return csv_path, md_path


def save_figure(fig: Any, folder: str | os.PathLike, name: str, dpi: int = 120) -> Path:
    """Save a matplotlib figure as `<name>.png` in `folder`."""
    path = Path(folder) / f"{name}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_json(
    data: dict[str, Any],
    path: str | os.PathLike,
    device: str | None = None,
    with_environment: bool = True,
) -> Path:
    """Write `data` as JSON; adds an `environment` record (device, torch, git commit) unless told not to."""
    payload = dict(data)
    if with_environment and "environment" not in payload:
        payload["environment"] = environment_record(device or "cpu")
    return atomic_write_text(path, json.dumps(_jsonable(payload), indent=2, sort_keys=False) + "\n")
