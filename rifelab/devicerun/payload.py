"""What one device call sends, and taking unneeded committed files out of the tree while it does.

The device tool copies the checkout's working tree as it is on disk (tracked files and untracked files git does not
ignore, plus `shared/` where the checkout has one) and the carried paths, 64 MiB in all. The committed results
(pruning checkpoints above all) alone nearly fill that, and the GPU run reads none of them. So `take_out` removes,
largest first, only as many files under `results/` as the call needs to fit, and only files byte-identical to HEAD
(same blob in HEAD, the index and on disk): git holds every one of them, nothing is lost. A modified, staged or
untracked file it would have to take out is refused by name, and nothing is removed. The files taken out are recorded
inside the git directory (never sent, never committed); `restore` (the landing step, `device_run.sh --restore`)
puts them back with `git checkout HEAD -- PATHS` and checks each against HEAD, refusing to overwrite a file that
reappeared with other content.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from rifelab.devicerun.inputs import INPUTS_DIR
from rifelab.publish.results import atomic_write_text

log = logging.getLogger(__name__)

__all__ = [
    "DEVICE_LIMIT_BYTES",
    "MARGIN_BYTES",
    "TAKE_OUT_ROOTS",
    "Payload",
    "TakeOut",
    "TakeOutError",
    "payload",
    "plan_take_out",
    "restore",
    "sent_files",
    "take_out",
    "taken_out",
]

DEVICE_LIMIT_BYTES = 64 * 2**20  # the device tool: working tree + carried paths per call
MARGIN_BYTES = 2 * 2**20  # headroom kept under the limit when taking files out (the tool's count may differ a little)
TAKE_OUT_ROOTS = ("results",)  # committed outputs: the GPU run reads none of them
RECORD_NAME = "rifelab-device-takeout.json"  # in the git directory: per checkout, never sent, never committed
MIB = 2**20


class TakeOutError(RuntimeError):
    """Files cannot be taken out of (or put back into) the working tree safely; the message names them."""


def _git(root: Path, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(["git", "--literal-pathspecs", *args], cwd=root, text=True, capture_output=True, check=False,
                          input=stdin)
    if proc.returncode != 0:
        raise TakeOutError(f"git {' '.join(args[:3])} ... failed in {root}: {proc.stderr.strip()}")
    return proc.stdout


def _files_under(path: Path, root: Path) -> dict[str, int]:
    """Plain files at or under `path` (links travel as links: counted 0), relative to root, with their sizes."""
    if path.is_symlink() or not path.exists():
        return {}
    if path.is_file():
        return {path.relative_to(root).as_posix(): path.stat().st_size}
    found = {}
    for folder, _dirs, files in os.walk(path):
        for name in files:
            f = Path(folder) / name
            if not f.is_symlink() and f.is_file():
                found[f.relative_to(root).as_posix()] = f.stat().st_size
    return found


def sent_files(root: str | os.PathLike, carry: Sequence[str] = ()) -> tuple[dict[str, int], dict[str, int]]:
    """(tree, carried): the files a device call from `root` sends, as they are on disk, path -> bytes.

    The tree is what git lists as tracked or untracked-not-ignored and is present on disk, plus `shared/`; a carried
    path is counted once, in `carried`, also where git lists it.
    """
    root = Path(root)
    listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    tree = {}
    for p in filter(None, listed):
        f = root / p
        if not f.is_symlink() and f.is_file():
            tree[p] = f.stat().st_size
    tree.update(_files_under(root / "shared", root))
    carried: dict[str, int] = {}
    for c in carry:
        carried.update(_files_under(root / c, root))
    return {p: b for p, b in tree.items() if p not in carried}, carried


@dataclass
class Payload:
    """What one device call would send: the working tree (tracked + untracked, not ignored) and the carried paths."""

    tree_bytes: int
    carry_bytes: int
    largest: list[tuple[str, int]]
    files: dict[str, int] = field(default_factory=dict, repr=False)  # the tree's files, path -> bytes

    @property
    def total(self) -> int:
        return self.tree_bytes + self.carry_bytes

    @property
    def fits(self) -> bool:
        return self.total <= DEVICE_LIMIT_BYTES

    def describe(self) -> str:
        head = (f"a device call would send {self.total / MIB:.1f} MiB (working tree {self.tree_bytes / MIB:.1f} MiB "
                f"+ carried {self.carry_bytes / MIB:.1f} MiB); the limit is {DEVICE_LIMIT_BYTES / MIB:.0f} MiB")
        if self.fits:
            return head + ": fits"
        big = ", ".join(f"{p} ({b / MIB:.1f} MiB)" for p, b in self.largest)
        return (head + f": it does NOT fit, {(self.total - DEVICE_LIMIT_BYTES) / MIB:.1f} MiB too much. Largest "
                f"files of the working tree: {big}. `bash scripts/device_run.sh --prepare` takes unmodified "
                f"committed files under {', '.join(TAKE_OUT_ROOTS)}/ out of the tree; anything else must be "
                f"committed, ignored or moved out of the checkout first.")


def payload(root: str | os.PathLike, carry: Sequence[str] = (INPUTS_DIR,)) -> Payload:
    """Bytes a device call from `root` sends with `carry`, and the 5 largest files of the tree."""
    tree, carried = sent_files(root, carry)
    largest = sorted(tree.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    return Payload(sum(tree.values()), sum(carried.values()), largest, tree)


def plan_take_out(pay: Payload, roots: Sequence[str] = TAKE_OUT_ROOTS, margin: int | None = None) -> list[str]:
    """The fewest files under `roots`, largest first, whose absence brings `pay` to limit - margin; [] if it fits.

    TakeOutError (with the numbers) when even all of them would not be enough. margin: MARGIN_BYTES by default.
    """
    margin = MARGIN_BYTES if margin is None else margin
    target = DEVICE_LIMIT_BYTES - margin
    excess = pay.total - target
    if excess <= 0:
        return []
    prefixes = tuple(r.rstrip("/") + "/" for r in roots)
    candidates = sorted(((p, b) for p, b in pay.files.items() if p.startswith(prefixes)),
                        key=lambda kv: (-kv[1], kv[0]))
    chosen, freed = [], 0
    for p, b in candidates:
        if freed >= excess:
            break
        chosen.append(p)
        freed += b
    if freed < excess:
        raise TakeOutError(
            f"a device call would send {pay.total / MIB:.1f} MiB (tree {pay.tree_bytes / MIB:.1f} + carried "
            f"{pay.carry_bytes / MIB:.1f}); even without every file under {', '.join(roots)}/ "
            f"({freed / MIB:.1f} MiB) it is {(pay.total - freed) / MIB:.1f} MiB, over the {target / MIB:.0f} MiB "
            f"aimed at (limit {DEVICE_LIMIT_BYTES / MIB:.0f} MiB - {margin / MIB:.0f} MiB margin). Largest files: "
            + ", ".join(f"{p} ({b / MIB:.1f} MiB)" for p, b in pay.largest))
    return chosen


def _blobs(root: Path, paths: Sequence[str]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(HEAD, index, disk) blob ids of `paths`; disk hashed as raw bytes (no filters)."""
    head, index = {}, {}
    for line in filter(None, _git(root, "ls-tree", "-r", "-z", "HEAD", "--", *paths).split("\0")):
        meta, path = line.split("\t", 1)
        head[path] = meta.split()[2]
    for line in filter(None, _git(root, "ls-files", "-s", "-z", "--", *paths).split("\0")):
        meta, path = line.split("\t", 1)
        index[path] = meta.split()[1]
    present = [p for p in paths if (root / p).is_file() and not (root / p).is_symlink()]
    disk = dict(zip(present, _git(root, "hash-object", "--no-filters", "--stdin-paths",
                                  stdin="".join(p + "\n" for p in present)).split()))
    return head, index, disk


