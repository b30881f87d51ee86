"""`rifelab batch` on a local Ray: same frames as separate `rifelab interpolate` runs, kill and rerun, failing items."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rifelab.interpolate import batch as batch_mod
from rifelab.interpolate.batch import collect_inputs, plan_items, results_table, run_batch
from rifelab.cli import main
from rifelab.frames.images import DataError, write_image
from rifelab.frames.clips import load_clip
from rifelab.interpolate.schedule import InterpolateConfig

REPO = Path(__file__).resolve().parent.parent
OPTS = ["--multi", "3", "--batch-size", "2", "--device", "cpu", "--threads", "1", "--no-progress"]


def _write_video(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Two small real clips (carphone, a crop of bikes) and one folder of carphone frames."""
    d = tmp_path_factory.mktemp("batch_inputs")
    _write_video(d / "carphone_a.mp4", load_clip("carphone", max_frames=5, start=30))
    _write_video(d / "bikes_crop.mp4", np.ascontiguousarray(load_clip("bikes", max_frames=5)[:, 60:188, 200:376]))
    shot = d / "shot"
    shot.mkdir()
    for i, f in enumerate(load_clip("carphone", max_frames=5, start=80)):
        write_image(shot / f"f{i}.png", f)
    return d


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> Path:
    """Three separate `rifelab interpolate` runs."""
    ref = tmp_path_factory.mktemp("reference")
    for name, src in (("carphone_a", "carphone_a.mp4"), ("bikes_crop", "bikes_crop.mp4"), ("shot", "shot")):
        assert main(["interpolate", str(inputs / src), str(ref / name), *OPTS]) == 0
    return ref


def _frames(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if not f.name.startswith(".")}


def _assert_same(out: Path, ref: Path, names=("carphone_a", "bikes_crop", "shot")) -> None:
    for name in names:
        got, want = _frames(out / name), _frames(ref / name)
        assert len(want) == 9 and list(got) == list(want), name  # 5 frames, --multi 3
        for k in want:
            assert got[k] == want[k], f"{name}/{k} differs from `rifelab interpolate`"


@pytest.mark.slow
def test_batch_on_ray_equals_separate_runs_and_a_corrupt_item_fails_alone(inputs, reference, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))  # looks like an mp4, is not one
    out = tmp_path / "out"
    listing = tmp_path / "list.txt"
    listing.write_text(f"# the folder and the broken file\n{inputs / 'shot'}\n{bad}\n")
    rc = main(["batch", str(inputs / "*.mp4"), "--manifest", str(listing), "-o", str(out), "--workers", "2",
               "--summary", str(tmp_path / "summary.csv"), *OPTS])
    captured = capsys.readouterr()
    assert rc == 1  # one item failed
    _assert_same(out, reference)
    assert not (out / "broken").exists() and not (out / ".broken.partial").exists()
    import pandas as pd

    table = pd.read_csv(tmp_path / "summary.csv").set_index("item")
    assert table.loc["broken", "status"] == "failed" and "broken.mp4" in table.loc["broken", "error"]
    for name in ("carphone_a", "bikes_crop", "shot"):
        row = table.loc[name]
        assert row.status == "done" and (row.frames_in, row.frames_out) == (5, 9) and row.fps > 0
        assert row.device == "cpu"
    assert 1 <= table.worker.nunique() <= 2  # 4 items on the 2 actors (each loaded its model once)
    assert "| item" in captured.out and "3 done, 1 failed of 4 items" in captured.out
    assert "broken: DataError" in captured.err

    # a rerun skips the finished items (untouched) and tries the broken one again
    mtimes = {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file() and ".rifelab-batch" not in f.parts}
    rc = main(["batch", str(inputs / "*.mp4"), str(inputs / "shot"), "-o", str(out), "--workers", "1", *OPTS])
    assert rc == 0 and "3 skipped of 3 items" in capsys.readouterr().out
    assert mtimes == {f: f.stat().st_mtime_ns for f in mtimes}


def _wait_for(cond, seconds: float, interval: float = 0.2) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(interval)
    return False


