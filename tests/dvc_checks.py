"""What the tests check of dvc.yaml: its stages and the plot files a study run writes for them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def stage(name: str) -> dict:
    """The `do:` body of a study's foreach stage."""
    return DVC["stages"][name]["do"]


def assert_plots_readable(study: str, base: Path) -> None:
    """Every plot the stage declares exists with its x and y columns; a bar chart has one bar per category."""
    for plot in stage(study)["plots"]:
        (path, props), = plot.items()
        df = pd.read_csv(path.replace("results/${key}", str(base)))
        assert {props["x"], props["y"]} <= set(df.columns) and props["title"], path
        if props["template"].startswith("bar_horizontal"):  # DVC: x quantitative, y the categories
            assert pd.api.types.is_numeric_dtype(df[props["x"]]) and df[props["y"]].is_unique, path
        else:
            assert df[props["x"]].is_unique, path