def _record_path(root: Path) -> Path:
    return (root / _git(root, "rev-parse", "--git-path", RECORD_NAME).strip()).resolve()


def _read_record(root: Path) -> dict:
    """The take-out record of the checkout at root; empty where there is none (or no git repository)."""
    try:
        path = _record_path(root)
    except (OSError, TakeOutError):
        return {"files": {}}
    return json.loads(path.read_text()) if path.is_file() else {"files": {}}


@dataclass
class TakeOut:
    """Files taken out of the tree for one device call (all byte-identical to `commit`), and the payload after."""

    commit: str
    paths: list[str]
    freed_bytes: int
    before: Payload
    after: Payload

    def describe(self) -> str:
        if not self.paths:
            return self.after.describe()
        return (f"took {len(self.paths)} committed files ({self.freed_bytes / MIB:.1f} MiB, unmodified since "
                f"{self.commit[:12]}) out of the working tree: {', '.join(self.paths)}. Put them back after the call "
                f"with `bash scripts/device_run.sh --restore` (device-report does it too). " + self.after.describe())


def take_out(root: str | os.PathLike, carry: Sequence[str] = (INPUTS_DIR,), roots: Sequence[str] = TAKE_OUT_ROOTS,
             margin: int | None = None) -> TakeOut:
    """Remove the files `plan_take_out` names, if each is byte-identical to HEAD; else TakeOutError, nothing removed."""
    root = Path(root)
    before = payload(root, carry)
    paths = plan_take_out(before, roots, margin)
    commit = _git(root, "rev-parse", "HEAD").strip()
    if not paths:
        return TakeOut(commit, [], 0, before, before)
    head, index, disk = _blobs(root, paths)
    problems = []
    for p in paths:
        if p not in index:
            problems.append(f"{p} (untracked)")
        elif p not in head:
            problems.append(f"{p} (added, not committed)")
        elif index[p] != head[p]:
            problems.append(f"{p} (staged change)")
        elif disk.get(p) != head[p]:
            problems.append(f"{p} (modified)")
    if problems:
        raise TakeOutError(
            "the device call only fits without these files, which are not byte-identical to HEAD, so they are not "
            f"taken out: {', '.join(problems)}. Commit them, or move them out of the checkout, and prepare again.")
    record = _read_record(root)
    utc = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    record["files"].update({p: {"blob": head[p], "bytes": before.files[p], "commit": commit, "utc": utc}
                            for p in paths})
    atomic_write_text(_record_path(root), json.dumps(record, indent=2) + "\n")  # recorded before anything goes
    for p in paths:
        (root / p).unlink()
        log.info("taken out (in git at %s): %s", commit[:12], p)
    return TakeOut(commit, paths, sum(before.files[p] for p in paths), before, payload(root, carry))


