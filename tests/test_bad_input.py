"""Issue 14: a hostile or careless user's inputs and interruptions, each reproduced on real frames.

Nothing the user owns is deleted, damaged input or output is never taken for good, and a run that
stops says in one line what happened, what was kept and how to continue.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import rifelab.interpolate.sinks as sinks
from rifelab.cli import main
from rifelab.frames.images import DataError, write_image
from rifelab.frames.clips import load_clip
from rifelab.frames.video import read_video
from rifelab.interpolate.schedule import JOURNAL_NAME, MANIFEST_NAME, InterpolateConfig
from rifelab.interpolate.run import interpolate_sequence
from rifelab.interpolate.sinks import output_frame_name, read_manifest
from rifelab.rife.checkpoints import load_rife

T = 6  # carphone frames (176x144)


@pytest.fixture(scope="module")
def model():
    return load_rife(device="cpu")


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return load_clip("carphone", max_frames=20)


@pytest.fixture(scope="module")
def frame_folder(tmp_path_factory, frames) -> Path:
    d = tmp_path_factory.mktemp("in")
    for i, f in enumerate(frames[:T]):
        write_image(d / f"{i:03d}.png", f)
    return d


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, model, frame_folder) -> Path:
    """One uninterrupted run (multi 3): what every interrupted or repaired run must equal byte for byte."""
    out = tmp_path_factory.mktemp("full") / "out"
    interpolate_sequence(frame_folder, out, model, _cfg())
    return out


def _cfg(**kw) -> InterpolateConfig:
    kw.setdefault("progress", False)
    kw.setdefault("multi", 3)
    return InterpolateConfig(**kw)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _visible(folder: Path) -> dict[str, bytes]:
    return {n: b for n, b in _snapshot(folder).items() if not n.startswith(".")}


class Killed(Exception):
    pass


def _kill_after(n: int):
    written: list[int] = []

    def on_frame(index: int, kind: str) -> None:
        written.append(index)
        if len(written) == n:
            raise Killed

    return on_frame


# ----------------------------------------------------------------------------- 1. --overwrite


def test_overwrite_refuses_a_folder_of_the_users_own_files(model, frame_folder, tmp_path):
    """The issue's repro: 3 PNGs of the user's, `--overwrite` replaced them. Now refused, files untouched."""
    mine = tmp_path / "mine"
    mine.mkdir()
    for i in range(3):
        Image.new("RGB", (50, 50)).save(mine / f"{i:08d}.png")
    before = _snapshot(mine)
    with pytest.raises(DataError, match=r"holds 3 files rifelab did not write .*00000000.png.*no rifelab manifest"):
        interpolate_sequence(frame_folder, mine, model, _cfg(overwrite=True))
    assert _snapshot(mine) == before
    rc = main(["interpolate", str(frame_folder), str(mine), "--overwrite", "--no-progress", "--device", "cpu"])
    assert rc == 2 and _snapshot(mine) == before


def test_overwrite_replaces_only_what_the_manifest_records(model, frame_folder, full_run, tmp_path):
    out = tmp_path / "out"
    interpolate_sequence(frame_folder, out, model, _cfg(multi=2))
    (out / "notes.txt").write_text("my notes")  # the user's file, beside rifelab's frames
    before = _snapshot(out)
    with pytest.raises(DataError, match=r"holds 1 file rifelab did not write \(notes.txt; its manifest does not"):
        interpolate_sequence(frame_folder, out, model, _cfg(overwrite=True))
    assert _snapshot(out) == before  # refused before anything was deleted
    (out / "notes.txt").unlink()
    s = interpolate_sequence(frame_folder, out, model, _cfg(overwrite=True))
    assert s.output_frames == 2 * (T - 1) + 1
    assert _visible(out) == _visible(full_run)


def test_a_crafted_manifest_cannot_point_overwrite_elsewhere(model, frame_folder, tmp_path):
    out = tmp_path / "out"
    interpolate_sequence(frame_folder, out, model, _cfg(multi=2))
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "notes.txt").write_text("mine")
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["frames"].update({"../victim.txt": "0" * 64, "notes.txt": "0" * 64})
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"holds 1 file rifelab did not write \(notes.txt"):
        interpolate_sequence(frame_folder, out, model, _cfg(multi=2, overwrite=True))
    (out / "notes.txt").unlink()
    interpolate_sequence(frame_folder, out, model, _cfg(multi=2, overwrite=True))
    assert victim.read_text() == "keep me"


# ----------------------------------------------------------------------------- 2. damaged videos


def _encode(path: Path, frames: np.ndarray) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(25))
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def mkv(tmp_path_factory, frames) -> Path:
    return _encode(tmp_path_factory.mktemp("video") / "clip.mkv", frames)  # 20 frames


def _cut(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _overwrite_middle(src: Path, dst: Path, n: int = 3000) -> Path:
    data = bytearray(src.read_bytes())
    mid = len(data) // 2
    data[mid : mid + n] = np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def test_truncated_video_fails_instead_of_a_short_output(model, mkv, tmp_path):
    cut = _cut(mkv, tmp_path / "cut.mkv", 0.6)  # gave 5 input frames and exit 0
    out = tmp_path / "out.mp4"
    with pytest.raises(DataError, match=r"damaged video: .*cut.mkv: decoded 5 frames of the 20 the container states; "
                                        r"lost input frames 5-19.*--allow-damaged-input"):
        interpolate_sequence(cut, out, model, _cfg())
    assert not out.exists() and not [f for f in tmp_path.iterdir() if ".tmp." in f.name]
    rc = main(["interpolate", str(cut), str(tmp_path / "o2.mp4"), "--no-progress", "--device", "cpu"])
    assert rc == 2 and not (tmp_path / "o2.mp4").exists()


def test_overwritten_bytes_fail_and_allow_damaged_input_reports_the_loss(model, mkv, tmp_path, caplog):
    bad = _overwrite_middle(mkv, tmp_path / "bad.mkv")  # gave 2 input frames and exit 0
    with pytest.raises(DataError, match=r"damaged video: .*bad.mkv: decoded \d+ frames of the 20 .*lost input frames"):
        interpolate_sequence(bad, tmp_path / "o", model, _cfg(multi=2))
    assert not list_frames_or_empty(tmp_path / "o")
    caplog.set_level(logging.WARNING)
    s = interpolate_sequence(bad, tmp_path / "o2", model, _cfg(multi=2, allow_damaged_input=True))
    assert 2 <= s.input_frames < 20 and len(s.lost_input_frames) == 20 - s.input_frames
    assert "damaged input, continued without" in s.describe() and "lost input frames" in s.describe()
    assert "damaged video, continuing with the frames that decoded" in caplog.text
    assert json.loads((tmp_path / "o2" / MANIFEST_NAME).read_text())["summary"]["lost_input_frames"]


def test_concealed_decode_errors_fail_too(frames, tmp_path):
    """Zeroed bytes inside the picture data: every frame still decodes (libav conceals the damage), silently before."""
    mp4 = _encode(tmp_path / "clip.mp4", frames)
    data = mp4.read_bytes()
    messages = []
    for k in range(1, 10):
        bad = bytearray(data)
        at = len(data) * k // 10
        bad[at : at + 40] = bytes(40)
        (tmp_path / f"bad{k}.mp4").write_bytes(bytes(bad))
        try:
            sum(1 for _ in read_video(tmp_path / f"bad{k}.mp4"))
        except DataError as exc:
            messages.append(str(exc))
    concealed = [m for m in messages if "decoded 20 frames of the 20" in m and "errors reported while decoding" in m]
    assert concealed, messages


def list_frames_or_empty(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.exists() else []


def _trimmed_copy(src: Path, dst: Path, frames: int) -> Path:
    """A stream copy whose first `frames` frames are cut by an edit list (as `ffmpeg -ss ... -c copy` makes)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        shift = int(frames / (ist.average_rate * ist.time_base))
        for pkt in inp.demux(ist):
            if pkt.dts is None:
                continue
            pkt.pts -= shift
            pkt.dts -= shift
            pkt.stream = ost
            out.mux(pkt)
    return dst


