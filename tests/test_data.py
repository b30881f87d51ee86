"""Frame readers: clips, images of every mode, numbered folders, benchmark layouts, and their errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rifelab.frames.images import DataError, check_same_size, list_frames, read_image, write_image
from rifelab.frames.clips import clip_info, clip_triplets, detect_layout, load_clip, read_triplet_dataset


def test_load_clip_shapes(carphone):
    assert carphone.shape == (12, 144, 176, 3) and carphone.dtype == np.uint8
    info = clip_info("bikes")
    assert (info["width"], info["height"]) == (640, 272) and abs(info["fps"] - 25) < 0.01
    later = load_clip("carphone", max_frames=2, start=5)
    assert np.array_equal(later, carphone[5:7])


def test_load_clip_errors(tmp_path):
    with pytest.raises(DataError, match="neither a bundled clip"):
        load_clip("no_such_clip")
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(DataError, match="cannot decode video"):
        load_clip(bad)


def test_clip_triplets(carphone):
    tris = list(clip_triplets(carphone, stride=2))
    assert len(tris) == 2  # starts 0 and 4 (step 4), need i+4 < 12
    assert np.array_equal(tris[1].gt, carphone[6]) and np.array_equal(tris[1].frame2, carphone[8])
    assert len(list(clip_triplets(carphone, count=3, step=1))) == 3
    with pytest.raises(DataError, match="no triplet at stride 6"):
        list(clip_triplets(carphone, stride=6))


def test_read_image_modes(tmp_path, carphone):
    rgb = carphone[0]
    gray = rgb[:, :, 1]
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    assert np.array_equal(read_image(tmp_path / "gray.png"), np.repeat(gray[:, :, None], 3, axis=2))
    rgba = np.dstack([rgb, np.full(gray.shape, 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
    assert np.array_equal(read_image(tmp_path / "opaque.png"), rgb)
    rgba[0, 0, 3] = 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    with pytest.raises(DataError, match="real transparency.*[Ff]latten"):
        read_image(tmp_path / "alpha.png")
    g16 = gray.astype(np.uint16) * 257
    Image.fromarray(g16).save(tmp_path / "g16.png")
    assert np.array_equal(read_image(tmp_path / "g16.png")[:, :, 0], gray)


def test_read_image_16bit_rgb(tmp_path, carphone):
    import tifffile

    x = carphone[0].astype(np.uint16)
    rgb16 = (x * 257 + (x < 255) * 100).astype(np.uint16)  # +100/257 rounds back to the same 8-bit value
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16)
    assert np.array_equal(read_image(tmp_path / "rgb16.tif"), carphone[0])


def test_read_image_errors(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="cannot read image .*broken.png.*corrupt"):
        read_image(tmp_path / "broken.png")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="not an image file"):
        read_image(tmp_path / "notes.txt")
    with pytest.raises(DataError, match="image not found"):
        read_image(tmp_path / "missing.png")


def test_list_frames_numeric_order_and_errors(tmp_path, carphone):
    for i in (1, 2, 10, 9, 100):
        write_image(tmp_path / f"frame{i}.png", carphone[0])
    assert [p.stem for p in list_frames(tmp_path)] == ["frame1", "frame2", "frame9", "frame10", "frame100"]
    assert not list(tmp_path.glob("*.tmp*")), "atomic writes leave no temporary files"
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="not images: readme.txt"):
        list_frames(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no image frames"):
        list_frames(empty)
    with pytest.raises(DataError, match="folder not found"):
        list_frames(tmp_path / "nope")


def test_check_same_size(carphone, bikes):
    with pytest.raises(DataError, match="differ in size: 176x144 vs 640x272"):
        check_same_size(carphone[0], bikes[0])


def _write_ucf(root, frames):
    for k in range(2):
        d = root / f"{k}"
        d.mkdir(parents=True)
        for name, f in zip(("frame_00.png", "frame_01_gt.png", "frame_02.png"), frames[k : k + 3]):
            write_image(d / name, f)


def test_ucf101_and_vimeo_layouts(tmp_path, carphone):
    ucf = tmp_path / "ucf"
    _write_ucf(ucf, carphone)
    assert detect_layout(ucf) == "ucf101"
    tris = list(read_triplet_dataset(ucf))
    assert [t.name for t in tris] == ["0", "1"] and np.array_equal(tris[1].gt, carphone[2])
    vimeo = tmp_path / "vimeo"
    d = vimeo / "sequences" / "00001" / "0001"
    d.mkdir(parents=True)
    for i in range(3):
        write_image(d / f"im{i + 1}.png", carphone[i])
    (vimeo / "tri_testlist.txt").write_text("00001/0001\n")
    assert detect_layout(vimeo) == "vimeo90k"
    (tri,) = read_triplet_dataset(vimeo)
    assert np.array_equal(tri.frame2, carphone[2])


def test_triplet_with_mismatched_sizes(tmp_path, carphone, bikes):
    d = tmp_path / "ucf" / "0"
    d.mkdir(parents=True)
    write_image(d / "frame_00.png", carphone[0])
    write_image(d / "frame_01_gt.png", carphone[1])
    write_image(d / "frame_02.png", bikes[0])
    with pytest.raises(DataError, match="triplet 0: outer frames differ in size"):
        list(read_triplet_dataset(tmp_path / "ucf"))


def test_unrecognised_layout(tmp_path):
    with pytest.raises(DataError, match="not a recognised triplet dataset"):
        detect_layout(tmp_path)


def test_middlebury_layout(middlebury):
    assert detect_layout(middlebury) == "middlebury"
    tris = list(read_triplet_dataset(middlebury))
    assert len(tris) == 12 and tris[0].frame0.shape == (480, 640, 3)


# ----------------------------------------------------------------------------- image files a careless user gives (issue 14)


def test_cmyk_jpeg_is_called_cmyk(tmp_path, carphone):
    Image.fromarray(carphone[0]).convert("CMYK").save(tmp_path / "print.jpg")  # was "RGBA ... real transparency"
    with pytest.raises(DataError, match=r"print.jpg: CMYK image .*Convert it to RGB"):
        read_image(tmp_path / "print.jpg")


def test_empty_png_says_empty(tmp_path):
    (tmp_path / "00000003.png").write_bytes(b"")  # was a hint to `pip install imageio[opencv]`
    with pytest.raises(DataError, match=r"00000003.png is empty \(0 bytes\)") as err:
        read_image(tmp_path / "00000003.png")
    assert "pip install" not in str(err.value)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match="cannot read image .*broken.png.*corrupt") as err:
        read_image(tmp_path / "broken.png")
    assert "pip install" not in str(err.value)


@pytest.mark.parametrize("suffix", ["webp", "png"])
def test_animated_image_is_refused(tmp_path, carphone, suffix):
    frames = [Image.fromarray(f) for f in carphone[:3]]
    frames[0].save(tmp_path / f"anim.{suffix}", save_all=True, append_images=frames[1:], duration=40, lossless=True)
    with pytest.raises(DataError, match=rf"anim.{suffix}: holds 3 pages/frames .*one image per file"):
        read_image(tmp_path / f"anim.{suffix}")  # webp: was its first frame, silently


def test_same_number_twice_is_ambiguous(tmp_path, carphone):
    write_image(tmp_path / "1.png", carphone[0])
    write_image(tmp_path / "01.png", carphone[1])
    write_image(tmp_path / "2.png", carphone[2])
    with pytest.raises(DataError, match=r"(01.png and 1.png|1.png and 01.png) carry the same frame number.*ambiguous"):
        list_frames(tmp_path)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, carphone, orientation):
    """Documented: frames come out as an image viewer shows them (PIL's exif_transpose), not as stored."""
    from PIL import ImageOps

    im = Image.fromarray(carphone[0][:, :150])  # not square: a rotation changes the shape
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(tmp_path / "f.png", exif=exif)
    im.save(tmp_path / "f.jpg", exif=exif, quality=95)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "f.png")).convert("RGB"))
    got = read_image(tmp_path / "f.png")
    np.testing.assert_array_equal(got, expected)
    assert got.shape == ((150, 144, 3) if orientation >= 5 else (144, 150, 3))
    jpg = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "f.jpg")).convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "f.jpg"), jpg)
