"""TensorBoard view of a run: every numeric field of metrics.jsonl's records, written as scalars while the
run trains (recipe key `train.tensorboard: true` or `ikd train --tensorboard`; `pip install 'ikd[tensorboard]'`).

metrics.jsonl stays the source of truth (`ikd analyze curves` reads it); the event files in
OUT/tensorboard are a copy for watching a run live with `tensorboard --logdir runs/`.

Tags: a "train" record's fields as train/FIELD at step = updates; an "epoch" record's valid_* fields as
valid/FIELD, its train_* fields as epoch_train/FIELD and the rest as epoch/FIELD, at step = updates too, so
that all curves share one x axis (the epoch is a scalar epoch/epoch)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ikd.errors import IkdError

INSTALL_HINT = "pip install 'ikd[tensorboard]' (or pip install tensorboard)"
_SKIP = {"kind", "updates"}


def require_tensorboard() -> None:
    """An IkdError saying how to install the extra when the tensorboard package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise IkdError(f"train.tensorboard needs the tensorboard package, not installed here: {INSTALL_HINT}") from None


def scalars(record: dict[str, Any]) -> tuple[int | None, dict[str, float]]:
    """(step, {tag: value}) of one metrics record; non-numeric and non-finite values are left out."""
    kind = record.get("kind")
    step = record.get("updates")
    step = int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else None
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in _SKIP or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            continue
        if kind == "train":
            tag = f"train/{key}"
        elif kind == "epoch":
            if key.startswith("valid_"):
                tag = f"valid/{key[len('valid_'):]}"
            elif key.startswith("train_"):
                tag = f"epoch_train/{key[len('train_'):]}"
            else:
                tag = f"epoch/{key}"
        else:
            continue  # resume markers and unknown kinds carry no curve
        out[tag] = float(value)
    return step, out


class TensorBoardWriter:
    """Writes records as scalars into `logdir` (event files; flushed after each record)."""

    def __init__(self, logdir: str | os.PathLike) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = Path(logdir)
        self.writer = SummaryWriter(log_dir=str(self.logdir))

    def write(self, record: dict[str, Any]) -> None:
        step, values = scalars(record)
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step)
        if values:
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def mirror_to_tensorboard(log: Any, logdir: str | os.PathLike) -> TensorBoardWriter:
    """Make every record that `log` (a MetricsLog) writes also go to TensorBoard; returns the writer."""
    writer = TensorBoardWriter(logdir)
    write_jsonl = log.write

    def write(kind: str, **fields: Any) -> dict[str, Any]:
        record = write_jsonl(kind, **fields)  # the JSON line first: it is the record of the run
        writer.write(record)
        return record

    log.write = write
    return writer
