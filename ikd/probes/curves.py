"""Learning curves of a run from RUN/metrics.jsonl (written by `ikd train`).

Records (one JSON object per line): kind "train" (window means every train.log_every updates: epoch,
updates, lr, loss, ce, nll, irm, iam, image, irm_feat, iam_feat, ...), kind "epoch" (epoch, valid_loss,
valid_ce, valid_nll, valid_irm, valid_iam, ..., valid_bleu, ...) and kind "resume" (epoch). Missing fields,
NaN written as strings and unknown kinds are tolerated: a curve is drawn from whatever is there.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from ikd.errors import IkdError

TRAIN_FIELDS = ("loss", "ce", "irm", "iam")
VALID_FIELDS = ("loss", "ce", "irm", "iam", "bleu")


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise IkdError(f"{path}: no metrics log (is this a run folder of `ikd train`?)")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(path.read_text(encoding="utf-8").splitlines()):
                continue  # a run killed mid-write leaves a truncated last line
            raise IkdError(f"{path}:{number}: not a JSON record") from None
        if isinstance(record, dict):
            records.append(record)
    return records


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def epoch_curves(records: list[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """-> {"train_loss": {epoch: mean}, ..., "valid_bleu": {epoch: value}}: train fields averaged over an
    epoch's log windows, validation fields from the epoch record (the last one when an epoch was repeated)."""
    train: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    valid: dict[int, dict[str, float]] = {}
    for record in records:
        kind = record.get("kind")
        epoch = _number(record.get("epoch"))
        if epoch is None:
            continue
        epoch = int(epoch)
        if kind == "resume":  # an interrupted epoch is run again: forget its partial windows
            for e in [e for e in train if e > epoch]:
                del train[e]
            for e in [e for e in valid if e > epoch]:
                del valid[e]
        elif kind == "train":
            for name in TRAIN_FIELDS:
                x = _number(record.get(name))
                if x is not None:
                    train[epoch][name].append(x)
        elif kind == "epoch" or any(k.startswith("valid_") for k in record):
            valid[epoch] = {name: x for name in VALID_FIELDS if (x := _number(record.get(f"valid_{name}"))) is not None}
    curves: dict[str, dict[int, float]] = defaultdict(dict)
    for epoch in sorted(train):
        for name, values in train[epoch].items():
            curves[f"train_{name}"][epoch] = sum(values) / len(values)
    for epoch in sorted(valid):
        for name, x in valid[epoch].items():
            curves[f"valid_{name}"][epoch] = x
    return dict(curves)


def plot_curves(curves: dict[str, dict[int, float]], out: str | os.PathLike, title: str = "") -> tuple[int, int]:
    """Three panels: losses (train/valid loss and CE), KD terms (irm, iam; log scale), validation BLEU."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from ikd.fileio import atomic_path

    if not curves:
        raise IkdError("the metrics log holds no epoch or training records to plot")
    epochs = sorted({e for series in curves.values() for e in series})
    first, last = epochs[0], epochs[-1]
    fig = Figure(figsize=(15, 4.2), dpi=100, layout="constrained")
    ax_loss, ax_kd, ax_bleu = fig.subplots(1, 3)
    styles = {"train": "-", "valid": "--"}  # one colour per quantity, solid for training, dashed for validation
    colours = {"loss": "C0", "ce": "C1", "irm": "C2", "iam": "C3", "bleu": "C4"}

    def draw(ax, names: list[str], empty: str, log: bool = False) -> None:
        drawn = False
        for name in names:
            series = curves.get(name)
            if not series:
                continue
            xs = sorted(series)
            ys = [series[x] for x in xs]
            split, field = name.split("_", 1)
            ax.plot(xs, ys, styles[split], color=colours[field], marker="o", markersize=3, label=f"{split} {field}")
            drawn = True
        ax.set_xlabel("epoch")
        ax.set_xlim(first - 0.5, last + 0.5)
        if last - first < 12:
            ax.set_xticks(range(first, last + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
            if log and all(v > 0 for n in names for v in curves.get(n, {}).values()):
                ax.set_yscale("log")
        else:
            ax.set_yticks([])
            ax.grid(False)
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="gray")

    draw(ax_loss, ["train_loss", "valid_loss", "train_ce", "valid_ce"], "no loss records")
    ax_loss.set_title("loss (label-smoothed CE + weighted KD), CE per token")
    # a text-only run logs its KD terms as 0: nothing to draw
    kd = [n for n in ("train_irm", "valid_irm", "train_iam", "valid_iam") if any(curves.get(n, {}).values())]
    draw(ax_kd, kd, "no KD terms\n(text-only run or no images)", True)
    ax_kd.set_title("distillation terms (unweighted)")
    draw(ax_bleu, ["valid_bleu"], "no validation BLEU\n(train.valid_bleu off)")
    ax_bleu.set_title("validation BLEU")
    if title:
        fig.suptitle(title, fontsize=10)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    w, h = fig.canvas.get_width_height()
    return int(w), int(h)
