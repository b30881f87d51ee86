"""Issue 22: what rifelab refuses and what it never touches, each case reproduced as a careless or hostile user would.

Links where rifelab writes, foreign files under --overwrite, a second writer, deep (10/16-bit) input,
variable-frame-rate video, retiming bounds, metadata (rotation, palette transparency, audio) and batch edges.
Most tests exercise files, not interpolation quality: they run a stand-in model (`Blend`, a linear blend of the
two frames, labelled as such) on real frames of the bundled clips, so they stay fast.
"""

from __future__ import annotations

import json
import os
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import rifelab.interpolate.cli as interpolate_cli
from rifelab.cli import main
from rifelab.frames.clips import load_clip
from rifelab.frames.images import DataError, write_image
from rifelab.interpolate.run import interpolate_sequence
from rifelab.interpolate.schedule import JOURNAL_NAME, MANIFEST_NAME, InterpolateConfig
from rifelab.publish.results import atomic_write_text

T = 4  # carphone frames (176x144)


class Blend:
    """Stand-in model for file-handling tests (not RIFE): the linear blend (1-t) a + t b of the two frames."""

    device = "cpu"

    def __init__(self, gate: threading.Event | None = None, started: threading.Event | None = None):
        self.gate, self.started = gate, started

    def interpolate(self, a, b, t, scale=1.0, ensemble=False):
        if self.started is not None:
            self.started.set()
        if self.gate is not None:
            self.gate.wait(30)
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1, 1, 1, 1)
        return a * (1 - t) + b * t

    interpolate_rgba = interpolate  # the RGBA path: all four planes blended alike


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return load_clip("carphone", max_frames=T)


@pytest.fixture(scope="module")
def frame_folder(tmp_path_factory, frames) -> Path:
    d = tmp_path_factory.mktemp("carphone")
    for i, f in enumerate(frames):
        write_image(d / f"{i:04d}.png", f)
    return d


def _cfg(**kw) -> InterpolateConfig:
    kw.setdefault("progress", False)
    return InterpolateConfig(**kw)


def _victim(tmp_path: Path) -> Path:
    v = tmp_path / "victim.txt"
    v.write_text("VICTIM CONTENT\n")
    return v


# ----------------------------------------------------------------------------- 1. never through a link


@pytest.mark.parametrize("name", [JOURNAL_NAME, MANIFEST_NAME, ".rifelab-interpolate.lock", "00000001.png"])
def test_a_link_where_rifelab_writes_is_refused_naming_it(frame_folder, tmp_path, name):
    victim = _victim(tmp_path)
    out = tmp_path / "w"
    interpolate_sequence(frame_folder, out, Blend(), _cfg())
    (out / name).unlink(missing_ok=True)
    (out / name).symlink_to(victim)
    for flag in ("overwrite", "resume"):
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            interpolate_sequence(frame_folder, out, Blend(), _cfg(**{flag: True}))
        assert victim.read_text() == "VICTIM CONTENT\n"
    assert (out / name).is_symlink()


def test_journal_link_in_a_fresh_output_is_refused(frame_folder, tmp_path):
    """The issue's case: a link named like the journal in an output that has nothing else."""
    victim = _victim(tmp_path)
    out = tmp_path / "b4f"
    out.mkdir()
    (out / JOURNAL_NAME).symlink_to(victim)
    with pytest.raises(ValueError, match="symbolic link"):
        interpolate_sequence(frame_folder, out, Blend(), _cfg(overwrite=True))
    assert victim.read_text() == "VICTIM CONTENT\n"


def test_video_output_record_and_batch_record_links_are_refused(frame_folder, tmp_path):
    victim = _victim(tmp_path)
    video = tmp_path / "v.mp4"
    video.symlink_to(victim)
    with pytest.raises(ValueError, match="v.mp4 is a symbolic link"):
        interpolate_sequence(frame_folder, video, Blend(), _cfg(multi=2, overwrite=True))
    video.unlink()
    (tmp_path / ".v.mp4.rifelab.json").symlink_to(victim)
    with pytest.raises(ValueError, match="rifelab.json is a symbolic link"):
        interpolate_sequence(frame_folder, video, Blend(), _cfg(multi=2))
    assert victim.read_text() == "VICTIM CONTENT\n" and not video.exists()
    link = tmp_path / "record.json"
    link.symlink_to(victim)
    with pytest.raises(ValueError, match="record.json is a symbolic link"):
        atomic_write_text(link, "{}")  # batch records, summaries, results: all go through atomic_path
    assert victim.read_text() == "VICTIM CONTENT\n"


