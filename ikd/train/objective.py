"""The training objective, in one place (paper eq. 9):

    L = CE / ntok + lambda_irm * IrM-KD + lambda_iam * IaM-KD

CE is fairseq's label-smoothed cross entropy summed over the target tokens and divided by their number;
IrM-KD (eq. 7) and IaM-KD (eq. 8) come from the Distiller, computed on the m the translator generated from
the text. Training (`Stepper`) and validation (`ikd.train.validation`) both call `objective`; `weighted_loss`
is the one place where the terms are weighted and summed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ikd.device import autocast
from ikd.model.distiller import build_distiller
from ikd.model.translator import TranslationModel, build_translator
from ikd.recipe import KDConfig, Recipe
from ikd.train.loss import label_smoothed_ce


@dataclass
class ObjectiveTerms:
    """Device scalars of one forward pass (no .item()): the loss (with gradient) and its parts."""

    loss: Tensor
    ce: Tensor  # label-smoothed CE per target token
    nll: Tensor  # plain NLL per target token (detached)
    irm: Tensor  # IrM-KD, eq. 7 (0 without KD)
    iam: Tensor  # IaM-KD, eq. 8
    image: Tensor  # the image-space term d(I_r, I_s), part of both KD losses
    irm_feat: Tensor  # IrM-KD without the image term: teacher vs student features
    iam_feat: Tensor  # IaM-KD without the image term: teacher(I_r) vs teacher(I_s)

    def vector(self) -> Tensor:
        """[len(FIELDS)] fp32, detached, in FIELDS order."""
        return torch.stack([getattr(self, name) for name in FIELDS]).detach().float()


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ObjectiveTerms))
KD_FIELDS: tuple[str, ...] = ("irm", "iam", "image", "irm_feat", "iam_feat")


class TrainingModel(nn.Module):
    """The translator and (for IKD) the Distiller as one module, for DDP and torch.compile:
    forward(src [B, T], tgt_in [B, U], images uint8 [B, 3, S, S] | None) -> (logits [B, U, V], KDTerms | None).

    The KD terms are computed when images are given and a KD weight is non-zero."""

    def __init__(self, translator: TranslationModel, distiller: nn.Module | None, recipe: Recipe) -> None:
        super().__init__()
        self.translator = translator
        self.distiller = distiller
        kd = recipe.kd
        self.uses_kd = distiller is not None and (kd.lambda_irm > 0 or kd.lambda_iam > 0)

    def checkpoint_states(self) -> dict:
        """The checkpoint entries of the weights (on the CPU): "model" (the translator) and, for IKD,
        "distiller" and "feature_shape"."""

        def cpu(module: nn.Module) -> dict[str, Tensor]:
            return {k: v.detach().cpu() for k, v in module.state_dict().items()}

        states: dict = {"model": cpu(self.translator)}
        if self.distiller is not None:
            states["distiller"] = cpu(self.distiller)
            states["feature_shape"] = list(self.translator.feature_shape)
        return states

    def forward(self, src: Tensor, tgt_in: Tensor, images: Tensor | None = None):
        logits, enc = self.translator(src, tgt_in)
        kd = self.distiller(enc.m, images) if images is not None and self.uses_kd else None
        return logits, kd


def build_training_model(recipe: Recipe, vocab_size: int, pad: int = 1, load_teacher_weights: bool = True):
    """The translator and, unless text-only, the Distiller a recipe describes, as one TrainingModel.
    load_teacher_weights=False builds a random teacher (a checkpoint's state will be loaded into it)."""
    distiller = None
    if not recipe.model.text_only:
        distiller = build_distiller(recipe.vision, recipe.kd, recipe.train.channels_last, load_teacher_weights)
    shape = distiller.feature_shape if distiller is not None else None
    return TrainingModel(build_translator(recipe.model, vocab_size, pad, shape), distiller, recipe)


def objective(
    model: nn.Module,
    batch,
    recipe: Recipe,
    pad: int,
    dtype: torch.dtype | None,
    reduce_sum: Callable[[Tensor], Tensor] | None = None,
    world: int = 1,
) -> ObjectiveTerms:
    """Forward `batch` (on the device) through a TrainingModel (possibly DDP/compile-wrapped) and form L.

    Logits are cast to fp32 inside the CE, so the objective is the same under bf16 autocast as on a CPU.
    Under DDP (`reduce_sum` sums over the `world` ranks) the CE is normalised by the step's token count over
    all ranks, times `world`, so that DDP's gradient average is the gradient of the global per-token mean
    (fairseq's normalisation), not a mean of per-rank means."""
    with autocast(batch.src.device, dtype):
        logits, kd = model(batch.src, batch.tgt_in, batch.images)
    ce_sum, nll_sum = label_smoothed_ce(logits, batch.tgt_out, recipe.train.label_smoothing, pad)
    if reduce_sum is None:
        ntokens = max(int(batch.ntokens), 1)
    else:  # a device tensor and an asynchronous all-reduce: no host sync
        ntokens = reduce_sum(batch.tgt_out.ne(pad).sum().float()).clamp(min=1.0) / world
    ce = ce_sum / ntokens
    zero = ce.new_zeros(())
    if kd is None:
        return ObjectiveTerms(ce, ce, nll_sum / ntokens, zero, zero, zero, zero, zero)
    irm, iam = kd.irm.float(), kd.iam.float()
    loss = weighted_loss(ce, irm, iam, recipe.kd)
    return ObjectiveTerms(loss, ce, nll_sum / ntokens, irm, iam, kd.image, kd.irm_feat, kd.iam_feat)


def weighted_loss(ce, irm, iam, kd: KDConfig):
    """L = CE + lambda_irm * IrM + lambda_iam * IaM (eq. 9), for tensors (a step) and floats (validation means)
    alike. A term whose weight is 0 is left out rather than multiplied by 0: "w/o IrM-KD" must not turn
    the loss into NaN when the unused term overflows."""
    loss = ce
    if kd.lambda_irm:
        loss = loss + kd.lambda_irm * irm
    if kd.lambda_iam:
        loss = loss + kd.lambda_iam * iam
    return loss


def kd_ce_ratio(means: dict[str, float], recipe: Recipe) -> float:
    """(lambda_irm * IrM + lambda_iam * IaM) / CE of a log window: how much of the loss is distillation."""
    ce = means.get("ce", 0.0)
    kd = weighted_loss(0.0, means.get("irm", 0.0), means.get("iam", 0.0), recipe.kd)
    return kd / ce if ce else float("nan")