def taken_out(root: str | os.PathLike) -> list[str]:
    """Recorded files that are still out of the tree."""
    root = Path(root)
    return sorted(p for p in _read_record(root)["files"] if not (root / p).exists())


def restore(root: str | os.PathLike) -> list[str]:
    """Put every recorded file back from HEAD (`git checkout HEAD -- PATHS`); the paths restored.

    A path that is back already with HEAD's (or the recorded) content is left; one that reappeared with other
    content, or that HEAD no longer has, is named in a TakeOutError and never overwritten; the record keeps it.
    """
    root = Path(root)
    record_path = _record_path(root)
    record = _read_record(root)
    paths = sorted(record["files"])
    if not paths:
        return []
    head, _index, disk = _blobs(root, paths)
    todo, problems = [], {}
    for p in paths:
        entry = record["files"][p]
        if (root / p).exists() or (root / p).is_symlink():
            if disk.get(p) not in (head.get(p), entry["blob"]):
                problems[p] = "a different file is there now; left as it is"
        elif p not in head:
            problems[p] = f"no longer in HEAD; `git checkout {entry['commit']} -- {p}` brings the copy back"
        else:
            todo.append(p)
    if todo:
        _git(root, "checkout", "HEAD", "--", *todo)
        head_now, _, disk_now = _blobs(root, todo)
        problems.update({p: "restored content differs from HEAD" for p in todo if disk_now.get(p) != head_now.get(p)})
    if problems:
        kept = {p: v for p, v in record["files"].items() if p in problems}
        atomic_write_text(record_path, json.dumps({**record, "files": kept}, indent=2) + "\n")
    else:
        record_path.unlink()
    for p in todo:
        log.info("restored from HEAD: %s", p)
    if problems:
        raise TakeOutError("not every file taken out for the device call is back: "
                           + "; ".join(f"{p} ({why})" for p, why in problems.items()))
    return todo