def test_export_refuses_a_link(tmp_path, monkeypatch):
    from rifelab.engines import cli as engines_cli

    victim = _victim(tmp_path)
    link = tmp_path / "m.onnx"
    link.symlink_to(victim)
    monkeypatch.setattr(engines_cli, "load_checkpoint", lambda *a, **k: pytest.fail("the model loaded before the refusal"))
    assert main(["export", "--resolution", "64x64", "-o", str(link), "--no-verify"]) == 2
    assert victim.read_text() == "VICTIM CONTENT\n"


# ----------------------------------------------------------------------------- 6. foreign files never replaced


def test_overwrite_never_replaces_a_users_video(frame_folder, tmp_path, capsys):
    mine = tmp_path / "mine.mp4"
    mine.write_bytes(b"my holiday video")
    with pytest.raises(DataError, match="not written by rifelab"):
        interpolate_sequence(frame_folder, mine, Blend(), _cfg(multi=2, overwrite=True))
    assert mine.read_bytes() == b"my holiday video"
    ours = tmp_path / "ours.mp4"
    interpolate_sequence(frame_folder, ours, Blend(), _cfg(multi=2))
    record = json.loads((tmp_path / ".ours.mp4.rifelab.json").read_text())
    assert record["name"] == "ours.mp4" and record["size"] == ours.stat().st_size
    interpolate_sequence(frame_folder, ours, Blend(), _cfg(multi=3, overwrite=True))  # ours: replaced
    with av.open(str(ours)) as c:
        assert c.streams.video[0].frames == 2 * (T - 1) + 1
    ours.write_bytes(b"edited by the user since")  # no longer what rifelab wrote: kept
    with pytest.raises(DataError, match="not written by rifelab"):
        interpolate_sequence(frame_folder, ours, Blend(), _cfg(multi=2, overwrite=True))
    assert ours.read_bytes() == b"edited by the user since"


def test_export_never_replaces_a_file_it_did_not_write(tmp_path, monkeypatch, capsys):
    from rifelab.engines import cli as engines_cli

    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"my own model")
    monkeypatch.setattr(engines_cli, "load_checkpoint", lambda *a, **k: pytest.fail("the model loaded before the refusal"))
    assert main(["export", "--resolution", "64x64", "-o", str(mine), "--no-verify"]) == 2
    assert mine.read_bytes() == b"my own model"
    assert "not written by rifelab" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 5. one writer per output


@pytest.mark.parametrize("output", ["folder", "clip.mp4"])
def test_a_second_writer_is_refused_naming_the_first(frame_folder, tmp_path, output):
    out = tmp_path / output
    gate, started = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            interpolate_sequence(frame_folder, out, Blend(gate, started), _cfg(multi=3))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    th = threading.Thread(target=first)
    th.start()
    try:
        assert started.wait(30)
        for flag in ("resume", "overwrite"):
            if flag == "resume" and output.endswith(".mp4"):
                continue
            with pytest.raises(DataError, match=rf"being written by another rifelab run \(pid {os.getpid()}"):
                interpolate_sequence(frame_folder, out, Blend(), _cfg(**{flag: True}))
    finally:
        gate.set()
        th.join()
    assert not errors
    interpolate_sequence(frame_folder, out, Blend(), _cfg(overwrite=True))  # released: the next run may write


# ----------------------------------------------------------------------------- 10. small ones