def test_intact_video_and_api_reader(mkv, frames, tmp_path):
    assert sum(1 for _ in read_video(mkv)) == 20  # an intact file: no false alarm
    mp4 = _encode(tmp_path / "clip.mp4", frames)
    trimmed = _trimmed_copy(mp4, tmp_path / "trimmed.mp4", 5)  # its frame count still says 20: no false alarm
    with av.open(str(trimmed)) as c:
        assert c.streams.video[0].frames == 20
    assert sum(1 for _ in read_video(trimmed)) == 15
    with pytest.raises(DataError, match="decoded 5 frames of the 20"):
        load_clip(str(_cut(mkv, tmp_path / "cut.mkv", 0.6)))  # the library reader checks too
    assert load_clip(str(tmp_path / "cut.mkv"), max_frames=3).shape[0] == 3  # a prefix is not a claim on the rest


# ----------------------------------------------------------------------------- 3. --resume verifies checksums


def test_manifest_records_a_checksum_per_frame(full_run):
    manifest = json.loads((full_run / MANIFEST_NAME).read_text())
    names = sorted(p.name for p in full_run.iterdir() if not p.name.startswith("."))
    assert sorted(manifest["frames"]) == names and manifest["complete"] is True
    for name in names:
        assert manifest["frames"][name] == hashlib.sha256((full_run / name).read_bytes()).hexdigest()
    assert not (full_run / JOURNAL_NAME).exists()