@pytest.mark.slow
def test_kill_mid_run_then_rerun_gives_identical_outputs(inputs, reference, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "rifelab.cli", "batch", str(inputs / "carphone_a.mp4"), str(inputs / "bikes_crop.mp4"),
           str(inputs / "shot"), "-o", str(out), "--workers", "1", *OPTS]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = tmp_path / "batch.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # kill once some frames of an item are on disk, before the whole batch is done
        # an item of these small inputs takes ~0.2 s on an idle machine: look often, or the batch ends unseen
        started = _wait_for(lambda: proc.poll() is not None or any(out.glob(".*.partial/0*.png")), 300, 0.005)
        assert started and proc.poll() is None, f"the batch wrote no frame, or ended early:\n{log.read_text()[-3000:]}"
    finally:
        with contextlib.suppress(ProcessLookupError):  # ended early: the assertion above says why
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started (same session)
        proc.wait()
    finished = [p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(finished) < 3, "the batch finished before the kill; nothing was interrupted"
    for name in finished:  # anything under its final name is complete
        assert len(_frames(out / name)) == 9
    rc = main(["batch", str(inputs / "carphone_a.mp4"), str(inputs / "bikes_crop.mp4"), str(inputs / "shot"),
               "-o", str(out), "--workers", "1", *OPTS])
    assert rc == 0
    _assert_same(out, reference)
    assert not list(out.glob(".*.partial")) and not [f for f in out.rglob("*") if ".tmp." in f.name]


def test_without_ray_runs_in_process_and_says_so(inputs, reference, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(batch_mod, "_ray", lambda: None)
    from rifelab.rife.checkpoints import load_rife

    items = plan_items(collect_inputs([str(inputs / "shot")]), tmp_path / "out")
    cfg = InterpolateConfig(multi=3, batch_size=2, progress=False)
    info = {"checkpoint": "bundled rife40", "dtype": "fp32"}
    res = run_batch(items, cfg, model_info=info, model=load_rife(), progress=False)
    assert "Ray is not installed" in capsys.readouterr().err
    assert [r.status for r in res] == ["done"]
    _assert_same(tmp_path / "out", reference, names=("shot",))

    # a partial item (killed run) is resumed with interpolate's --resume: kept frames are not recomputed
    partial = tmp_path / "out2" / ".shot.partial"
    first = run_batch(items[:0], cfg)  # no items: nothing happens
    assert first == []
    items2 = plan_items(collect_inputs([str(inputs / "shot")]), tmp_path / "out2")
    seen: list[int] = []

    class Stop(Exception):
        pass

    def stop_after_4(n: int) -> None:
        seen.append(n)
        if len(seen) == 4:
            raise Stop

    from rifelab.interpolate.batch import run_item

    r = run_item(items2[0], load_rife(), cfg, info, on_frames=stop_after_4)
    assert r.status == "failed" and "Stop" in r.error and len(list(partial.glob("0*.png"))) == 4
    res = run_batch(items2, cfg, model_info=info, model=load_rife(), progress=False)
    assert res[0].status == "resumed" and res[0].frames_written == 5
    _assert_same(tmp_path / "out2", reference, names=("shot",))

    # other settings: a finished item is refused unless --overwrite, which redoes it in place
    cfg4 = InterpolateConfig(multi=4, batch_size=2, progress=False)
    r = run_batch(items2, cfg4, model_info=info, model=load_rife(), progress=False)[0]
    assert r.status == "failed" and "exists with other settings" in r.error
    cfg4.overwrite = True
    r = run_batch(items2, cfg4, model_info=info, model=load_rife(), progress=False)[0]
    assert r.status == "done" and r.frames_out == 13 and len(_frames(tmp_path / "out2" / "shot")) == 13
    assert not list((tmp_path / "out2").glob(".shot.*"))

    # an output the batch did not write is never replaced, even with --overwrite
    mine = tmp_path / "out3" / "shot"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    items3 = plan_items(collect_inputs([str(inputs / "shot")]), tmp_path / "out3")
    r = run_batch(items3, cfg4, model_info=info, model=load_rife(), progress=False)[0]
    assert r.status == "failed" and "not written by rifelab" in r.error
    assert (mine / "notes.txt").read_text() == "mine"


def test_video_items_are_skipped_on_rerun_and_stale_temporaries_removed(inputs, tmp_path, monkeypatch):
    monkeypatch.setattr(batch_mod, "_ray", lambda: None)
    from rifelab.rife.checkpoints import load_rife

    model = load_rife()
    out = tmp_path / "out"
    items = plan_items(collect_inputs([str(inputs / "shot"), str(inputs / "carphone_a.mp4")]), out, video_ext="mkv")
    out.mkdir()
    stale = out / ".shot.mkv.abc123.tmp.mkv"  # what a killed encode leaves
    stale.write_bytes(b"half a video")
    cfg = InterpolateConfig(multi=3, batch_size=2, progress=False, lossless=True)
    res = run_batch(items, cfg, model_info={}, model=model, progress=False)
    assert [r.status for r in res] == ["done", "done"] and not stale.exists()
    import av

    with av.open(str(out / "shot.mkv")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 9
    mtime = (out / "shot.mkv").stat().st_mtime_ns
    res = run_batch(items, cfg, model_info={}, model=model, progress=False)
    assert [r.status for r in res] == ["skipped", "skipped"] and (out / "shot.mkv").stat().st_mtime_ns == mtime
    (out / "mine.mkv").write_bytes(b"a user's file")  # same name as an input, not written by rifelab
    clash = tmp_path / "mine"
    clash.symlink_to(inputs / "shot")
    r = run_batch(plan_items([clash], out, video_ext="mkv"), replace_overwrite(cfg), model_info={}, model=model,
                  progress=False)[0]
    assert r.status == "failed" and "not written by rifelab" in r.error
    assert (out / "mine.mkv").read_bytes() == b"a user's file"


def replace_overwrite(cfg: InterpolateConfig) -> InterpolateConfig:
    from dataclasses import replace

    return replace(cfg, overwrite=True)


def test_inputs_globs_manifest_and_names(inputs, tmp_path):
    listing = tmp_path / "m.txt"
    listing.write_text("# comment\n\nshot\n*.mp4\n")
    (tmp_path / "shot").symlink_to(inputs / "shot")
    for f in inputs.glob("*.mp4"):
        (tmp_path / f.name).symlink_to(f)
    found = collect_inputs([], listing)
    assert [p.name for p in found] == ["shot", "bikes_crop.mp4", "carphone_a.mp4"]
    items = plan_items(found, tmp_path / "o", video_ext="mp4")
    assert [Path(i.output).name for i in items] == ["shot.mp4", "bikes_crop.mp4", "carphone_a.mp4"]
    assert all(i.is_video_output for i in items)
    with pytest.raises(DataError, match="matches nothing"):
        collect_inputs([str(tmp_path / "*.mkv")])
    with pytest.raises(DataError, match="input not found"):
        collect_inputs([str(tmp_path / "missing.mp4")])
    twin = tmp_path / "x" / "shot"
    twin.mkdir(parents=True)
    with pytest.raises(DataError, match="would both be written"):
        plan_items([inputs / "shot", twin], tmp_path / "o")
    df = results_table([])
    assert list(df.columns) == ["item", "frames_in", "frames_out", "seconds", "fps", "device", "status", "worker",
                                "error"]


def test_batch_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["batch", "--help"])
    text = capsys.readouterr().out
    for opt in ("--output-root", "--manifest", "--ray-address", "--workers", "--no-ray", "--video-ext", "--summary",
                "--multi", "--scale", "--static-ssim", "--cut-ssim", "--target-fps", "--fps-ratio", "--fps",
                "--overwrite", "--device", "--dtype"):
        assert opt in text, opt
    import re

    assert not re.search(r"\[--benchmark\]|\[--resume\]|\[--repeats", text)  # no per-run benchmark; resume is automatic
