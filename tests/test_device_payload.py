"""Fitting a device call under the device tool's 64 MiB (rifelab.devicerun.payload): what is counted, and taking
committed files out of the working tree (only unmodified ones) and putting them back byte-identical from git.

Every test works on a small temporary git repository (no file of this checkout's results/ is touched); the limit is
scaled down with the sizes.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from import_closure import ROOT
from test_device_run import _fixture_archive

from rifelab.cli import main as cli_main
from rifelab.devicerun import payload as pl
from rifelab.devicerun.payload import (
    Payload,
    TakeOutError,
    payload,
    plan_take_out,
    restore,
    take_out,
    taken_out,
)

KB = 1000
LIMIT = 100 * KB  # the scaled-down device limit of these tests


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout


def _write(path: Path, n: int, seed: int = 0) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = bytes((seed + i * 7) % 251 for i in range(n))
    path.write_bytes(data)
    return data


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A committed repository: code, two large committed results, a small one; ignored carried inputs."""
    r = tmp_path / "repo"
    r.mkdir()
    _git(r, "init", "-q")
    (r / ".gitignore").write_text("/.device_inputs/\n/data/\n/shared/\n")
    (r / "params.yaml").write_text("common: {}\n")
    _write(r / "rifelab" / "code.py", 1 * KB)
    _write(r / "results" / "cpu" / "finetune" / "big1.pt", 60 * KB, seed=1)
    _write(r / "results" / "cpu" / "pruning" / "big2.pt", 50 * KB, seed=2)
    _write(r / "results" / "cpu" / "small.csv", 1 * KB, seed=3)
    _git(r, "add", "-A")
    _git(r, "commit", "-q", "-m", "fixture")
    _write(r / ".device_inputs" / "flownet-fast.pt", 30 * KB, seed=4)  # ignored, carried
    monkeypatch.setattr(pl, "DEVICE_LIMIT_BYTES", LIMIT)
    return r


def _clean(repo: Path) -> bool:
    return _git(repo, "status", "--porcelain") == ""


def test_payload_counts_what_the_device_tool_sends(repo):
    tree = {"rifelab/code.py": KB, "results/cpu/finetune/big1.pt": 60 * KB, "results/cpu/pruning/big2.pt": 50 * KB,
            "results/cpu/small.csv": KB, ".gitignore": 33, "params.yaml": 11}
    p = payload(repo, [".device_inputs"])
    assert p.files == tree and p.tree_bytes == sum(tree.values()) and p.carry_bytes == 30 * KB
    assert p.total == p.tree_bytes + p.carry_bytes and p.largest[0] == ("results/cpu/finetune/big1.pt", 60 * KB)
    # ignored files travel only when carried; untracked-not-ignored ones always; a link as a link (0 bytes here)
    _write(repo / "data" / "frames.bin", 40 * KB)
    _write(repo / "notes.txt", 5 * KB)
    os.symlink(repo / "results", repo / "link")
    assert payload(repo, [".device_inputs"]).total == p.total + 5 * KB
    # a carried path that git also lists is counted once; shared/ travels even when ignored
    assert payload(repo, [".device_inputs", "results"]).total == p.total + 5 * KB
    _write(repo / "shared" / "spec.txt", 2 * KB)
    assert payload(repo, [".device_inputs"]).total == p.total + 7 * KB
    # a tracked file taken off the disk is not sent
    (repo / "results" / "cpu" / "small.csv").unlink()
    assert payload(repo, [".device_inputs"]).total == p.total + 6 * KB


def test_payload_arithmetic_and_the_message_with_the_numbers(repo):
    over = Payload(LIMIT - 10 * KB, 20 * KB, [("results/x.pt", 60 * KB)])
    assert over.total == LIMIT + 10 * KB and not over.fits
    assert "does NOT fit" in over.describe() and "results/x.pt" in over.describe()
    assert Payload(LIMIT - 10 * KB, 10 * KB, []).fits  # exactly the limit fits
    p = payload(repo, [".device_inputs"])  # 142 KB: 42 KB too much, 44 KB with a 2 KB margin
    assert plan_take_out(p, margin=0) == ["results/cpu/finetune/big1.pt"]  # the fewest files, largest first
    assert plan_take_out(p, margin=61 * KB) == ["results/cpu/finetune/big1.pt", "results/cpu/pruning/big2.pt"]
    assert plan_take_out(Payload(KB, 0, [], {"results/a": KB}), margin=0) == []  # fits: nothing taken out
    with pytest.raises(TakeOutError, match=r"even without every file under rifelab/ \(0\.0 MiB\)"):
        plan_take_out(p, roots=["rifelab"], margin=0)  # not enough to take out: refused with the numbers


