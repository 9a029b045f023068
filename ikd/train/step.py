"""One optimisation step of the objective (ikd.train.objective), with no host synchronisation: loss sums stay
on the device until the trainer reads them at a log boundary. The Stepper owns the optimiser, the learning-rate
schedule and the grad scaler, and saves and restores their state for an exact resume."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ikd.device import amp_dtype, keep_freed_host_memory
from ikd.recipe import Recipe
from ikd.train.objective import FIELDS, objective
from ikd.train.optimizer_state import load_named_state, named_state
from ikd.train.schedule import InverseSqrtSchedule


def make_optimizer(params: list[nn.Parameter], recipe: Recipe, device: torch.device) -> torch.optim.Adam:
    """Adam with the recipe's betas/eps; fused kernels on CUDA (and on CPU, where torch has them)."""
    t = recipe.train
    kwargs = dict(lr=t.warmup_init_lr, betas=tuple(t.adam_betas), eps=t.adam_eps, weight_decay=t.weight_decay)
    if device.type == "cuda":
        return torch.optim.Adam(params, fused=True, **kwargs)
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):  # a torch without fused CPU Adam
        return torch.optim.Adam(params, foreach=True, **kwargs)


class Stepper:
    """Owns the optimiser, schedule and grad scaler; `step(batch)` runs one update and adds the step's
    losses to device-side sums. `drain()` is the only place that synchronises with the host."""

    def __init__(
        self,
        model: nn.Module,
        raw_model: nn.Module,
        recipe: Recipe,
        device: torch.device,
        pad: int,
        reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
        world: int = 1,
    ):
        self.model = model  # possibly DDP- or compile-wrapped
        if device.type == "cpu":
            keep_freed_host_memory()
        self.raw_model = raw_model
        self.recipe = recipe
        self.device = device
        self.pad = pad
        self.reduce_sum, self.world = reduce_sum, world  # DDP: the CE's global token normalisation
        trainable = [(name, p) for name, p in raw_model.named_parameters() if p.requires_grad]
        self.param_names = [name for name, _ in trainable]
        self.params = [p for _, p in trainable]
        self.optimizer = make_optimizer(self.params, recipe, device)
        t = recipe.train
        self.schedule = InverseSqrtSchedule(t.lr, t.warmup_updates, t.warmup_init_lr)
        self.schedule.apply(self.optimizer)
        self.dtype = amp_dtype(t.amp, device)
        self.fp16 = self.dtype == torch.float16
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.fp16)
        self.clip = t.clip_norm
        self._reset_sums()

    @property
    def updates(self) -> int:
        return self.schedule.updates

    def _reset_sums(self) -> None:
        self.sums = torch.zeros(len(FIELDS), device=self.device)
        self.finite_steps = torch.zeros((), device=self.device)
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=self.device)
        self.steps = 0

    def step(self, batch) -> None:
        losses = objective(self.model, batch, self.recipe, self.pad, self.dtype, self.reduce_sum, self.world)
        self.scaler.scale(losses.loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = None
        if self.clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip, foreach=True)
        elif not self.fp16:  # the norm only, for the finiteness check below (an infinite bound never clips)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, float("inf"), foreach=True)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step(self.optimizer)
        self.steps += 1
        vec = losses.vector()
        finite = torch.isfinite(vec[0])
        if not self.fp16:  # (fp16 overflows are the scaler's: it skips that step and lowers the scale)
            # a finite loss with a non-finite gradient is as bad: name this update, not the next one
            finite = finite & torch.isfinite(grad_norm)
        self.sums += torch.where(finite, vec, torch.zeros_like(vec))
        self.finite_steps += finite.float()
        bad_here = (~finite) & (self.first_bad < 0)
        self.first_bad = torch.where(bad_here, self.first_bad.new_full((), self.updates), self.first_bad)

    def state_dict(self) -> dict[str, Any]:
        """Optimiser (keyed by parameter name), schedule and (fp16) scaler state, for a checkpoint."""
        return {
            "optimizer": named_state(self.optimizer, self.param_names),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.fp16 else {},
        }

    def load_state_dict(self, state: dict[str, Any], positions: list[str] | None = None) -> None:
        """Restore `state_dict()`; the learning rate then follows the (possibly changed) recipe's schedule. An
        older, position-numbered optimiser state held parameter `positions[i]` at position i (default: today's
        order)."""
        load_named_state(self.optimizer, self.param_names, state["optimizer"], positions)
        self.schedule.load_state_dict(state["schedule"])
        self.schedule.apply(self.optimizer)
        if self.fp16 and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def drain(self, reduce_sum=None, reduce_min=None) -> tuple[dict[str, float], int, int | None]:
        """Read and reset the sums (one host sync): (means over the finite steps, steps, first update whose
        loss was not finite or None). Under DDP pass all-reduce functions (sum, min): every rank must then
        drain at the same update, and the figures are over all ranks."""
        bad = torch.where(self.first_bad < 0, float("inf"), self.first_bad.float())[None]
        sums = torch.cat([self.sums, self.finite_steps[None]])
        if reduce_sum is not None:
            sums, bad = reduce_sum(sums), reduce_min(bad)
        packed = torch.cat([sums, bad]).tolist()
        steps = self.steps
        finite = packed[len(FIELDS)]
        first_bad = packed[len(FIELDS) + 1]
        means = {k: (v / finite if finite else float("nan")) for k, v in zip(FIELDS, packed)}
        self._reset_sums()
        return means, steps, (int(first_bad) if math.isfinite(first_bad) else None)
