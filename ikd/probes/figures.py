"""Saving the figures of `ikd analyze`: the file's suffix picks the format, sizes are in inches (a paper
column is about 3.3 in wide), the resolution of PNG files is --dpi."""

from __future__ import annotations

import os
from pathlib import Path

from ikd.errors import IkdError

FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
COLUMN_WIDTH = 3.3  # inches: one column of a two-column paper
DEFAULT_DPI = 300


def figure_format(path: str | os.PathLike) -> str:
    """The format a figure path asks for by its suffix; an IkdError for any other suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise IkdError(f"{path}: unknown figure format {suffix or '(no suffix)'}; name the file .png, .pdf or .svg")
    return FORMATS[suffix]


def check_size(width: float | None, dpi: int) -> None:
    if width is not None and not 0.5 <= width <= 50:
        raise IkdError(f"--width {width}: expected inches between 0.5 and 50")
    if not 10 <= dpi <= 2400:
        raise IkdError(f"--dpi {dpi}: expected 10 to 2400")


def fit_width(fig, width: float | None) -> None:
    """Scale a figure to `width` inches, keeping its aspect ratio (None: leave its natural size)."""
    if width is None:
        return
    w, h = fig.get_size_inches()
    fig.set_size_inches(width, h * width / w)


def save_figure(fig, out: str | os.PathLike, dpi: int = DEFAULT_DPI) -> tuple[float, float]:
    """Write `fig` atomically in the format of `out`'s suffix; returns its size in inches."""
    from ikd.fileio import atomic_path

    fmt = figure_format(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    w, h = fig.get_size_inches()
    return float(w), float(h)


def describe(out: str | os.PathLike, size: tuple[float, float], dpi: int) -> str:
    """'1000x600 px' for a PNG, '3.30x2.10 in' for the vector formats."""
    w, h = size
    if figure_format(out) == "png":
        return f"{round(w * dpi)}x{round(h * dpi)} px"
    return f"{w:.2f}x{h:.2f} in"
