"""The RIFE v4 network: warp and padding by hand, the whole network against the official RIFE 4.0 code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rifelab.frames.clips import clip_triplets, read_triplet_dataset
from rifelab.frames.images import to_tensor, to_uint8
from rifelab.measure.metrics import psnr
from rifelab.rife.checkpoints import CheckpointError, load_rife, load_state_dict
from rifelab.rife.network import IFNet, pad_to_multiple, padding_multiple, timestep_plane, warp
from rifelab.rife.model import RIFE


def test_warp_zero_flow_is_identity():
    img = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)
    assert torch.allclose(warp(img, torch.zeros(2, 2, 5, 7)), img, atol=1e-5)


def test_warp_integer_shift_samples_neighbour_and_clamps_at_border():
    # a horizontal ramp: pixel (y, x) holds x. A flow of +1 px in x samples the right neighbour.
    img = torch.arange(6, dtype=torch.float32).repeat(4, 1)[None, None]  # (1,1,4,6)
    flow = torch.zeros(1, 2, 4, 6)
    flow[:, 0] = 1.0
    out = warp(img, flow)[0, 0]
    assert torch.allclose(out[:, :5], img[0, 0, :, 1:], atol=1e-5)
    assert torch.allclose(out[:, 5], torch.full((4,), 5.0), atol=1e-5)  # border padding repeats the edge
    flow[:, 0] = 0.5  # half a pixel: bilinear average of neighbours
    assert torch.allclose(warp(img, flow)[0, 0, :, :5], img[0, 0, :, :5] + 0.5, atol=1e-5)
    flow = torch.zeros(1, 2, 4, 6)
    flow[:, 1] = -1.0  # y flow: row 0 clamps, other rows take the row above (all rows equal here)
    assert torch.allclose(warp(img, flow), img, atol=1e-5)


def test_warp_half_precision_runs_in_float32():
    img = torch.rand(1, 3, 16, 16)
    flow = torch.rand(1, 2, 16, 16) * 3
    ref = warp(img, flow)
    half = warp(img.bfloat16(), flow.bfloat16())
    assert half.dtype == torch.bfloat16
    assert (half.float() - ref).abs().max() < 0.02


def test_padding_to_multiple_and_crop():
    assert [padding_multiple(s) for s in (0.25, 0.5, 1.0, 2.0, 4.0)] == [256, 128, 64, 32, 16]
    x = torch.rand(1, 3, 100, 150)
    p = pad_to_multiple(x, 64)
    assert p.shape == (1, 3, 128, 192)
    assert torch.equal(p[:, :, :100, :150], x)
    assert p[:, :, 100:].abs().sum() == 0 and p[:, :, :, 150:].abs().sum() == 0
    assert pad_to_multiple(p, 64) is p


def test_timestep_plane_and_errors():
    like = torch.zeros(1)
    t = timestep_plane(torch.tensor([0.25, 0.75]), 2, 3, 4, like)
    assert t.shape == (2, 1, 3, 4) and t[0].unique().item() == 0.25 and t[1].unique().item() == 0.75
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        timestep_plane(1.5, 1, 2, 2, like)
    with pytest.raises(ValueError, match="give 1 or N"):
        timestep_plane(torch.tensor([0.1, 0.2, 0.3]), 2, 2, 2, like)


def test_interpolate_rejects_bad_arguments(rife):
    a = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="scale must be one of"):
        rife.interpolate(a, a, 0.5, scale=3)
    with pytest.raises(ValueError, match="differ in shape"):
        rife.interpolate(a, torch.rand(1, 3, 32, 48))
    with pytest.raises(TypeError, match="divide 0-255 frames by 255"):
        rife.interpolate((a * 255).short(), (a * 255).short())
    with pytest.raises(TypeError, match="differ in dtype"):
        rife.interpolate(a, (a * 255).byte())
    with pytest.raises(ValueError, match=r"\(N,3,H,W\)"):
        rife.interpolate(torch.rand(1, 4, 32, 32), torch.rand(1, 4, 32, 32))


def test_interpolate_any_size_and_per_sample_timesteps(rife, carphone):
    frames = to_tensor(carphone[[0, 2, 4, 6]])[:, :, :67, :93]  # odd size, real frames
    a, b = frames[:2], frames[2:]
    out = rife.interpolate(a, b, torch.tensor([0.3, 0.8]))
    assert out.shape == a.shape
    assert out.min() >= 0 and out.max() <= 1
    one = rife.interpolate(a[1:], b[1:], 0.8)
    assert torch.allclose(out[1:], one, atol=1e-5)
    assert not torch.allclose(out[:1], rife.interpolate(a[:1], b[:1], 0.8), atol=1e-3)


@pytest.fixture(scope="module")
def official(rife):
    from official_rife import official_ifnet_module

    try:
        mod = official_ifnet_module()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"official RIFE 4.0 code could not be fetched (offline?): {exc}")
    net = mod.IFNet(torch.device("cpu"))
    sd = {k.removeprefix("module."): v for k, v in torch.load(rife.info.path, map_location="cpu", weights_only=True).items()}
    net.load_state_dict(sd, strict=False)
    return net.eval()


def _official_frame(net, img0, img1, t, scale, ensemble=False):
    sl = [8 / scale, 4 / scale, 2 / scale, 1 / scale]
    with torch.no_grad():
        _, _, merged = net(torch.cat((img0, img1), 1), t, sl, ensemble=ensemble)
    return merged[3]


@pytest.mark.parametrize("t,scale,ensemble", [(0.5, 1.0, False), (0.3, 1.0, False), (0.77, 0.5, False), (0.5, 2.0, True)])
def test_matches_official_rife40_on_real_frames(rife, official, middlebury, t, scale, ensemble):
    tri = next(read_triplet_dataset(middlebury, limit=1))  # 640x480 real frames, not used anywhere for tuning
    img0, img1 = to_tensor(tri.frame0), to_tensor(tri.frame2)
    mult = padding_multiple(scale)
    p0, p1 = pad_to_multiple(img0, mult), pad_to_multiple(img1, mult)
    ref = _official_frame(official, p0, p1, t, scale, ensemble)[:, :, :480, :640]
    ours = rife.interpolate(img0, img1, t, scale=scale, ensemble=ensemble)
    assert (ours - ref).abs().max().item() == 0.0  # same operations in the same order: bit for bit


def test_matches_official_on_clip_frames(rife, official, bikes):
    img0, img1 = to_tensor(bikes[3]), to_tensor(bikes[5])
    p0, p1 = pad_to_multiple(img0, 64), pad_to_multiple(img1, 64)
    ref = _official_frame(official, p0, p1, 0.62, 1.0)[:, :, :272, :640]
    assert (rife.interpolate(img0, img1, 0.62) - ref).abs().max().item() == 0.0


def test_large_motion_retry_matches_official(rife, official, bikes):
    """Block 1 asking for > 32 px both ways makes 4.0 restart at doubled scales, as the official code does (a real
    frame and its copy shifted by 80 px: without the retry the output differs by 0.45)."""
    a = to_tensor(bikes[0])[:, :, :256, :512]
    b = torch.roll(a, shifts=(40, 80), dims=(2, 3))
    ref = _official_frame(official, a, b, 0.5, 1.0)
    assert (rife.interpolate(a, b, 0.5) - ref).abs().max().item() == 0.0


def test_bikes_middle_frame_beats_neighbour_average(rife, bikes):
    gains = []
    for tri in clip_triplets(bikes, count=5):
        out = rife.interpolate(to_tensor(tri.frame0), to_tensor(tri.frame2))
        avg = (tri.frame0.astype(np.float64) + tri.frame2) / 2 / 255
        gains.append(psnr(out, tri.gt)[0] - psnr(avg, tri.gt)[0])
    assert np.mean(gains) > 3.0, gains


# ----------------------------------------------------------------------------- checkpoints


def test_bundled_checkpoint_skips_unused_groups(rife):
    assert rife.variant == "4.0"
    assert rife.info.skipped_groups == {"block_tea": 32, "contextnet": 24, "unet": 38}
    assert rife.info.loaded_keys == len(rife.net.state_dict())


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.pkl"):
        load_rife(tmp_path / "nope.pkl")


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "flownet.pkl"
    bad.write_bytes(b"not a checkpoint" * 100)
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*flownet.pkl.*corrupt"):
        load_rife(bad)


def test_truncated_checkpoint(tmp_path, rife):
    data = open(rife.info.path, "rb").read()
    bad = tmp_path / "truncated.pkl"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_rife(bad)


def test_wrong_keys_and_shapes(tmp_path, rife):
    sd = {f"module.{k}": v for k, v in rife.net.state_dict().items()}
    missing = dict(sd)
    del missing["module.block2.convblock.3.0.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing.pth.*missing keys \(1\): block2.convblock.3.0.weight"):
        load_rife(tmp_path / "missing.pth")
    shaped = dict(sd)
    shaped["module.block1.conv0.0.0.bias"] = torch.zeros(3)
    torch.save(shaped, tmp_path / "shaped.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatches \(1\): block1.conv0.0.0.bias \(3,\) != \(64,\)"):
        load_rife(tmp_path / "shaped.pth")
    extra = dict(sd)
    extra["module.head.weight"] = torch.zeros(1)
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): head.weight"):
        load_rife(tmp_path / "extra.pth")
    torch.save({"foo.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a RIFE 4.x flow network"):
        load_rife(tmp_path / "other.pth")


class Thing:
    """An arbitrary pickled object: weights_only=True must refuse it."""


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    torch.save({"block0.x": Thing()}, tmp_path / "obj.pth")
    with pytest.raises(CheckpointError, match=r"obj.pth holds pickled Python objects \(test_models.Thing\)"):
        load_rife(tmp_path / "obj.pth")  # weights_only=True refuses arbitrary objects


def test_v46_checkpoint_roundtrip(tmp_path, carphone):
    """No v4.6 weights exist on these machines: a randomly initialised v4.6 net must save and load back exactly."""
    torch.manual_seed(0)
    net = IFNet("4.6")
    sd = net.state_dict()
    assert sd["block0.lastconv.0.weight"].shape == (192, 24, 4, 4)
    assert "block3.convblock.7.beta" in sd and "block3.convblock.7.conv.weight" in sd
    assert not any(k.endswith(".1.weight") for k in sd if "conv0" in k)  # LeakyReLU: no activation params
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "rife46.pth")
    model = load_rife(tmp_path / "rife46.pth")
    assert model.variant == "4.6"
    a, b = to_tensor(carphone[0]), to_tensor(carphone[2])
    direct = RIFE(net.eval()).interpolate(a, b)
    assert torch.equal(model.interpolate(a, b), direct)
    assert direct.shape == a.shape


def test_load_state_dict_reports_variant_mismatch(tmp_path):
    torch.save(IFNet("4.6").state_dict(), tmp_path / "rife46.pth")
    with pytest.raises(CheckpointError, match="does not fit the RIFE 4.0 flow network"):
        load_state_dict(IFNet("4.0"), tmp_path / "rife46.pth")


def test_uint8_roundtrip_helpers(carphone):
    t = to_tensor(carphone[:2])
    assert t.shape == (2, 3, 144, 176) and t.dtype == torch.float32
    assert np.array_equal(to_uint8(t), carphone[:2])


# ----------------------------------------------------------------------------- bad frames and checkpoints (issue 14)


def test_uint8_tensors_and_arrays_are_accepted_as_0_255(rife, carphone):
    """uint8 frames are divided by 255 for the caller: the same output as float frames in [0, 1]."""
    a, b = carphone[0], carphone[2]
    ref = rife.interpolate(to_tensor(a), to_tensor(b))
    as_tensor = rife.interpolate(torch.from_numpy(a).permute(2, 0, 1)[None], torch.from_numpy(b).permute(2, 0, 1)[None])
    as_array = rife.interpolate(a, b)  # numpy (H,W,3) as the readers return it
    assert as_tensor.dtype == torch.float32 and as_array.shape == ref.shape
    assert torch.equal(as_tensor, ref) and torch.equal(as_array, ref)
    with pytest.raises(TypeError, match="numpy frames must be uint8"):
        rife.interpolate(a.astype(np.float32), b.astype(np.float32))


def test_float_frames_in_0_255_are_refused(rife, carphone):
    """Floats in 0-255 gave a wrong frame with no error; now refused, naming the likely cause."""
    a, b = to_tensor(carphone[0]) * 255, to_tensor(carphone[2]) * 255
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\], got values from .* to 255; .*0-255 values: divide by"):
        rife.interpolate(a, b)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*clamp or rescale"):
        rife.interpolate(a / 255 - 0.5, b / 255)
    nan = to_tensor(carphone[0]).clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        rife.interpolate(to_tensor(carphone[2]), nan)
    # rounding overshoot of frames made by the model (recursive mode feeds them back) is still accepted
    out = rife.interpolate((to_tensor(carphone[0]) * 1.01).half(), to_tensor(carphone[2]).half())
    assert out.dtype == torch.float16


def test_empty_checkpoint_says_so(tmp_path):
    (tmp_path / "flownet.pkl").write_bytes(b"")  # gave IndexError while building the message
    with pytest.raises(CheckpointError, match=r"flownet.pkl is empty \(0 bytes\).*download it again"):
        load_rife(tmp_path / "flownet.pkl")


def test_text_checkpoint_says_what_the_file_is(tmp_path):
    (tmp_path / "flownet.pkl").write_text("<!DOCTYPE html><html>login required</html>\n")  # gave KeyError: 60
    with pytest.raises(CheckpointError, match=r"flownet.pkl \(an HTML/XML page .*not a torch file.*official RIFE 4.x"):
        load_rife(tmp_path / "flownet.pkl")
    (tmp_path / "notes.pth").write_text("ifnet weights go here\n")
    with pytest.raises(CheckpointError, match=r"a text file \(starting 'ifnet weights go here'\)"):
        load_rife(tmp_path / "notes.pth")


def test_pickled_module_checkpoint_gives_whole_message(tmp_path):
    torch.save(IFNet("4.0"), tmp_path / "model.pth")  # torch.save(model) instead of its state_dict
    with pytest.raises(CheckpointError) as err:
        load_rife(tmp_path / "model.pth")
    msg = str(err.value)  # was torch's message cut at 200 characters, mid-sentence
    assert "model.pth holds a whole pickled network object (rifelab.rife.network.IFNet)" in msg
    assert "torch.save(model.state_dict())" in msg and msg.endswith("else download the official file")


def test_malicious_pickle_refusal_keeps_torchs_warning(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"block0.x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError) as err:
        load_rife(tmp_path / "evil.pth")
    msg = str(err.value)
    assert "calls posix.system when loaded" in msg or "calls nt.system when loaded" in msg
    assert "can result in arbitrary code execution" in msg and "Do not load it with weights_only=False" in msg
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_load(tmp_path, rife, bad):
    sd = {k: v.clone() for k, v in rife.net.state_dict().items()}
    sd["block2.convblock.3.0.weight"][0, 0, 0, 0] = bad
    torch.save(sd, tmp_path / "diverged.pth")
    with pytest.raises(CheckpointError, match=r"diverged.pth has non-finite weights .* in 1 of .*block2.convblock.3.0"):
        load_rife(tmp_path / "diverged.pth")
