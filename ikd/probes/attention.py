"""Attention of the multimodal pseudo-tokens over the source (paper Figure 4).

In the first multimodal encoder layer the queries are [T text tokens ; P pseudo-tokens] and the keys are
the T source tokens (EOS included); `TranslationModel.encode(return_attention=True)` returns its probabilities
[B, heads, L, T]. The pseudo-token rows are the last P query rows (all rows for a model without text queries).

The authors' `scripts/visual_attn_weights.py` (docs/differences.md) plotted rows `[:49]` of the
[T + 49, T] matrix: the T *text* query rows followed by the first 49 - T image rows, so the "pseudo-words
forming a word alignment" of their Figure 4 are most likely the text tokens attending to themselves. Here
exactly the P pseudo-token rows are drawn, one heat map per head.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from ikd.errors import IkdError


def pseudo_token_attention(model: Any, src: torch.Tensor) -> np.ndarray:
    """src [1, T] (one sentence, EOS included, no padding) -> probabilities [heads, P, T] of the P
    pseudo-token queries over the T source tokens in the first encoder layer; each row sums to 1."""
    if model.text_only:
        raise IkdError("a text-only model has no pseudo-tokens, so no multimodal attention to draw")
    if src.dim() != 2 or src.size(0) != 1:
        raise ValueError(f"expected one sentence [1, T], got {tuple(src.shape)}")
    with torch.no_grad():
        enc = model.encode(src, return_attention=True)
    if enc.attention is None:
        raise IkdError("the model returned no attention probabilities")
    att = enc.attention[0].float()  # [h, L, T]
    n_text = src.size(1)
    rows = att[:, n_text:, :] if model.text_queries else att
    c, h, w = model.feature_shape
    if rows.size(1) != h * w:
        raise IkdError(f"expected {h * w} pseudo-token rows, got {rows.size(1)} (attention {tuple(att.shape)})")
    return rows.cpu().numpy()


def plot_attention(
    sentences: list[tuple[str, list[str], np.ndarray]],
    out: str | os.PathLike,
    grid_width: int,
    eos: bool = True,
    layout: str = "spatial",
    width: float | None = None,
    dpi: int = 300,
) -> tuple[float, float]:
    """One row of heat maps per sentence, one per head: x = source pieces (BPE pieces as they are, then
    </s> unless eos=False), y = pseudo-token index (ticks at every grid row of `grid_width`).
    sentences: (title, pieces, probabilities [heads, P, T]). `out`'s suffix picks PNG, PDF or SVG; `width`
    (inches) scales the natural size. Returns the size in inches."""
    from matplotlib.figure import Figure

    from ikd.probes.figures import fit_width, save_figure

    heads = sentences[0][2].shape[0]
    n_tokens = max(len(p) for _, p, _ in sentences) + (1 if eos else 0)
    panel_w = max(2.4, 0.26 * n_tokens + 0.9)
    n_rows = sentences[0][2].shape[1]
    panel_h = max(3.0, min(7.0, 0.09 * n_rows + 1.6))
    fig = Figure(figsize=(panel_w * heads + 1.0, (panel_h + 0.5) * len(sentences)), dpi=100, layout="constrained")
    subfigs = fig.subfigures(len(sentences), 1, squeeze=False)[:, 0]
    step = grid_width if 1 < grid_width and n_rows > 12 else max(1, math.ceil(n_rows / 8))
    for subfig, (title, pieces, probs) in zip(subfigs, sentences):
        labels = list(pieces) + ["</s>"]
        data = probs if eos else probs[:, :, :-1]
        labels = labels if eos else labels[:-1]
        vmax = float(data.max()) or 1.0
        axes = subfig.subplots(1, heads, squeeze=False)[0]
        image = None
        for k, ax in enumerate(axes):
            image = ax.imshow(
                data[k], aspect="auto", cmap="Blues", origin="lower", vmin=0.0, vmax=vmax, interpolation="nearest"
            )
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=70, ha="right", rotation_mode="anchor", fontsize=8)
            ax.set_yticks(range(0, data.shape[1], step))
            ax.tick_params(axis="y", labelsize=8)
            ax.set_title(f"head {k + 1}", fontsize=9)
        what = "region (row-major)" if layout == "spatial" else "channel chunk"
        axes[0].set_ylabel(f"pseudo-token: {what}", fontsize=8)
        for ax in axes:
            ax.set_xlabel("source token", fontsize=8)
        subfig.colorbar(image, ax=list(axes), shrink=0.9, pad=0.01, label="attention")
        subfig.suptitle(title, fontsize=10)
    fit_width(fig, width)
    return save_figure(fig, out, dpi)