def test_prepare_takes_out_only_what_it_needs_and_restore_brings_it_back_byte_identical(repo):
    big1 = (repo / "results/cpu/finetune/big1.pt").read_bytes()
    done = take_out(repo, [".device_inputs"], margin=0)
    assert done.paths == ["results/cpu/finetune/big1.pt"] and done.freed_bytes == 60 * KB
    assert not (repo / "results/cpu/finetune/big1.pt").exists() and (repo / "results/cpu/pruning/big2.pt").exists()
    assert done.before.total == 142 * KB + 44 and done.after.total == done.before.total - 60 * KB and done.after.fits
    assert taken_out(repo) == ["results/cpu/finetune/big1.pt"]
    assert payload(repo, [".device_inputs"]).total == done.after.total  # the record lives in .git: not sent
    assert take_out(repo, [".device_inputs"], margin=0).paths == []  # prepared again: fits, nothing more goes
    assert restore(repo) == ["results/cpu/finetune/big1.pt"]
    assert (repo / "results/cpu/finetune/big1.pt").read_bytes() == big1 and _clean(repo) and taken_out(repo) == []
    assert restore(repo) == []  # nothing recorded any more


@pytest.mark.parametrize("change", ["modified", "staged change", "untracked"])
def test_prepare_refuses_a_file_not_identical_to_head_and_takes_nothing_out(repo, change):
    target = repo / "results/cpu/finetune/big1.pt"
    if change == "untracked":
        target = repo / "results/cpu/new_big.pt"
        _write(target, 70 * KB, seed=9)
    else:
        _write(target, 60 * KB, seed=5)
        if change == "staged change":
            _git(repo, "add", str(target))
            _write(target, 60 * KB, seed=1)  # on disk as in HEAD again, but the index holds a change
    before = {p: p.read_bytes() for p in (repo / "results").rglob("*") if p.is_file()}
    rel = target.relative_to(repo).as_posix()
    with pytest.raises(TakeOutError, match=rf"{rel} \({change}\)"):
        take_out(repo, [".device_inputs"], margin=0)
    assert {p: p.read_bytes() for p in (repo / "results").rglob("*") if p.is_file()} == before
    assert taken_out(repo) == []


def test_restore_never_overwrites_a_file_that_came_back_different(repo):
    take_out(repo, [".device_inputs"], margin=0)
    other = _write(repo / "results/cpu/finetune/big1.pt", 10 * KB, seed=7)  # someone put another file there
    with pytest.raises(TakeOutError, match="big1.pt \\(a different file is there now"):
        restore(repo)
    assert (repo / "results/cpu/finetune/big1.pt").read_bytes() == other
    (repo / "results/cpu/finetune/big1.pt").unlink()
    assert taken_out(repo) == ["results/cpu/finetune/big1.pt"]  # still recorded: a later restore brings it back
    assert restore(repo) == ["results/cpu/finetune/big1.pt"] and _clean(repo)


def test_prepare_and_restore_from_the_command_line(repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    monkeypatch.setattr(pl, "MARGIN_BYTES", 0)
    monkeypatch.setattr("rifelab.cli.prepare_inputs", lambda dest, root, **kw: Path(dest))  # inputs as they are
    assert cli_main(["device-prepare"]) == 0
    assert "took 1 committed files" in capsys.readouterr().out and not _clean(repo)
    assert cli_main(["device-restore"]) == 0 and _clean(repo)
    _write(repo / "results/cpu/finetune/big1.pt", 60 * KB, seed=5)
    assert cli_main(["device-prepare"]) == 3  # refused, by name
    assert "big1.pt (modified)" in capsys.readouterr().err


def test_device_script_has_a_restore_mode():
    script = (ROOT / "scripts" / "device_run.sh").read_text()
    assert "--restore)" in script and "device-restore" in script


def test_landing_puts_the_taken_out_files_back_first(repo, tmp_path, monkeypatch):
    archive = _fixture_archive(tmp_path / "raw", tmp_path / "device_out")
    take_out(repo, [".device_inputs"], margin=0)
    monkeypatch.chdir(repo)
    assert cli_main(["device-report", str(archive), "--results-root", str(tmp_path / "landed"), "--no-notebook"]) == 0
    assert _clean(repo) and taken_out(repo) == []
    assert (tmp_path / "landed" / "cuda" / "device_run.tar.gz").read_bytes() == archive.read_bytes()


def test_landing_lands_nothing_while_a_taken_out_file_cannot_come_back(repo, tmp_path, monkeypatch):
    archive = _fixture_archive(tmp_path / "raw", tmp_path / "device_out")
    take_out(repo, [".device_inputs"], margin=0)
    _write(repo / "results/cpu/finetune/big1.pt", 10 * KB, seed=7)  # another file where the taken-out one was
    monkeypatch.chdir(repo)
    assert cli_main(["device-report", str(archive), "--results-root", str(tmp_path / "landed"), "--no-notebook"]) == 1
    assert not (tmp_path / "landed").exists()
