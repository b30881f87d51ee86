"""Figures and tables as a reader should see them in every notebook front end (JupyterLab, Colab, papermill, report).

Tables: floats with four significant digits (whole numbers without decimals: 377, not 377.0000), and an empty table
as one sentence instead of a bare header.

IPython turns a displayed `matplotlib.figure.Figure` into an image only once the inline backend has registered its
PNG printer, which happens when pyplot first draws. Figures built without pyplot (the viewer's, thread-safe) and
displayed before any pyplot figure exist would otherwise show as the text `<Figure size ... with N Axes>`.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

__all__ = ["figures_as_png", "figure_png", "readable_number", "EMPTY_TABLE"]

EMPTY_TABLE = "Nothing to list: this table is empty in this run."


def readable_number(x: float) -> str:
    """A float with meaningful digits: whole numbers without decimals, else four significant digits, no e-notation
    above 1000."""
    if not math.isfinite(x):
        return str(x)
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    if abs(x) >= 1000:
        return f"{x:.0f}"
    return f"{x:.4g}" if abs(x) >= 1e-3 else f"{x:.2e}"


def _table_html(df: pd.DataFrame) -> str:
    return f"<p><em>{EMPTY_TABLE}</em></p>" if df.empty else df._repr_html_()


def _table_text(df: pd.DataFrame, printer: Any, cycle: bool) -> None:
    printer.text(EMPTY_TABLE if df.empty else repr(df))


def figure_png(fig: Any) -> bytes:
    """The figure as PNG bytes, cropped to its content (what the inline backend shows)."""
    from IPython.core.pylabtools import print_figure

    return print_figure(fig, "png", bbox_inches="tight")


def figures_as_png() -> bool:
    """Register the PNG printer for every matplotlib Figure and the table printers in the running IPython shell (and
    pandas' float format); False outside IPython.

    Idempotent and cheap: every study run calls it, so a figure it returns displays as an image wherever it is shown.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the notebooks extra
        return False
    shell = get_ipython()
    if shell is None:
        return False
    formatters = shell.display_formatter.formatters
    formatters["image/png"].for_type(Figure, figure_png)
    formatters["text/html"].for_type(pd.DataFrame, _table_html)
    formatters["text/plain"].for_type(pd.DataFrame, _table_text)
    pd.set_option("display.float_format", readable_number)
    return True
