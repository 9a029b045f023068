"""What the student imagines: its synthetic image I_s for a sentence, as a picture (the authors left this
commented out). I_s lives in the teacher's normalised pixel space; it is mapped back with the ImageNet
mean and std and clipped to [0, 1]."""

from __future__ import annotations

import os
import textwrap
from typing import Any

import numpy as np
import torch

from ikd.errors import IkdError


def imagined_images(model: Any, distiller: Any, src: torch.Tensor) -> np.ndarray:
    """src [B, T] -> uint8 pictures [B, S, S, 3] of the student's I_s for the translator's m (de-normalised,
    clipped)."""
    from ikd.model.vision import IMAGENET_MEAN, IMAGENET_STD

    if model.text_only or distiller is None:
        raise IkdError("a text-only model has no student, so it imagines no image")
    with torch.no_grad():
        x = distiller.imagine(model.generate_m(src)).float()  # [B, 3, S, S]
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    pixels = (x * std + mean).clamp(0.0, 1.0)
    return (pixels * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def save_images(
    pictures: np.ndarray, captions: list[str], out: str | os.PathLike, width: float | None = None, dpi: int = 300
) -> tuple[float, float]:
    """One picture to a .png without --width: the picture at its own resolution. Otherwise a figure (PNG, PDF
    or SVG by `out`'s suffix), a grid with the sentences as captions when there are several. Returns the
    size in inches (pixels / dpi for the picture at its own resolution)."""
    from ikd.fileio import atomic_path
    from ikd.probes.figures import figure_format, fit_width, save_figure

    if len(pictures) == 1 and width is None and figure_format(out) == "png":
        from PIL import Image

        with atomic_path(out) as tmp:
            Image.fromarray(pictures[0]).save(tmp, format="PNG")
        return pictures.shape[2] / dpi, pictures.shape[1] / dpi

    from matplotlib.figure import Figure

    n = len(pictures)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig = Figure(figsize=(3.0 * cols, 3.4 * rows), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(pictures[i], interpolation="nearest")
            ax.set_title("\n".join(textwrap.wrap(captions[i], 32)), fontsize=9)
    fit_width(fig, width)
    return save_figure(fig, out, dpi)
