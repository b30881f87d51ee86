"""`rifelab interpolate` and the timestep viewer on real frames of the bundled clips and the real RIFE 4.0 weights."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rifelab.frames.images import DataError, list_frames, read_image, to_tensor, to_uint8, write_image
from rifelab.frames.clips import clip_info, load_clip
from rifelab.interpolate.schedule import MANIFEST_NAME, InterpolateConfig, make_schedule
from rifelab.interpolate.sources import ArraySource
from rifelab.interpolate.run import interpolate_sequence
from rifelab.interpolate.sinks import output_frame_name
from rifelab.frames.scenes import SceneThresholds, decide_pair
from rifelab.rife.checkpoints import load_rife

T = 6  # carphone frames used (176x144: small and fast)


@pytest.fixture(scope="module")
def model():
    return load_rife(device="cpu")


@pytest.fixture(scope="module")
def frames():
    return load_clip("carphone", max_frames=T)


@pytest.fixture(scope="module")
def frame_folder(tmp_path_factory, frames):
    """Frames named frame_0, frame_5, frame_10, ...: lexical order would put frame_10 before frame_5."""
    d = tmp_path_factory.mktemp("carphone_frames")
    for i, f in enumerate(frames):
        write_image(d / f"frame_{i * 5}.png", f)
    return d


def _direct(model, a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return to_uint8(model.interpolate(to_tensor(a), to_tensor(b), t))[0]


def _read_all(folder: Path) -> list[np.ndarray]:
    return [read_image(p) for p in list_frames(folder)]


def _cfg(**kw) -> InterpolateConfig:
    kw.setdefault("progress", False)
    return InterpolateConfig(**kw)


# ----------------------------------------------------------------------------- schedules


def test_direct_schedule_evenly_spaced_in_one_level():
    s = make_schedule(5)
    assert len(s.levels) == 1
    assert [st.t for st in s.levels[0]] == pytest.approx([0.25, 0.5, 0.75])
    assert all((st.left, st.right) == (0, 4) for st in s.levels[0])
    assert make_schedule(2).levels == ()


@pytest.mark.parametrize("multi", [3, 4, 5, 6, 7, 9, 17])
def test_recursive_schedule_fills_every_slot_after_its_inputs(multi):
    s = make_schedule(multi, recursive=True)
    ready = {0, multi - 1}
    for level in s.levels:
        for st in level:
            assert st.left in ready and st.right in ready and st.target not in ready
            # the frame at slot `target` is at the right global time when made from its neighbours at local t
            assert st.target == pytest.approx(st.left + st.t * (st.right - st.left))
        ready |= {st.target for st in level}
    assert ready == set(range(multi))
    power_of_two = (multi - 1) & (multi - 2) == 0
    assert all(st.t == 0.5 for st in s.steps) == power_of_two
    if power_of_two:
        assert len(s.levels) == int(np.log2(multi - 1))


def test_recursive_schedule_multi4_documented_case():
    s = make_schedule(4, recursive=True)
    assert [[(st.left, st.right, st.target, round(st.t, 6)) for st in lv] for lv in s.levels] == [
        [(0, 3, 1, round(1 / 3, 6))],
        [(1, 3, 2, 0.5)],
    ]


# ----------------------------------------------------------------------------- folder runs


def test_multi4_folder_originals_exact_and_inserted_from_model(model, frames, frame_folder, tmp_path):
    out = tmp_path / "out"
    s = interpolate_sequence(frame_folder, out, model, _cfg(multi=4, batch_size=1))
    files = list_frames(out)
    assert [p.name for p in files] == [output_frame_name(i) for i in range(3 * (T - 1) + 1)]
    got = _read_all(out)
    for k in range(T):  # originals at every third index, bit for bit, in numeric (not lexical) order
        np.testing.assert_array_equal(got[3 * k], frames[k])
    for p in range(T - 1):  # inserted frames: the model at t = 1/3 and 2/3 from the two originals
        for i, t in ((1, 1 / 3), (2, 2 / 3)):
            np.testing.assert_array_equal(got[3 * p + i], _direct(model, frames[p], frames[p + 1], t))
    assert (s.input_frames, s.pairs, s.output_frames) == (T, T - 1, 16)
    assert (s.original_frames, s.model_frames, s.duplicated_frames) == (T, 2 * (T - 1), 0)
    assert s.interpolated_pairs == T - 1 and s.written_frames == 16
    assert s.model_calls == 2 * (T - 1)  # batch_size 1: one call per inserted frame
    assert not [f for f in out.iterdir() if ".tmp." in f.name]
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["complete"] is True and manifest["multi"] == 4


def test_batched_and_serial_runs_match_unbatched(model, frames, tmp_path):
    src = frames[:3]
    a = interpolate_sequence(src, tmp_path / "a", model, _cfg(multi=4, batch_size=1))
    b = interpolate_sequence(src, tmp_path / "b", model, _cfg(multi=4, batch_size=4))
    c = interpolate_sequence(src, tmp_path / "c", model, _cfg(multi=4, batch_size=4, threaded=False))
    assert b.model_calls == c.model_calls == 1 and a.model_calls == 4  # both pairs' two frames in one call of 4
    fa, fb, fc = _read_all(tmp_path / "a"), _read_all(tmp_path / "b"), _read_all(tmp_path / "c")
    for x, y, z in zip(fa, fb, fc):
        np.testing.assert_array_equal(y, z)  # threads change nothing
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1  # batching: float rounding only


def test_recursive_multi5_is_repeated_bisection(model, frames, tmp_path):
    a, b = frames[0], frames[1]
    interpolate_sequence(frames[:2], tmp_path / "o", model, _cfg(multi=5, recursive=True, batch_size=1))
    got = _read_all(tmp_path / "o")
    assert len(got) == 5
    x0, x1 = to_tensor(a), to_tensor(b)
    mid = model.interpolate(x0, x1, 0.5)
    q1, q3 = model.interpolate(x0, mid, 0.5), model.interpolate(mid, x1, 0.5)
    for k, ref in ((1, q1), (2, mid), (3, q3)):
        np.testing.assert_array_equal(got[k], to_uint8(ref)[0])
    np.testing.assert_array_equal(got[0], a)
    np.testing.assert_array_equal(got[4], b)


def test_recursive_multi4_not_power_of_two(model, frames, tmp_path):
    a, b = frames[0], frames[1]
    interpolate_sequence(frames[:2], tmp_path / "o", model, _cfg(multi=4, recursive=True, batch_size=1))
    got = _read_all(tmp_path / "o")
    x0, x1 = to_tensor(a), to_tensor(b)
    f1 = model.interpolate(x0, x1, 1 / 3)
    f2 = model.interpolate(f1, x1, 0.5)
    np.testing.assert_array_equal(got[1], to_uint8(f1)[0])
    np.testing.assert_array_equal(got[2], to_uint8(f2)[0])
    direct = _direct(model, a, b, 2 / 3)
    assert not np.array_equal(got[2], direct)  # recursion really used the made frame, not the originals


# ----------------------------------------------------------------------------- static frames and scene cuts


@pytest.fixture(scope="module")
def bikes_cut():
    """Frames 186 and 187 of the bundled bikes clip: a real scene cut."""
    return load_clip("bikes", start=186, max_frames=2)


def test_decisions_on_real_pairs(frames, bikes_cut):
    d = decide_pair(frames[0], frames[1])
    assert d.kind == "interpolate" and 0.5 < d.ssim < 0.996
    assert decide_pair(frames[2], frames[2].copy()).kind == "static"
    cut = decide_pair(bikes_cut[0], bikes_cut[1])
    assert cut.kind == "cut" and cut.ssim < 0.2
    off = SceneThresholds(static_ssim=None, cut_ssim=None, cut_hist=None)
    assert decide_pair(bikes_cut[0], bikes_cut[1], off).kind == "interpolate"
    assert decide_pair(frames[2], frames[2], off).kind == "interpolate"
    # a cut between two different clips (same size) is caught by the histogram test alone
    other = load_clip("bigbuckbunny", max_frames=1)[0][:144, :176]
    hist_only = SceneThresholds(static_ssim=None, cut_ssim=None, cut_hist=0.3)
    d = decide_pair(frames[0], other, hist_only)
    assert d.kind == "cut" and d.hist > 0.3
    assert decide_pair(frames[0], frames[1], hist_only).kind == "interpolate"


def test_pipeline_duplicates_static_pairs_and_cuts(model, frames, bikes_cut, tmp_path):
    b = bikes_cut[1][:144, :176].copy()  # real frame of another scene, cropped to carphone's size
    seq = np.stack([frames[0], frames[0], frames[1], b])  # static pair, ordinary pair, scene cut
    s = interpolate_sequence(seq, tmp_path / "o", model, _cfg(multi=4))
    got = _read_all(tmp_path / "o")
    assert len(got) == 10
    assert (s.static_pairs, s.interpolated_pairs, s.cut_pairs) == (1, 1, 1)
    assert (s.model_frames, s.duplicated_frames) == (2, 4)
    # static pair: t=1/3 -> first frame, t=2/3 -> second (identical here)
    np.testing.assert_array_equal(got[1], frames[0])
    np.testing.assert_array_equal(got[2], frames[0])
    # interpolated pair comes from the model
    assert np.abs(got[4].astype(int) - _direct(model, frames[0], frames[1], 1 / 3).astype(int)).max() <= 1
    # cut: nearest original in time, never a blend of the two scenes
    np.testing.assert_array_equal(got[7], frames[1])
    np.testing.assert_array_equal(got[8], b)
    np.testing.assert_array_equal(got[9], b)


# ----------------------------------------------------------------------------- video


def test_video_round_trip(model, frames, frame_folder, tmp_path):
    fps = clip_info("carphone")["fps"]
    video_in = tmp_path / "in.mp4"
    s0 = interpolate_sequence(frame_folder, video_in, model,
                              _cfg(multi=2, lossless=True, input_fps=fps))  # folder -> lossless video (copy)
    assert s0.model_frames == 0 and s0.output_fps == pytest.approx(fps)
    np.testing.assert_array_equal(load_clip(str(video_in)), frames)

    video_out = tmp_path / "out.mkv"
    s = interpolate_sequence(video_in, video_out, model, _cfg(multi=3, lossless=True))
    back = load_clip(str(video_out))
    info = clip_info(str(video_out))
    assert back.shape == (2 * (T - 1) + 1, 144, 176, 3) and s.output_frames == 11
    assert info["fps"] == pytest.approx(2 * fps, rel=1e-3)
    ref = interpolate_sequence(frame_folder, tmp_path / "ref", model, _cfg(multi=3))
    assert ref.model_frames == T - 1
    for a, b in zip(back, _read_all(tmp_path / "ref")):  # lossless: the same frames as a folder run
        np.testing.assert_array_equal(a, b)
    # default lossy H.264 output: same frame count, close to the lossless frames
    lossy = tmp_path / "out.mp4"
    interpolate_sequence(video_in, lossy, model, _cfg(multi=3))
    from rifelab.measure.metrics import psnr

    assert load_clip(str(lossy)).shape == back.shape
    assert psnr(load_clip(str(lossy)), back).min() > 30
    assert not [f for f in tmp_path.iterdir() if ".tmp." in f.name]
    with pytest.raises(DataError, match="exists; pass --overwrite"):
        interpolate_sequence(video_in, lossy, model, _cfg(multi=3))


# ----------------------------------------------------------------------------- resume


class Killed(Exception):
    pass


def test_resume_after_kill_equals_uninterrupted_run(model, frame_folder, tmp_path):
    full = tmp_path / "full"
    cfg = dict(multi=4, batch_size=4)  # groups of 2 pairs per model call
    s_full = interpolate_sequence(frame_folder, full, model, _cfg(**cfg))

    part = tmp_path / "part"
    written: list[int] = []

    def kill_after_7(index: int, kind: str) -> None:
        written.append(index)
        if len(written) == 7:
            raise Killed("simulated kill")

    with pytest.raises(Killed):
        interpolate_sequence(frame_folder, part, model, _cfg(**cfg), on_frame=kill_after_7)
    left = sorted(p.name for p in part.glob("0*.png"))
    assert left == [output_frame_name(i) for i in range(7)]  # only complete frames, no half-written ones
    # a kill also leaves a trailing frame lost and a stale temporary file behind
    (part / output_frame_name(6)).unlink()
    (part / f".{output_frame_name(6)}.abc123.tmp.png").write_bytes(b"\x89PNG half written")

    with pytest.raises(DataError, match="not empty.*--resume"):
        interpolate_sequence(frame_folder, part, model, _cfg(**cfg))
    with pytest.raises(DataError, match="other settings.*multi: 4 then, 5 now"):
        interpolate_sequence(frame_folder, part, model, _cfg(multi=5, batch_size=4, resume=True))

    s = interpolate_sequence(frame_folder, part, model, _cfg(**cfg, resume=True))
    assert s.kept_frames == 6 and s.written_frames == 16 - 6
    assert s.kept_pairs == 2 and s.model_calls == s_full.model_calls - 1  # the first group was not recomputed
    names = sorted(p.name for p in part.iterdir() if not p.name.startswith("."))
    assert names == sorted(p.name for p in full.iterdir() if not p.name.startswith("."))
    assert not [f for f in part.iterdir() if ".tmp." in f.name]
    for name in names:  # byte for byte what one uninterrupted run wrote
        assert (part / name).read_bytes() == (full / name).read_bytes(), name

    again = interpolate_sequence(frame_folder, part, model, _cfg(**cfg, resume=True))
    assert again.written_frames == 0 and again.kept_frames == 16 and again.model_calls == 0

    s2 = interpolate_sequence(frame_folder, part, model, _cfg(multi=2, overwrite=True))
    assert s2.output_frames == T and len(list_frames(part)) == T


def test_bounded_queues_limit_read_ahead(frames, tmp_path):
    """The reader may run only a bounded distance ahead of the writer, however long the input."""
    many = np.concatenate([frames] * 8)  # 48 frames
    read = {"n": 0}

    class CountingSource(ArraySource):
        def __iter__(self):
            for f in super().__iter__():
                read["n"] += 1
                yield f

    ahead = []

    def slow_writer(index: int, kind: str) -> None:
        ahead.append(read["n"] - index)
        time.sleep(0.01)

    interpolate_sequence(CountingSource(many), tmp_path / "o", None, _cfg(multi=2, queue_size=2), on_frame=slow_writer)
    assert len(ahead) == 48
    assert max(ahead) <= 2 + 4 + 2 + 3  # reader queue + model group + writer queue + one in each stage's hands


# ----------------------------------------------------------------------------- bad input


def _write_frames(d: Path, frames: list[np.ndarray]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        write_image(d / f"{i:03d}.png", f)
    return d


def test_bad_inputs_have_clear_messages(model, frames, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no image frames"):
        interpolate_sequence(empty, tmp_path / "o1", model, _cfg())

    corrupt = _write_frames(tmp_path / "corrupt", list(frames[:3]))
    (corrupt / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match=r"cannot read image .*001\.png.*corrupt"):
        interpolate_sequence(corrupt, tmp_path / "o2", model, _cfg())

    sizes = _write_frames(tmp_path / "sizes", [frames[0], frames[1], frames[2][:100, :120]])
    with pytest.raises(DataError, match=r"002\.png is 120x100 .* first frame 000\.png is 176x144.*same size"):
        interpolate_sequence(sizes, tmp_path / "o3", model, _cfg())

    stray = _write_frames(tmp_path / "stray", list(frames[:2]))
    (stray / "notes.txt").write_text("not a frame")
    with pytest.raises(DataError, match="not images: notes.txt"):
        interpolate_sequence(stray, tmp_path / "o4", model, _cfg())

    single = _write_frames(tmp_path / "single", [frames[0]])
    with pytest.raises(DataError, match="has 1 frame; interpolation needs at least 2"):
        interpolate_sequence(single, tmp_path / "o5", model, _cfg())

    with pytest.raises(DataError, match="input not found"):
        interpolate_sequence(tmp_path / "nope", tmp_path / "o6", model, _cfg())
    with pytest.raises(DataError, match="single image; pass the folder"):
        interpolate_sequence(single / "000.png", tmp_path / "o7", model, _cfg())
    (tmp_path / "fake.mp4").write_bytes(b"not a video at all")
    with pytest.raises(DataError, match="cannot open .*fake.mp4 as a video"):
        interpolate_sequence(tmp_path / "fake.mp4", tmp_path / "o8", model, _cfg())
    with pytest.raises(DataError, match="the output .* is the input"):
        interpolate_sequence(sizes, sizes, model, _cfg())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(multi=1), "--multi must be an integer >= 2"),
        (dict(scale=3), "--scale: scale must be one of"),
        (dict(batch_size=0), "--batch-size must be an integer >= 1"),
        (dict(ext="gif"), "--ext must be one of"),
        (dict(fps=-1.0), "--fps must be a positive number"),
        (dict(thresholds=SceneThresholds(static_ssim=0.5, cut_ssim=0.6)), "--cut-ssim .* must be below --static-ssim"),
        (dict(thresholds=SceneThresholds(cut_hist=1.5)), r"--cut-hist must be a number in \[0, 1\]"),
        (dict(resume=True, overwrite=True), "contradict"),
    ],
)
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InterpolateConfig(**kwargs).validate()


def test_cli_runs_and_reports_bad_options(frame_folder, tmp_path, capsys):
    from rifelab.cli import main

    out = tmp_path / "cli_out"
    rc = main(["interpolate", str(frame_folder), str(out), "--multi", "2", "--device", "cpu", "--no-progress"])
    assert rc == 0 and len(list_frames(out)) == T
    assert "6 input frames, 5 pairs -> 6 output frames" in capsys.readouterr().out

    assert main(["interpolate", str(frame_folder), str(tmp_path / "x"), "--multi", "1"]) == 2
    assert "--multi must be an integer >= 2" in capsys.readouterr().err
    assert main(["interpolate", str(frame_folder), str(tmp_path / "x"), "--scale", "3"]) == 2
    assert "--scale: scale must be one of" in capsys.readouterr().err
    assert main(["interpolate", str(frame_folder), str(out), "--multi", "2"]) == 2
    assert "is not empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["interpolate", str(frame_folder), str(tmp_path / "x"), "--static-ssim", "2"])
    assert "expected a number in [0, 1] or 'off'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["interpolate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "power of two" in help_text and "--multi 4: the frame at 1/3" in help_text


def test_optimised_engine_passthrough(model, frames, tmp_path):
    """`--dtype` and the other switches of rifelab.engine reach the model the CLI builds; fp32 output unchanged."""
    engine = pytest.importorskip("rifelab.engines.torch_engine")
    import argparse

    from rifelab.interpolate.cli import add_interpolate_parser, load_interpolation_model

    parser = argparse.ArgumentParser()
    add_interpolate_parser(parser.add_subparsers())
    args = parser.parse_args(["interpolate", "in", "out", "--device", "cpu", "--dtype", "bf16"])
    m = load_interpolation_model(args)
    assert isinstance(m, engine.Engine) and m.dtype == torch.bfloat16
    args = parser.parse_args(["interpolate", "in", "out", "--device", "cpu"])
    fp32 = load_interpolation_model(args)
    a = interpolate_sequence(frames[:2], tmp_path / "a", fp32, _cfg(multi=3))
    interpolate_sequence(frames[:2], tmp_path / "b", model, _cfg(multi=3))
    assert a.model_frames == 1
    np.testing.assert_array_equal(_read_all(tmp_path / "a")[1], _read_all(tmp_path / "b")[1])
