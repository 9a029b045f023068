"""What a training run shows while it runs: the epoch's progress bar, the throughput and running means of the
log windows and the epoch (written to metrics.jsonl by the trainer), and the one line per epoch."""

from __future__ import annotations

import time
from typing import Any

from ikd.train.objective import FIELDS


def progress_bar(total: int, epoch: int) -> Any:
    """A tqdm bar over the epoch's batches; none is drawn when stderr is not a terminal (a log file gets the
    epoch lines only)."""
    from tqdm import tqdm

    return tqdm(
        total=total, desc=f"epoch {epoch}", unit="batch", leave=False, mininterval=1.0, dynamic_ncols=True, disable=None
    )


def show_window(bar: Any, record: dict[str, Any]) -> None:
    bar.set_postfix(
        loss=f"{record['loss']:.3f}",
        lr=f"{record['lr']:.2e}",
        sent_s=f"{record['sentences_per_s']:.0f}",
        tok_s=f"{record['tokens_per_s']:.0f}",
        refresh=False,
    )


class EpochMeter:
    """Sentences and tokens of the current log window and of the epoch (this rank's; rates are scaled by the
    number of ranks), and the epoch's running means of the windows' loss terms, weighted by their steps."""

    def __init__(self, world: int = 1) -> None:
        self.world = world
        self.epoch_start = self.window_start = time.perf_counter()
        self.sentences = self.tokens = 0  # this window
        self.epoch_sentences = self.epoch_tokens = 0
        self._sums: dict[str, float] = {}
        self._steps = 0

    def add(self, sentences: int, tokens: int) -> None:
        self.sentences += sentences
        self.tokens += tokens
        self.epoch_sentences += sentences
        self.epoch_tokens += tokens

    def close_window(self, means: dict[str, float], steps: int) -> dict[str, float]:
        """Fold a drained window (means over its `steps`) into the epoch's means; return the window's
        sentences_per_s and tokens_per_s over all ranks, and start the next window."""
        for k in FIELDS:
            self._sums[k] = self._sums.get(k, 0.0) + means[k] * steps
        self._steps += steps
        span = max(time.perf_counter() - self.window_start, 1e-9)
        rates = {
            "sentences_per_s": self.sentences / span * self.world,
            "tokens_per_s": self.tokens / span * self.world,
        }
        self.window_start, self.sentences, self.tokens = time.perf_counter(), 0, 0
        return rates

    def train_means(self) -> dict[str, float]:
        """The epoch's mean of each loss term over its updates."""
        return {k: v / max(self._steps, 1) for k, v in self._sums.items()}

    def epoch_rates(self, seconds: float) -> dict[str, float]:
        seconds = max(seconds, 1e-9)
        return {
            "sentences_per_s": self.epoch_sentences * self.world / seconds,
            "tokens_per_s": self.epoch_tokens * self.world / seconds,
        }


def epoch_line(epoch: int, updates: int, valid: dict[str, float], tokens_per_s: float, improved: bool) -> str:
    """The line printed after each epoch's validation."""
    bleu = f", bleu {valid['bleu']:.2f}" if "bleu" in valid else ""
    kd = f", irm {valid['irm']:.4g}, iam {valid['iam']:.4g}" if "irm" in valid else ""
    return (
        f"epoch {epoch}: {updates} updates, valid loss {valid['loss']:.4f} (ce {valid['ce']:.4f}{kd}){bleu}, "
        f"{tokens_per_s:.0f} tok/s" + (", best so far" if improved else "")
    )