def test_resume_recomputes_truncated_empty_and_foreign_frames(model, frame_folder, full_run, frames, tmp_path):
    part = tmp_path / "part"
    with pytest.raises(Killed):
        interpolate_sequence(frame_folder, part, model, _cfg(), on_frame=_kill_after(8))
    assert len(read_manifest(part)["frames"]) == 8  # recorded as written, even though the run was killed
    (part / output_frame_name(2)).write_bytes((part / output_frame_name(2)).read_bytes()[:300])  # truncated
    (part / output_frame_name(3)).write_bytes(b"")  # 0 bytes
    write_image(part / output_frame_name(4), frames[15])  # a frame of another clip position, same name
    s = interpolate_sequence(frame_folder, part, model, _cfg(resume=True))  # these were kept, run marked complete
    assert s.recomputed_frames == 3 and s.kept_frames == 5
    assert "3 frames of the earlier run no longer matched their checksum" in s.describe()
    assert _visible(part) == _visible(full_run)
    assert read_manifest(part)["complete"] is True


def test_resume_refuses_frames_it_did_not_record(model, frame_folder, full_run, tmp_path):
    part = tmp_path / "part"
    with pytest.raises(Killed):
        interpolate_sequence(frame_folder, part, model, _cfg(), on_frame=_kill_after(4))
    foreign = part / output_frame_name(9)
    foreign.write_bytes((full_run / output_frame_name(9)).read_bytes())  # copied in from another run
    before = _snapshot(part)
    with pytest.raises(DataError, match=r"holds 1 file rifelab did not write \(00000009.png; its manifest does not "
                                        r"list them\); --resume only touches"):
        interpolate_sequence(frame_folder, part, model, _cfg(resume=True))
    assert _snapshot(part) == before


# ----------------------------------------------------------------------------- 4. stale video temporaries


def test_stale_video_temporary_is_removed_and_reported(model, frame_folder, tmp_path, caplog):
    stale = tmp_path / ".x.mp4.k2j4h6g8.tmp.mp4"  # what SIGKILL during encoding leaves
    stale.write_bytes(b"\x00" * 1000)
    other = tmp_path / ".y.mp4.k2j4h6g8.tmp.mp4"  # another output's temporary: not this run's to clean
    other.write_bytes(b"\x00")
    caplog.set_level(logging.WARNING)
    s = interpolate_sequence(frame_folder, tmp_path / "x.mp4", model, _cfg(multi=2))
    assert not stale.exists() and other.exists() and (tmp_path / "x.mp4").exists()
    assert s.removed_temp_files == 1 and "removed 1 temporary file left by an interrupted run" in s.describe()
    assert "removed 1 temporary file left by an interrupted run" in caplog.text


def in_fresh_process(test: str) -> bool:
    """Run one test of this file in a new interpreter and say so; False when already in it.

    These tests signal their own process. A pytest process that earlier tests left holding ONNX Runtime,
    OpenVINO or Ray (native thread pools) crashed with SIGSEGV on such a signal, which says nothing about rifelab.
    """
    if os.environ.get("RIFELAB_TEST_FRESH_PROCESS"):
        return False
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{__file__}::{test}"],
                         env={**os.environ, "RIFELAB_TEST_FRESH_PROCESS": "1"}, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return True


