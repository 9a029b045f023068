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


# (panel title, y label, series, log scale allowed)
PANELS = (
    ("loss", "loss per target token", ["train_loss", "valid_loss", "train_ce", "valid_ce"], False),
    ("distillation terms (unweighted)", "distance", ["train_irm", "valid_irm", "train_iam", "valid_iam"], True),
    ("validation BLEU", "BLEU", ["valid_bleu"], False),
)


def plot_curves(
    curves: dict[str, dict[int, float]],
    out: str | os.PathLike,
    title: str = "",
    width: float = 3.3,
    dpi: int = 300,
) -> tuple[float, float]:
    """Up to three panels stacked (a paper column wide): losses (train/valid loss and CE), KD terms (irm,
    iam; log scale), validation BLEU. A panel without data is left out, so a text-only run (KD terms
    logged as 0) shows no KD panel. The suffix of `out` picks PNG, PDF or SVG. Returns the size in inches."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from ikd.probes.figures import save_figure

    def has_data(name: str) -> bool:
        values = curves.get(name, {}).values()
        # a text-only run logs its KD terms as 0: nothing to draw
        return any(values) if name.split("_", 1)[1] in ("irm", "iam") else bool(values)

    panels = [(t, y, [n for n in names if has_data(n)], log) for t, y, names, log in PANELS]
    panels = [p for p in panels if p[2]]
    if not panels:
        raise IkdError("the metrics log holds no epoch or training records to plot")
    epochs = sorted({e for series in curves.values() for e in series})
    first, last = epochs[0], epochs[-1]
    panel_h = 0.62 * width
    fig = Figure(figsize=(width, panel_h * len(panels) + (0.25 if title else 0.0)), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    styles = {"train": "-", "valid": "--"}  # one colour per quantity, solid for training, dashed for validation
    colours = {"loss": "C0", "ce": "C1", "irm": "C2", "iam": "C3", "bleu": "C4"}
    size = 7 if width < 5 else 9
    for ax, (panel_title, ylabel, names, log) in zip(axes, panels):
        for name in names:
            series = curves[name]
            xs = sorted(series)
            split, field = name.split("_", 1)
            ax.plot(
                xs,
                [series[x] for x in xs],
                styles[split],
                color=colours[field],
                marker="o",
                markersize=2.5,
                linewidth=1.2,
                label=f"{split} {field}",
            )
        ax.set_title(panel_title, fontsize=size + 1)
        ax.set_xlabel("epoch", fontsize=size)
        ax.set_ylabel(ylabel, fontsize=size)
        ax.tick_params(labelsize=size)
        ax.set_xlim(first - 0.5, last + 0.5)
        if last - first < 12:
            ax.set_xticks(range(first, last + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if len(names) > 1 or names[0] != "valid_bleu":
            ax.legend(fontsize=size - 1)
        values = [v for n in names for v in curves[n].values()]
        if log and min(values) > 0 and max(values) >= 10 * min(values):  # log only where it spans a decade
            ax.set_yscale("log")
            ax.tick_params(which="both", labelsize=size)
    if title:
        fig.suptitle(title, fontsize=size)
    return save_figure(fig, out, dpi)
