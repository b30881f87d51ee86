"""Frame-rate retiming (--target-fps / --fps-ratio) and RGBA input, on real carphone frames and the RIFE 4.0 weights."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from rifelab.cli import main
from rifelab.frames.images import (
    DataError,
    list_frames,
    read_image,
    read_image_rgba,
    to_tensor,
    to_uint8,
    write_image,
)
from rifelab.frames.clips import load_clip
from rifelab.interpolate.sources import ArraySource
from rifelab.interpolate.schedule import InterpolateConfig, parse_ratio, retime_count, retime_positions
from rifelab.interpolate.run import interpolate_sequence
from rifelab.frames.scenes import SceneThresholds
from rifelab.rife.checkpoints import load_rife
from rifelab.rife.network import pad_to_multiple, warp

OFF = SceneThresholds(None, None, None)  # every pair interpolated, so each frame is checked against the model


@pytest.fixture(scope="module")
def model():
    return load_rife(device="cpu")


@pytest.fixture(scope="module")
def frames():
    return load_clip("carphone", max_frames=11)


def _cfg(**kw) -> InterpolateConfig:
    kw.setdefault("progress", False)
    kw.setdefault("thresholds", OFF)
    return InterpolateConfig(**kw)


def _direct(model, a, b, t) -> np.ndarray:
    return to_uint8(model.interpolate(to_tensor(a), to_tensor(b), torch.tensor([float(t)])))[0]


def _video_timing(path: Path) -> tuple[int, Fraction, float, list[float]]:
    import av

    with av.open(str(path)) as c:
        st = c.streams.video[0]
        times = [float(f.time) for f in c.decode(video=0)]
        duration = float(st.duration * st.time_base) if st.duration else c.duration / 1e6  # mkv: container's
        return len(times), Fraction(st.average_rate), duration, times


@pytest.mark.parametrize("fps_in, fps_out, n_in, n_out", [(24, 60, 9, 21), (25, 30, 11, 13)])
def test_retiming_counts_positions_and_frames(model, frames, tmp_path, fps_in, fps_out, n_in, n_out):
    ratio = Fraction(fps_out, fps_in)
    assert retime_count(n_in, ratio) == n_out
    pos = retime_positions(n_in, ratio)
    assert pos[0] == 0 and pos[-1] == n_in - 1  # first and last input frames are kept, nothing past them
    assert all(b - a == 1 / ratio for a, b in zip(pos, pos[1:]))  # evenly spaced: no duplicated or dropped frame

    src = ArraySource(frames[:n_in], fps=fps_in)
    s = interpolate_sequence(src, tmp_path / "out", model, _cfg(target_fps=fps_out, batch_size=1))  # one frame per call, as _direct
    out = [read_image(p) for p in list_frames(tmp_path / "out")]
    assert len(out) == s.output_frames == n_out
    for k, p in enumerate(pos):
        i, t = int(p), p - int(p)
        if t == 0:
            np.testing.assert_array_equal(out[k], frames[i], err_msg=f"frame {k} falls on input {i}: copied")
        else:
            np.testing.assert_array_equal(out[k], _direct(model, frames[i], frames[i + 1], t), err_msg=f"frame {k}")
    assert s.original_frames == sum(p.denominator == 1 for p in pos) and s.model_frames == n_out - s.original_frames

    # the same frames from --fps-ratio, and as a video with the right rate, duration and timestamps
    ratio_text = f"{fps_out // np.gcd(fps_in, fps_out)}/{fps_in // np.gcd(fps_in, fps_out)}"
    s2 = interpolate_sequence(src, tmp_path / "out.mp4", model, _cfg(fps_ratio=ratio_text, lossless=True))
    n, rate, duration, times = _video_timing(tmp_path / "out.mp4")
    assert (n, rate) == (n_out, fps_out) and s2.output_fps == fps_out
    assert duration == pytest.approx(n_out / fps_out, abs=1e-9)
    assert times == pytest.approx([k / fps_out for k in range(n_out)], abs=1e-9)


def test_retiming_from_a_video_and_the_cli(frames, tmp_path, capsys):
    import av

    clip = tmp_path / "in25.mp4"
    with av.open(str(clip), "w") as c:
        st = c.add_stream("libx264rgb", rate=25)
        st.width, st.height, st.pix_fmt, st.options = 176, 144, "rgb24", {"crf": "0"}
        for f in frames:
            for p in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    out = tmp_path / "out30.mkv"
    assert main(["interpolate", str(clip), str(out), "--target-fps", "30", "--no-progress", "--device", "cpu"]) == 0
    n, rate, duration, _ = _video_timing(out)
    assert (n, rate) == (13, 30) and duration == pytest.approx(13 / 30, abs=1e-3)
    assert "video frame rate 30.000 fps" in capsys.readouterr().out
    assert main(["interpolate", str(clip), str(tmp_path / "x"), "--target-fps", "30", "--fps-ratio", "6/5"]) == 2
    assert "pass one" in capsys.readouterr().err


def test_retiming_resume_after_interruption_is_identical(model, frames, tmp_path):
    cfg = dict(fps_ratio="5/2", batch_size=4, thresholds=SceneThresholds())  # default cut/static decisions on
    full = interpolate_sequence(ArraySource(frames[:9], fps=24), tmp_path / "full", model, _cfg(**cfg))

    class Killed(Exception):
        pass

    def kill(index: int, kind: str) -> None:
        if index == 9:
            raise Killed

    with pytest.raises(Killed):
        interpolate_sequence(ArraySource(frames[:9], fps=24), tmp_path / "part", model, _cfg(**cfg), on_frame=kill)
    s = interpolate_sequence(ArraySource(frames[:9], fps=24), tmp_path / "part", model, _cfg(**cfg, resume=True))
    assert s.kept_frames > 0 and s.model_calls < full.model_calls
    names = [p.name for p in list_frames(tmp_path / "full")]
    assert names == [p.name for p in list_frames(tmp_path / "part")] and len(names) == 21
    for n in names:
        assert (tmp_path / "part" / n).read_bytes() == (tmp_path / "full" / n).read_bytes(), n
    with pytest.raises(DataError, match="other settings"):  # a different ratio cannot resume this folder
        interpolate_sequence(ArraySource(frames[:9], fps=24), tmp_path / "part", model,
                             _cfg(fps_ratio="6/5", resume=True))


@pytest.mark.parametrize("kwargs, message", [
    (dict(target_fps=60, fps_ratio="5/2"), "pass one"),
    (dict(fps_ratio="0"), "--fps-ratio must be a positive"),
    (dict(fps_ratio="fast"), "--fps-ratio must be a positive"),
    (dict(fps_ratio=float("inf")), "--fps-ratio must be a positive"),
    (dict(target_fps=-3.0), "--target-fps must be a positive"),
    (dict(fps_ratio="5/2", recursive=True), "--recursive does not apply"),
])
def test_bad_retiming_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _cfg(**kwargs).validate()
    assert parse_ratio("5/2") == Fraction(5, 2) and parse_ratio(1.2) == Fraction(6, 5)


# ----------------------------------------------------------------------------- alpha


def _rgba(frames: np.ndarray) -> np.ndarray:
    """Carphone frames with a moving soft disc as alpha (transparent outside, opaque inside)."""
    h, w = frames.shape[1:3]
    yy, xx = np.mgrid[:h, :w]
    out = []
    for i, f in enumerate(frames):
        d = np.sqrt((xx - 50 - 10 * i) ** 2 + (yy - 70) ** 2)
        a = np.clip(255 * (45 - d) / 10, 0, 255).round().astype(np.uint8)
        out.append(np.concatenate([f, a[..., None]], axis=2))
    return np.stack(out)


def test_rgba_folder_gives_rgba_output_with_alpha_from_the_same_flow(model, frames, tmp_path):
    rgba = _rgba(frames[:4])
    src = tmp_path / "rgba"
    src.mkdir()
    for i, f in enumerate(rgba):
        write_image(src / f"{i:03d}.png", f)
    s = interpolate_sequence(src, tmp_path / "out", model, _cfg(multi=3))
    out = [read_image_rgba(p) for p in list_frames(tmp_path / "out")]
    assert len(out) == 7 and s.model_frames == 3 and all(o.shape == (144, 176, 4) for o in out)
    for i in range(4):
        np.testing.assert_array_equal(out[2 * i], rgba[i])  # originals exact, alpha included
    rgb_run = interpolate_sequence(frames[:4], tmp_path / "rgb", model, _cfg(multi=3))
    assert rgb_run.model_frames == 3
    rgb = [read_image(p) for p in list_frames(tmp_path / "rgb")]
    for k in (1, 3, 5):
        np.testing.assert_array_equal(out[k][..., :3], rgb[k])  # colour exactly as for the RGB frames
        # alpha: warped with the network's own flow and blended with its own mask, computed here by hand
        a, b = to_tensor(rgba[k // 2][..., :3]), to_tensor(rgba[k // 2 + 1][..., :3])
        p0, p1 = pad_to_multiple(a, 64), pad_to_multiple(b, 64)
        t = torch.full((1, 1) + p0.shape[-2:], 0.5)
        with torch.inference_mode():
            _, flow, mask = model.net.forward_all(p0, p1, t, [8, 4, 2, 1])
            alpha = [pad_to_multiple(torch.from_numpy(rgba[j][..., 3]).float()[None, None] / 255, 64)
                     for j in (k // 2, k // 2 + 1)]
            m = torch.sigmoid(mask)
            want = warp(alpha[0], flow[:, :2]) * m + warp(alpha[1], flow[:, 2:4]) * (1 - m)
        want8 = to_uint8(want[:, :, :144, :176])[0][..., 0]
        assert np.abs(out[k][..., 3].astype(int) - want8.astype(int)).max() <= 1
        # and it is neither alpha of one end nor a plain average: the disc moved with the flow
        plain = ((rgba[k // 2][..., 3].astype(float) + rgba[k // 2 + 1][..., 3]) / 2).round()
        assert np.abs(out[k][..., 3] - plain).max() > 20
    # retiming keeps alpha too
    s = interpolate_sequence(src, tmp_path / "retimed", model, _cfg(fps_ratio="5/2"))
    rt = [read_image_rgba(p) for p in list_frames(tmp_path / "retimed")]
    assert len(rt) == 8 and rt[5].shape[-1] == 4
    np.testing.assert_array_equal(rt[5], rgba[2])


def test_rgba_refused_where_it_cannot_be_stored(model, frames, tmp_path):
    rgba = _rgba(frames[:3])
    with pytest.raises(DataError, match="alpha channel.*folder"):
        interpolate_sequence(rgba, tmp_path / "o.mp4", model, _cfg())
    with pytest.raises(DataError, match="jpg cannot store"):
        interpolate_sequence(rgba, tmp_path / "o", model, _cfg(ext="jpg"))


def test_interpolate_flow_matches_interpolate_bit_for_bit(model, frames):
    a, b = to_tensor(frames[:2]), to_tensor(frames[1:3])
    t = torch.tensor([0.3, 0.7])
    frame, flow, mask, extra = model.interpolate_flow(a, b, t, 1.0)
    assert torch.equal(frame, model.interpolate(a, b, t, 1.0)) and extra is None
    assert flow.shape == (2, 4, 144, 176) and mask.shape == (2, 1, 144, 176)
    u0, u1 = (a * 255).round().to(torch.uint8), (b * 255).round().to(torch.uint8)
    frame8 = model.interpolate_flow(u0, u1, t, 1.0)[0]  # uint8 frames in, float32 [0, 1] out, as interpolate
    assert frame8.dtype == torch.float32 and torch.equal(frame8, model.interpolate(u0, u1, t, 1.0))
    with pytest.raises(ValueError, match="RGBA"):
        model.interpolate_rgba(a, b)
