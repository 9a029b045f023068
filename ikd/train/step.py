"""One optimisation step of the IKD objective, with no host synchronisation: loss sums stay on the device
until the trainer reads them at a log boundary.

Objective per batch: label-smoothed CE (mean over target tokens) + lambda_irm * IrM-KD + lambda_iam * IaM-KD.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ikd.recipe import Recipe
from ikd.train.loss import label_smoothed_ce
from ikd.train.schedule import InverseSqrtSchedule

# Order of the running sums kept on the device.
FIELDS = ("loss", "ce", "nll", "irm", "iam", "image", "irm_feat", "iam_feat")


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: None (fp32) on CPU or when off; auto = bf16 where the GPU supports it, else fp16."""
    if device.type != "cuda" or setting == "off":
        return None
    if setting == "bf16":
        return torch.bfloat16
    if setting == "fp16":
        return torch.float16
    # native bf16 only (Ampere and newer): torch's default check also counts emulated bf16 (V100, T4)
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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


@dataclass
class StepLosses:
    """Device scalars of one forward pass (no .item())."""

    loss: torch.Tensor
    ce: torch.Tensor
    nll: torch.Tensor
    irm: torch.Tensor
    iam: torch.Tensor
    image: torch.Tensor  # the student's image-space term |I_r - I_s| (part of both KD losses)
    irm_feat: torch.Tensor  # IrM-KD without the image term: teacher vs student features
    iam_feat: torch.Tensor  # IaM-KD without the image term: teacher(I_r) vs teacher(I_s)

    def vector(self) -> torch.Tensor:
        parts = [self.loss, self.ce, self.nll, self.irm, self.iam, self.image, self.irm_feat, self.iam_feat]
        return torch.stack(parts).detach().float()


def compute_losses(
    model: nn.Module,
    batch,
    recipe: Recipe,
    pad: int,
    dtype: torch.dtype | None,
    reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
    world: int = 1,
) -> StepLosses:
    """Forward `batch` (already on the device) and form the objective. Under DDP (`reduce_sum` sums over the
    `world` ranks) the CE is normalised by the step's token count over all ranks, times `world`, so that
    DDP's gradient average is the gradient of the global per-token mean (fairseq's normalisation), not a
    mean of per-rank means."""
    device = batch.src.device
    with autocast(device, dtype):
        logits, kd = model(batch.src, batch.tgt_in, batch.images)
    ce_sum, nll_sum = label_smoothed_ce(logits, batch.tgt_out, recipe.train.label_smoothing, pad)
    if reduce_sum is None:
        ntokens = max(int(batch.ntokens), 1)
    else:  # a device tensor and an asynchronous all-reduce: no host sync
        ntokens = reduce_sum(batch.tgt_out.ne(pad).sum().float()).clamp(min=1.0) / world
    ce = ce_sum / ntokens
    zero = ce.new_zeros(())
    irm = kd["irm"].float() if "irm" in kd else zero
    iam = kd["iam"].float() if "iam" in kd else zero
    loss = ce
    if "irm" in kd and recipe.kd.lambda_irm:
        loss = loss + recipe.kd.lambda_irm * irm
    if "iam" in kd and recipe.kd.lambda_iam:
        loss = loss + recipe.kd.lambda_iam * iam
    extra = [kd[k].detach().float() if k in kd else zero for k in ("image", "irm_feat", "iam_feat")]
    return StepLosses(loss, ce, nll_sum / ntokens, irm, iam, *extra)


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
        self.raw_model = raw_model
        self.recipe = recipe
        self.device = device
        self.pad = pad
        self.reduce_sum, self.world = reduce_sum, world  # DDP: the CE's global token normalisation
        self.params = [p for p in raw_model.parameters() if p.requires_grad]
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
        losses = compute_losses(self.model, batch, self.recipe, self.pad, self.dtype, self.reduce_sum, self.world)
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
