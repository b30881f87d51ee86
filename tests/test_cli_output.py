"""Issue 19 (CLI output glitches): progress bars never mix with the summary or with log lines, and the model
loader's internals stay at DEBUG. Each test reads what a terminal would receive on stderr.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from rifelab.cli import main
from rifelab.frames.clips import load_clip
from rifelab.frames.images import write_image
from rifelab.interpolate.batch import plan_items, run_batch
from rifelab.interpolate.run import interpolate_sequence
from rifelab.interpolate.schedule import (
    InterpolateConfig,
    OutputSchedule,
    make_schedule,
)
from rifelab.rife.checkpoints import load_rife

CURSOR_UP = "\x1b[A"


@pytest.fixture(scope="module")
def model():
    return load_rife(device="cpu")


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Four real carphone frames (176x144)."""
    return load_clip("carphone", max_frames=4)


@pytest.fixture()
def frame_folder(tmp_path, frames) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    for i, f in enumerate(frames):
        write_image(d / f"{i:03d}.png", f)
    return d


@contextmanager
def console_logging(level: int = logging.INFO):
    """A console handler on the root logger, as `rifelab`'s basicConfig makes, writing to the (captured) stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    rifelab_log = logging.getLogger("rifelab")
    old_level = rifelab_log.level
    logging.root.addHandler(handler)
    rifelab_log.setLevel(level)
    try:
        yield
    finally:
        logging.root.removeHandler(handler)
        rifelab_log.setLevel(old_level)


def _starts_its_line(err: str, message: str) -> bool:
    """Whether every occurrence of `message` starts a line of its own on a terminal (no bar text before it)."""
    lines = [line for line in err.split("\n") if message in line]
    assert lines, f"{message!r} not in the output"
    # the text after the last carriage return, once tqdm's moves back up to the cleared bar line are skipped
    return all(line.split("\r")[-1].replace(CURSOR_UP, "").startswith(message) for line in lines)


def test_summary_comes_after_all_bars_are_closed(frame_folder, tmp_path, capsys):
    """The bars end on a fresh line with the cursor below them: nothing moves the cursor up after the last bar
    line (the old code closed the write bar after the kept interpolate bar, so the summary overwrote it)."""
    assert main(["interpolate", str(frame_folder), str(tmp_path / "out"), "--multi", "3", "--threads", "1"]) == 0
    captured = capsys.readouterr()
    err = captured.err
    assert "interpolate: 100%" in err and "write:" in err
    tail = err[err.rindex("interpolate: 100%"):]
    assert CURSOR_UP not in tail, repr(tail)
    assert err.endswith("\n"), repr(err[-80:])
    assert captured.out.startswith("4 input frames, 3 pairs -> 7 output frames")


def test_log_lines_go_through_tqdm_while_interpolate_bars_are_live(frames, model, tmp_path, capsys):
    log = logging.getLogger("rifelab.test_cli_output")

    def on_frame(index: int, kind: str) -> None:
        if index == 3:
            log.warning("frame three written")

    with console_logging():
        interpolate_sequence(frames, tmp_path / "out", model, InterpolateConfig(multi=3, progress=True),
                             on_frame=on_frame)
    err = capsys.readouterr().err
    assert "write:" in err
    assert _starts_its_line(err, "WARNING rifelab.test_cli_output: frame three written"), repr(err)


def test_log_lines_go_through_tqdm_while_the_batch_bar_is_live(frame_folder, model, tmp_path, capsys):
    items = plan_items([frame_folder], tmp_path / "root")
    with console_logging():
        (res,) = run_batch(items, InterpolateConfig(multi=3), use_ray=False, progress=True, model=model)
    assert res.status == "done", res.error
    err = capsys.readouterr().err
    assert "batch:" in err
    # interpolate announces each item's frames at INFO while the batch bar is shown
    assert _starts_its_line(err, "INFO rifelab.interpolate.run: writing 7 frames"), repr(err)
    assert err.endswith("\n")


def test_fast_path_internals_are_debug_not_info(caplog):
    caplog.set_level(logging.DEBUG, logger="rifelab")
    load_rife(device="cpu")
    fast_path = [r for r in caplog.records if "fast path" in r.getMessage()]
    assert fast_path, "the checkpoint loader no longer says which groups it skipped"
    assert all(r.levelno == logging.DEBUG for r in fast_path), [(r.levelname, r.getMessage()) for r in fast_path]


def test_one_output_schedule_serves_multi_and_retiming():
    """--multi N is retiming by N-1 with the same slots; the frame count has one formula for both."""
    direct = OutputSchedule.for_multi(make_schedule(4))
    retimed = OutputSchedule.for_ratio(Fraction(3))
    for pair in (0, 5):
        a, b = direct.slots(pair), retimed.slots(pair)
        assert [(s.index, s.at, s.left, s.right, s.t, s.is_original) for s in a] == \
               [(s.index, s.at, s.left, s.right, s.t, s.is_original) for s in b]
    recursive = OutputSchedule.for_multi(make_schedule(5, recursive=True)).slots(1)
    assert [(s.index, s.level, s.left, s.right, s.t) for s in recursive] == [
        (4, 0, 0, 0, 0.0), (5, 2, 0, Fraction(1, 2), 0.5), (6, 1, 0, 1, 0.5), (7, 2, Fraction(1, 2), 1, 0.5)]
    cfg = InterpolateConfig(multi=4)
    assert cfg.output_count(10) == 3 * 9 + 1 == direct.output_count(10)
    assert InterpolateConfig(fps_ratio="5/2").output_count(5, 24.0) == 11
    assert InterpolateConfig(target_fps=60).output_count(5, 24.0) == 11
    assert cfg.output_count(None) is None