def test_sigterm_during_video_output_leaves_no_temporary(frame_folder, tmp_path, capsys, monkeypatch):
    """SIGTERM is turned into an interrupt: the encoder is closed and its temporary removed."""
    if in_fresh_process("test_sigterm_during_video_output_leaves_no_temporary"):
        return
    real_write = sinks._VideoSink.write
    count = {"n": 0}

    def write_then_term(self, index, frame):
        real_write(self, index, frame)
        count["n"] += 1
        if count["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(sinks._VideoSink, "write", write_then_term)
    previous = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "x.mp4"
    rc = main(["interpolate", str(frame_folder), str(out), "--multi", "2", "--serial", "--no-progress",
               "--device", "cpu"])
    assert rc == 143 and signal.getsignal(signal.SIGTERM) == previous  # 128 + SIGTERM (15), as shells expect
    assert not out.exists() and not [f for f in tmp_path.iterdir() if f.name.startswith(".")]
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "stopped by SIGTERM; the unfinished video was removed" in err
    assert "run again: rifelab interpolate" in err


# ----------------------------------------------------------------------------- interruptions and full disks


def test_sigint_is_one_line_with_the_resume_command(frame_folder, full_run, tmp_path, capsys, monkeypatch):
    if in_fresh_process("test_sigint_is_one_line_with_the_resume_command"):
        return
    real_write = sinks._FolderSink.write
    count = {"n": 0}

    def write_then_int(self, index, frame):
        real_write(self, index, frame)
        count["n"] += 1
        if count["n"] == 4:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(sinks._FolderSink, "write", write_then_int)
    out = tmp_path / "out"
    argv = ["interpolate", str(frame_folder), str(out), "--no-progress", "--device", "cpu", "--serial"]
    assert main(argv) == 130  # was an 89-line traceback
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert f"stopped by Ctrl-C; 4 complete frames kept in {out}; once fixed, continue with: rifelab interpolate" in err
    monkeypatch.setattr(sinks._FolderSink, "write", real_write)
    resume = shlex.split(err.split("continue with: ")[1])
    assert resume[0] == "rifelab" and resume[-1] == "--resume"
    assert main(resume[1:]) == 0
    assert _visible(out) == _visible(full_run)


def test_full_disk_is_one_line_and_resumable(frame_folder, full_run, tmp_path, capsys, monkeypatch):
    real_encode = sinks.encode_image
    count = {"n": 0}

    def encode_until_full(frame, ext="png"):
        count["n"] += 1
        if count["n"] > 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_encode(frame, ext)

    monkeypatch.setattr(sinks, "encode_image", encode_until_full)
    out = tmp_path / "out"
    argv = ["interpolate", str(frame_folder), str(out), "--no-progress", "--device", "cpu"]
    assert main(argv) == 1  # was an OSError: [Errno 28] traceback
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "No space left on device; 5 complete frames kept in" in err
    assert err.endswith("--resume") and not [f for f in out.iterdir() if ".tmp." in f.name]
    monkeypatch.setattr(sinks, "encode_image", real_encode)
    assert main(argv + ["--resume"]) == 0
    assert _visible(out) == _visible(full_run)


def test_read_only_output_is_one_line(frame_folder, tmp_path, capsys, monkeypatch):
    out = tmp_path / "locked"
    out.mkdir()
    if os.geteuid() == 0:  # root ignores file modes: make the write fail as a read-only folder does
        def refuse(path, text):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

        monkeypatch.setattr(sinks, "atomic_write_text", refuse)
    else:
        out.chmod(0o555)
    try:
        rc = main(["interpolate", str(frame_folder), str(out), "--no-progress", "--device", "cpu"])
    finally:
        out.chmod(0o755)
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.count("\n") == 0  # was a PermissionError traceback
    assert "Permission denied" in err and f"no frames written to {out}" in err and err.endswith("--resume")


def test_other_commands_end_in_one_line_too(capsys, monkeypatch):
    import rifelab.cli

    def interrupted(name, force=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(rifelab.cli, "fetch", interrupted)
    assert main(["fetch", "rife40"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("rifelab fetch: stopped by Ctrl-C")


# ----------------------------------------------------------------------------- --multi bound


def test_multi_has_an_upper_bound_and_large_outputs_are_announced(model, frames, tmp_path, caplog):
    with pytest.raises(ValueError, match="--multi 1000 is above the limit of 256 frames per input pair"):
        InterpolateConfig(multi=1000).validate()
    assert main(["interpolate", "in", str(tmp_path / "o"), "--multi", "1000"]) == 2
    tiny = np.ascontiguousarray(np.concatenate([frames] * 3)[:50, 40:48, 60:68])  # 8x8 crops of real frames
    caplog.set_level(logging.INFO)
    with pytest.raises(Killed):
        interpolate_sequence(tiny, tmp_path / "o", model, _cfg(multi=256, batch_size=64), on_frame=_kill_after(1))
    warning = [r for r in caplog.records if r.levelno == logging.WARNING and "this run writes" in r.message]
    assert warning and "writes 12496 frames of 8x8" in warning[0].message