def test_refusals_come_before_the_model_loads(frame_folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "full"
    out.mkdir()
    (out / "mine.txt").write_text("x")
    monkeypatch.setattr(interpolate_cli, "load_interpolation_model",
                        lambda args: pytest.fail("the model loaded before the output was checked"))
    rc = main(["interpolate", str(frame_folder), str(out), "--no-progress", "--device", "cpu"])
    assert rc == 2 and "not empty" in capsys.readouterr().err


def test_refusal_comes_before_the_announcement(frame_folder, tmp_path, caplog):
    out = tmp_path / "full"
    out.mkdir()
    (out / "mine.txt").write_text("x")
    with caplog.at_level("INFO"), pytest.raises(DataError):
        interpolate_sequence(frame_folder, out, Blend(), _cfg())
    assert "writing" not in caplog.text


def test_float_frames_slightly_above_one_are_clamped_with_a_warning(caplog):
    from rifelab.rife.model import check_pair

    a = torch.full((1, 3, 8, 8), 1.015)
    b = torch.full((1, 3, 8, 8), -0.01)
    with caplog.at_level("WARNING"):
        a2, b2 = check_pair(a, b)
    assert float(a2.max()) <= 1.0 and float(b2.min()) >= 0.0
    assert "clamped" in caplog.text


# ----------------------------------------------------------------------------- 2. 10-bit video and 16-bit PNG


def _deep(frames: np.ndarray) -> np.ndarray:
    """Real frames widened to 16 bits with low bits set (so an 8-bit round trip cannot reproduce them)."""
    ramp = (np.arange(frames.shape[2], dtype=np.uint16) % 200)[None, None, :, None]
    return (frames.astype(np.uint16) * 257 + ramp).astype(np.uint16)


@pytest.fixture(scope="module")
def video10(tmp_path_factory, frames) -> Path:
    """A lossless 10-bit (FFV1 yuv420p10le) Matroska file of real frames."""
    path = tmp_path_factory.mktemp("deep") / "d10.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p10le"
        for f in _deep(frames):
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb48le")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _png16(path: Path, frame: np.ndarray) -> None:
    ctx = av.codec.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt = frame.shape[1], frame.shape[0], "rgb48be"
    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb48le")
    path.write_bytes(b"".join(bytes(p) for p in [*ctx.encode(vf), *ctx.encode(None)]))


def _read16(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb48le")


def test_10bit_video_keeps_its_depth_in_frames_and_video(video10, tmp_path):
    with av.open(str(video10)) as c:
        decoded = [f.to_ndarray(format="rgb48le") for f in c.decode(video=0)]
    out = tmp_path / "frames"
    interpolate_sequence(video10, out, Blend(), _cfg(multi=3))
    first, middle = _read16(out / "00000000.png"), _read16(out / "00000001.png")
    assert first.dtype == np.uint16 and np.array_equal(first, decoded[0])  # the original, all 16 bits
    assert (middle % 257 != 0).any()  # the model's frame is not an 8-bit value widened
    for name in ("v.mp4", "v.mkv"):
        interpolate_sequence(video10, tmp_path / name, Blend(), _cfg(multi=3))
        with av.open(str(tmp_path / name)) as c:
            assert c.streams.video[0].codec_context.format.components[0].bits >= 10


def test_16bit_png_frames_stay_16bit(frames, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    deep = _deep(frames)
    for i, f in enumerate(deep):
        _png16(src / f"{i:03d}.png", f)
    out = tmp_path / "out"
    interpolate_sequence(src, out, Blend(), _cfg(multi=3))
    assert np.array_equal(_read16(out / "00000002.png"), deep[1])
    assert (_read16(out / "00000001.png") % 257 != 0).any()
    assert json.loads((out / MANIFEST_NAME).read_text())["depth"] == 16


def test_depth_reduction_is_refused_unless_allowed(video10, tmp_path, caplog):
    with pytest.raises(DataError, match=r"10-bit samples.*--allow-8bit"):
        interpolate_sequence(video10, tmp_path / "j", Blend(), _cfg(ext="jpg"))
    with pytest.raises(DataError, match=r"10-bit samples.*--allow-8bit"):
        interpolate_sequence(video10, tmp_path / "v.webm", Blend(), _cfg())
    with caplog.at_level("WARNING"):
        interpolate_sequence(video10, tmp_path / "j", Blend(), _cfg(ext="jpg", allow_8bit=True))
    assert "reduced to 8 bits" in caplog.text


# ----------------------------------------------------------------------------- 3. variable frame rate

VFR_MS = [0, 40, 80, 200, 240, 400, 440, 480]  # the file: valid, 8 frames, no frame count in the container


@pytest.fixture(scope="module")
def vfr(tmp_path_factory) -> Path:
    frames = load_clip("carphone", max_frames=len(VFR_MS))
    path = tmp_path_factory.mktemp("vfr") / "vfr.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for f, ms in zip(frames, VFR_MS):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = ms, Fraction(1, 1000)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        return sorted(float(f.pts * st.time_base) for f in c.decode(st))


def test_vfr_video_is_not_called_damaged(vfr, tmp_path):
    s = interpolate_sequence(vfr, tmp_path / "o", Blend(), _cfg(multi=2))
    assert s.input_frames == 8 and not s.damaged_input and not s.lost_input_frames


def test_vfr_retiming_keeps_the_duration(vfr, tmp_path):
    out = tmp_path / "r.mp4"
    s = interpolate_sequence(vfr, out, Blend(), _cfg(target_fps=50))
    assert s.output_frames == 25  # frames at 0, 20, ..., 480 ms: the input's 0.48 s, not 0.28 s
    times = _times(out)
    assert len(times) == 25 and times[-1] == pytest.approx(0.48, abs=1e-3)
    frames = interpolate_sequence(vfr, tmp_path / "rf", Blend(), _cfg(target_fps=50))
    assert frames.output_frames == 25 and frames.original_frames == len(VFR_MS)  # every input time is a k/50


def test_vfr_multi_writes_each_output_timestamp(vfr, tmp_path, caplog):
    out = tmp_path / "m.mkv"
    interpolate_sequence(vfr, out, Blend(), _cfg(multi=3))
    expected = sorted({*VFR_MS, *[(a + b) / 2 for a, b in zip(VFR_MS, VFR_MS[1:])]})
    assert _times(out) == pytest.approx([ms / 1000 for ms in expected], abs=2e-3)
    with caplog.at_level("WARNING"):
        interpolate_sequence(vfr, tmp_path / "f", Blend(), _cfg(multi=3))
    assert "variable frame rate" in caplog.text and "assumes a constant rate" in caplog.text


# ----------------------------------------------------------------------------- 7. bounds and words


def test_retiming_has_bounds_and_says_when_it_drops_frames(frame_folder, tmp_path, capsys):
    with pytest.raises(DataError, match="--allow-frame-drop"):  # first: the old code computes 1e6 fps for minutes
        interpolate_sequence(frame_folder, tmp_path / "slow", Blend(), _cfg(target_fps=12))
    with pytest.raises(DataError, match="above the limit of 256"):
        interpolate_sequence(frame_folder, tmp_path / "big", Blend(), _cfg(target_fps=1e6))
    assert not (tmp_path / "big").exists()
    s = interpolate_sequence(frame_folder, tmp_path / "slow", Blend(), _cfg(target_fps=12, allow_frame_drop=True))
    assert s.output_frames == 2
    rc = main(["interpolate", str(frame_folder), str(tmp_path / "x"), "--multi", "4", "--target-fps", "50",
               "--no-progress"])
    assert rc == 2 and "--multi 4 and --target-fps" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 8. metadata kept


@pytest.fixture(scope="module")
def rotated(tmp_path_factory, frames) -> Path:
    """Real frames in an mp4 whose display matrix says: show rotated 90 degrees (as phones record)."""
    path = tmp_path_factory.mktemp("rot") / "rot.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.set_display_rotation(90)
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_rotation_is_kept(rotated, frames, tmp_path):
    out = tmp_path / "f"
    interpolate_sequence(rotated, out, Blend(), _cfg(multi=2))
    from rifelab.frames.images import read_image

    first = read_image(out / "00000000.png")
    assert first.shape == (frames.shape[2], frames.shape[1], 3)  # turned as a player shows it
    with av.open(str(rotated)) as c:
        shown = np.rot90(next(c.decode(video=0)).to_ndarray(format="rgb24"), k=1)
    assert np.array_equal(first, shown)
    video = tmp_path / "v.mp4"
    interpolate_sequence(rotated, video, Blend(), _cfg(multi=3))
    with av.open(str(video)) as c:
        assert next(c.decode(video=0)).rotation == 90  # tagged like the input


def test_palette_png_with_transparency_keeps_its_alpha(tmp_path):
    from PIL import Image

    src = tmp_path / "pal"
    src.mkdir()
    real = load_clip("carphone", max_frames=2)
    for i, f in enumerate(real):
        im = Image.fromarray(f).quantize(16)
        im.save(src / f"{i}.png", transparency=0)  # palette entry 0 is transparent
    out = tmp_path / "out"
    interpolate_sequence(src, out, Blend(), _cfg(multi=3))
    with Image.open(out / "00000000.png") as im:
        rgba = np.asarray(im.convert("RGBA"))
    with Image.open(src / "0.png") as im:
        expected = np.asarray(im.convert("RGBA"))
    assert (expected[..., 3] == 0).any() and np.array_equal(rgba[..., 3], expected[..., 3])


@pytest.fixture(scope="module")
def with_audio(tmp_path_factory, frames) -> Path:
    """Real frames (25 fps) with an AAC audio track (a synthetic 440 Hz tone, labelled as such)."""
    path = tmp_path_factory.mktemp("audio") / "sound.mp4"
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        a = c.add_stream("aac", rate=48000)
        a.layout = "mono"
        for f in frames:
            for p in v.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(48000 * len(frames) / 25)) / 48000)).astype(np.float32)
        for i in range(0, tone.size, 1024):
            af = av.AudioFrame.from_ndarray(tone[None, i : i + 1024], format="fltp", layout="mono")
            af.sample_rate, af.pts = 48000, i
            for p in a.encode(af):
                c.mux(p)
        for s in (v, a):
            for p in s.encode():
                c.mux(p)
    return path


