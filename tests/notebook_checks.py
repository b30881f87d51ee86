"""Checks over executed notebooks, shared by the studies' smoke runs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

FIGURE_TEXT = re.compile(r"<Figure size [^>]*>")


def assert_figures_render(path: str | os.PathLike, min_images: int = 1) -> int:
    """Every displayed figure of an executed notebook is an image/png output; no output shows `<Figure size` as text.

    A figure output carries its text form beside the image (every display does); text alone means the front end had
    no PNG printer for it and the reader sees the text. Returns the number of images.
    """
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    images, as_text = 0, []
    for k, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            images += "image/png" in data
            text = "".join(out.get("text", "")) + "".join(data.get("text/html", "")) + (
                "" if "image/png" in data else "".join(data.get("text/plain", "")))
            as_text += [f"cell {k}: {m}" for m in FIGURE_TEXT.findall(text)]
    assert not as_text, f"{Path(path).name}: figures shown as text, not images: {as_text}"
    assert images >= min_images, f"{Path(path).name}: {images} image outputs, expected at least {min_images}"
    return images
