"""Run-folder checkpoints: checkpoint{epoch}.pt (the last N kept), checkpoint_best.pt, checkpoint_last.pt,
and checkpoint_average.pt, the parameter-wise mean of the last N epoch checkpoints (the paper evaluates
the average of 10)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ikd.checkpoint import load_checkpoint, save_checkpoint
from ikd.errors import IkdError
from ikd.fileio import atomic_path

STATE_KEYS = ("model", "distiller")  # the state dicts of a checkpoint (translator, distiller)
EPOCH_FILE = re.compile(r"^checkpoint(\d+)\.pt$")
LAST = "checkpoint_last.pt"
BEST = "checkpoint_best.pt"
AVERAGE = "checkpoint_average.pt"


def epoch_checkpoints(out: str | os.PathLike) -> list[tuple[int, Path]]:
    """(epoch, path) of OUT/checkpoint{epoch}.pt, in epoch order."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = []
    for path in out.iterdir():
        match = EPOCH_FILE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def check_finite(state: dict[str, torch.Tensor], what: str) -> None:
    """Refuse to write a checkpoint whose weights hold NaN or inf (it would replace a good one)."""
    for name, value in state.items():
        if torch.is_floating_point(value) and not bool(torch.isfinite(value).all()):
            raise IkdError(f"{what}: parameter {name} is not finite; the checkpoint was not written")


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make `dst` a copy of `src` atomically (a hard link when the file system allows it)."""
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


class CheckpointManager:
    """Writes a run's checkpoints. Each epoch: checkpoint{epoch}.pt, then checkpoint_last.pt (and
    checkpoint_best.pt when the validation loss improved) as hard links of it; older epoch files beyond
    `keep` are deleted. `keep` is at least `average_last`, which the final averaging needs."""

    def __init__(self, out: str | os.PathLike, keep_last: int, average_last: int = 0):
        self.out = Path(out)
        self.keep = max(keep_last, average_last, 1)

    def save_epoch(self, payload: dict[str, Any], epoch: int, best: bool) -> Path:
        for key in STATE_KEYS:
            if key in payload:
                check_finite(payload[key], f"epoch {epoch}")
        path = self.out / f"checkpoint{epoch}.pt"
        save_checkpoint(payload, path)
        _link_or_copy(path, self.out / LAST)
        if best:
            _link_or_copy(path, self.out / BEST)
        for _, old in epoch_checkpoints(self.out)[: -self.keep]:
            old.unlink()
        return path


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Parameter-wise mean (accumulated in float64, stored in each tensor's dtype). Integer buffers
    (BatchNorm's num_batches_tracked) are taken from the last state."""
    if not states:
        raise ValueError("nothing to average")
    keys = list(states[-1])
    for i, state in enumerate(states):
        if list(state) != keys:
            raise IkdError(f"checkpoint {i + 1} of {len(states)} has different parameters; cannot average")
    out = {}
    for key in keys:
        last = states[-1][key]
        if torch.is_floating_point(last):
            total = torch.zeros(last.shape, dtype=torch.float64)
            for state in states:
                total += state[key].to(torch.float64)
            out[key] = (total / len(states)).to(last.dtype)
        else:
            out[key] = last.clone()
    return out


def average_checkpoints(
    out: str | os.PathLike, last: int, path: str | os.PathLike | None = None, upper_bound: int | None = None
) -> Path:
    """Average the last `last` epoch checkpoints of run folder `out` (with `upper_bound`, the last ones of
    epoch <= upper_bound, as fairseq's --checkpoint-upper-bound) into one self-contained checkpoint (weights,
    recipe, vocabulary, BPE codes; no train_state). Returns its path (default OUT/AVERAGE)."""
    out = Path(out)
    found = epoch_checkpoints(out)
    if not found:
        raise IkdError(f"{out}: no epoch checkpoints (checkpoint<N>.pt) to average")
    if upper_bound is not None:
        found = [(epoch, p) for epoch, p in found if epoch <= upper_bound]
        if not found:
            raise IkdError(f"{out}: no epoch checkpoint of epoch <= {upper_bound} (kept: train.keep_last)")
        if len(found) < last:
            raise IkdError(
                f"{out}: only {len(found)} epoch checkpoints of epoch <= {upper_bound} are kept, {last} asked; "
                "keep more with train.keep_last"
            )
    chosen = found[-max(1, last) :]
    payloads = [load_checkpoint(p) for _, p in chosen]
    newest = payloads[-1]
    for (_, p), payload in zip(chosen, payloads):
        if payload.get("vocab") != newest.get("vocab"):
            raise IkdError(f"{p}: vocabulary differs from checkpoint{chosen[-1][0]}.pt; cannot average")
    averaged = {k: v for k, v in newest.items() if k not in ("train_state", "format")}
    for key in STATE_KEYS:
        if key in newest:
            averaged[key] = average_state_dicts([p[key] for p in payloads])
            check_finite(averaged[key], f"average of {out}")
    averaged["averaged_epochs"] = [epoch for epoch, _ in chosen]
    target = Path(path) if path is not None else out / AVERAGE
    save_checkpoint(averaged, target)
    return target
