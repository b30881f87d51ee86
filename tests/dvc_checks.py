"""What the tests check of dvc.yaml: its stages and the plot files a study run writes for them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from rifelab.measure.benchmark import pixel_count

ROOT = Path(__file__).resolve().parent.parent
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
CUSTOM_TEMPLATES = ROOT / ".dvc" / "plots"  # where DVC looks up a `template:` name first
LABEL_FITS = 32  # characters of an 11 px axis label that fit vega's default labelLimit (180 px)


def stage(name: str) -> dict:
    """The `do:` body of a study's foreach stage."""
    return DVC["stages"][name]["do"]


def custom_template(name: str) -> dict | None:
    """The repository's own DVC plot template of that name (.dvc/plots/<name>.json), None for DVC's built-ins."""
    path = CUSTOM_TEMPLATES / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def assert_plots_readable(study: str, base: Path) -> None:
    """Every plot the stage declares exists with its x and y columns; a bar chart has one bar per category and
    shows long category labels whole; a resolution axis lists resolutions by pixel count (rows in that order, drawn in data order, not as text)."""
    for plot in stage(study)["plots"]:
        (path, props), = plot.items()
        df = pd.read_csv(path.replace("results/${key}", str(base)))
        assert {props["x"], props["y"]} <= set(df.columns) and props["title"], path
        if props["template"].startswith("bar_horizontal"):  # DVC: x quantitative, y the categories
            assert pd.api.types.is_numeric_dtype(df[props["x"]]) and df[props["y"]].is_unique, path
            if df[props["y"]].astype(str).str.len().max() > LABEL_FITS:  # else vega cuts it to "early stop pl..."
                template = custom_template(props["template"]) or {}
                assert template.get("encoding", {}).get("y", {}).get("axis", {}).get("labelLimit") == 0, \
                    f"{path}: labels longer than {LABEL_FITS} characters need a template with labelLimit 0"
        elif props["template"] != "scatter":  # a line: one y per x (a scatter may share x: same speedup, other PSNR)
            assert df[props["x"]].is_unique, path
        if props["y"] == "resolution":
            pixels = [pixel_count(r) for r in df["resolution"]]
            assert pixels == sorted(pixels), f"{path}: resolutions not in pixel-count order: {list(df.resolution)}"
            template = custom_template(props["template"])
            assert template is not None and template["encoding"]["y"]["sort"] is None, \
                f"{path}: template {props['template']!r} re-sorts the resolutions (as text or by value)"