def test_audio_is_copied_when_the_duration_is_kept(with_audio, tmp_path, caplog):
    out = tmp_path / "x2.mp4"
    interpolate_sequence(with_audio, out, Blend(), _cfg(multi=3))
    with av.open(str(out)) as c:
        assert c.streams.audio and c.streams.audio[0].codec_context.name == "aac"
        assert sum(1 for _ in c.demux(c.streams.audio[0])) > 3
    with caplog.at_level("WARNING"):
        interpolate_sequence(with_audio, tmp_path / "slow.mp4", Blend(), _cfg(multi=3, fps=25))
    assert "audio is not copied: --fps 25 changes the duration" in caplog.text
    with av.open(str(tmp_path / "slow.mp4")) as c:
        assert not c.streams.audio


# ----------------------------------------------------------------------------- 9. batch edges


def test_batch_rerun_with_its_output_root_under_the_glob(frames, tmp_path, monkeypatch, capsys):
    import rifelab.interpolate.batch as batch

    monkeypatch.setattr(batch, "load_interpolation_model", lambda args: Blend())
    g = tmp_path / "e" / "g"
    (g / "a").mkdir(parents=True)
    for i, f in enumerate(frames):
        write_image(g / "a" / f"{i}.png", f)
    (g / "bad").mkdir()
    (g / "bad" / "0.png").write_bytes(b"not a png")
    (g / "bad" / "1.png").write_bytes(b"not a png")
    argv = ["batch", str(g / "*"), "-o", str(g / "out"), "--no-ray", "--no-progress"]
    assert main(argv) == 1  # 'bad' fails, 'a' is done
    assert (g / "out" / "a").is_dir() and not (g / "out" / ".bad.partial").exists()  # no empty partial left
    capsys.readouterr()
    assert main(argv) == 1  # the rerun: out/ is not an input, a is skipped, bad fails again
    out = capsys.readouterr().out
    assert "out" not in [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("|")][2:]
    assert "1 skipped" in out and "1 failed" in out


