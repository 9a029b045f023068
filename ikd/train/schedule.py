"""Inverse square-root learning-rate schedule with linear warm-up (fairseq's `inverse_sqrt`)."""

from __future__ import annotations

import math
from typing import Any

import torch


class InverseSqrtSchedule:
    """lr(n) after n updates: warmup_init_lr + n * (lr - warmup_init_lr) / warmup while n < warmup,
    then lr * sqrt(warmup / n). With warmup 0: lr / sqrt(max(n, 1)).

    `step(optimizer)` is called after each update (n += 1) and sets the rate of the next update.
    """

    def __init__(self, lr: float, warmup_updates: int, warmup_init_lr: float):
        if lr <= 0:
            raise ValueError("lr must be positive")
        self.peak = lr
        self.warmup = max(0, warmup_updates)
        self.init = warmup_init_lr if self.warmup > 0 else lr
        self.updates = 0

    def lr_at(self, updates: int) -> float:
        if updates < self.warmup:
            return self.init + updates * (self.peak - self.init) / self.warmup
        if self.warmup == 0:
            return self.peak / math.sqrt(max(updates, 1))
        return self.peak * math.sqrt(self.warmup / updates)

    @property
    def lr(self) -> float:
        return self.lr_at(self.updates)

    def apply(self, optimizer: torch.optim.Optimizer) -> float:
        lr = self.lr
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def step(self, optimizer: torch.optim.Optimizer) -> float:
        self.updates += 1
        return self.apply(optimizer)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "lr": self.peak, "warmup": self.warmup, "init": self.init}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
