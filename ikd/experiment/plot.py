"""Validation curves of an experiment: for every system the mean over its seeds per epoch and a band of ± one
standard deviation (from each run's metrics.jsonl)."""

from __future__ import annotations

import os
from pathlib import Path

from ikd.errors import IkdError
from ikd.evaluation.runs import mean_std
from ikd.experiment.spec import Experiment

PANELS = (("valid_loss", "validation loss"), ("valid_bleu", "validation BLEU"), ("train_loss", "training loss"))


def system_curves(exp: Experiment) -> dict[str, dict[str, list[dict[int, float]]]]:
    """system -> curve name -> one {epoch: value} per run that has a metrics log."""
    from ikd.probes.curves import epoch_curves, read_records

    out: dict[str, dict[str, list[dict[int, float]]]] = {}
    for name in exp.systems:
        for seed in exp.seeds:
            log = exp.run_dir(name, seed) / "metrics.jsonl"
            if not log.is_file():
                continue
            curves = epoch_curves(read_records(log))
            for key, _ in PANELS:
                if curves.get(key):
                    out.setdefault(name, {}).setdefault(key, []).append(curves[key])
    return out


def band(runs: list[dict[int, float]]) -> tuple[list[int], list[float], list[float]]:
    """Epochs reached by at least one run, the mean over the runs that reached each, and the std."""
    epochs = sorted({e for run in runs for e in run})
    means, stds = [], []
    for e in epochs:
        mean, std = mean_std([run[e] for run in runs if e in run])
        means.append(mean)
        stds.append(std)
    return epochs, means, stds


def plot_experiment(exp: Experiment, out: str | os.PathLike) -> int:
    """Write the figure (format from the suffix: pdf, png, svg); returns the number of runs plotted."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from ikd.fileio import atomic_path

    curves = system_curves(exp)
    if not curves:
        raise IkdError(f"{exp.out}: no run of {exp.path} has a metrics log yet (ikd experiment run first)")
    fig = Figure(figsize=(15, 4.2), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(PANELS))
    for ax, (key, title) in zip(axes, PANELS):
        for name, system in exp.systems.items():
            runs = curves.get(name, {}).get(key)
            if not runs:
                continue
            epochs, means, stds = band(runs)
            (line,) = ax.plot(epochs, means, label=f"{system.label} ({len(runs)} runs)")
            low = [m - s for m, s in zip(means, stds)]
            high = [m + s for m, s in zip(means, stds)]
            ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.suptitle(f"{exp.name}: mean ± std over seeds")
    suffix = Path(out).suffix.lstrip(".").lower() or "pdf"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=suffix)
    return sum(len(runs) for system in curves.values() for runs in list(system.values())[:1])