def test_batch_overwrite_refusal_does_not_ask_for_overwrite(frame_folder, tmp_path):
    from rifelab.interpolate.batch import plan_items, run_item

    (tmp_path / "out" / frame_folder.name).mkdir(parents=True)
    (tmp_path / "out" / frame_folder.name / "mine.txt").write_text("x")
    item = plan_items([frame_folder], tmp_path / "out")[0]
    res = run_item(item, Blend(), _cfg(overwrite=True))
    assert res.status == "failed" and "not written by rifelab" in res.error and "pass --overwrite" not in res.error
    assert (tmp_path / "out" / frame_folder.name / "mine.txt").read_text() == "x"


DRIVER = """
import subprocess, sys, time
from rifelab.interpolate import raywatch
raywatch.watch_descendants()
time.sleep(1.0)  # the watchdog notes the driver's children from before it (none here)
child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                          "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def test_local_ray_processes_die_with_a_killed_driver(tmp_path):
    """A stand-in driver (not Ray: a child that starts a grandchild, as the raylet starts its agents) is killed -9."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True)
    child = int(driver.stdout.readline())
    time.sleep(2.0)  # two polls of the watchdog
    tree = [child] + [c.pid for c in psutil.Process(child).children(recursive=True)]
    assert len(tree) == 2
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                                         for p in tree):
        time.sleep(0.2)
    alive = [p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    for p in alive:  # do not leave them behind if the test fails
        os.kill(p, signal.SIGKILL)
    assert not alive


def test_next_run_stops_what_a_killed_driver_left(tmp_path, monkeypatch):
    import subprocess
    import sys

    import psutil

    from rifelab.interpolate import raywatch

    monkeypatch.setattr(raywatch.tempfile, "gettempdir", lambda: str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        raywatch.record_dir().mkdir()
        rec = raywatch.record_dir() / f"{gone.pid}.json"
        rec.write_text(json.dumps({"driver": gone.pid,
                                   "processes": {str(orphan.pid): psutil.Process(orphan.pid).create_time()}}))
        assert raywatch.reap_orphans() == [orphan.pid]
        assert orphan.wait(10) is not None and not rec.exists()
    finally:
        if orphan.poll() is None:
            orphan.kill()
