"""Figures shown as PNG images in every notebook front end (JupyterLab, Colab, papermill, the HTML report).

IPython turns a displayed `matplotlib.figure.Figure` into an image only once the inline backend has registered its
PNG printer, which happens when pyplot first draws. Figures built without pyplot (the viewer's, thread-safe) and
displayed before any pyplot figure exist would otherwise show as the text `<Figure size ... with N Axes>`.
"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

__all__ = ["figures_as_png", "figure_png"]


def figure_png(fig: Any) -> bytes:
    """The figure as PNG bytes, cropped to its content (what the inline backend shows)."""
    from IPython.core.pylabtools import print_figure

    return print_figure(fig, "png", bbox_inches="tight")


def figures_as_png() -> bool:
    """Register the PNG printer for every matplotlib Figure in the running IPython shell; False outside IPython.

    Idempotent and cheap: every study run calls it, so a figure it returns displays as an image wherever it is shown.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the notebooks extra
        return False
    shell = get_ipython()
    if shell is None:
        return False
    shell.display_formatter.formatters["image/png"].for_type(Figure, figure_png)
    return True
