"""KD distances and the two distillation losses, IrM-KD (eq. 7) and IaM-KD (eq. 8).

Convention: x is the teacher's feature of the real image (the target; detached here), y the student's feature or
the teacher's feature of the synthetic image. Every distance is a per-sample quantity averaged over the batch, so
it does not depend on the batch size, and is computed in fp32 (safe under autocast).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ikd.errors import IkdError

DISTANCES = ("l2", "l1", "linf", "cosine", "kl")


def distance(x: Tensor, y: Tensor, kind: str = "l2") -> Tensor:
    """Scalar distance between x (target, [B,...]) and y ([B,...], same shape).

    l2: mean squared error; l1: mean absolute error; linf: mean over samples of max |x-y|;
    cosine: mean over samples of 1 - cos(x_i, y_i), each sample flattened;
    kl: KL(p_x || p_y), p = softmax over the spatial positions (H*W) of each channel of a [B,C,H,W] map
    (pixels of each colour channel for the image pair), summed over positions, averaged over samples and channels;
    a 1x1 map has a single position, so its kl term is always 0.
    """
    if x.shape != y.shape:
        raise ValueError(f"distance between tensors of different shapes: {list(x.shape)} vs {list(y.shape)}")
    x = x.detach().float()
    y = y.float()
    if kind == "l2":
        return F.mse_loss(y, x)
    if kind == "l1":
        return F.l1_loss(y, x)
    if kind == "linf":
        return (x - y).abs().flatten(1).amax(dim=1).mean()
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(x.flatten(1), y.flatten(1), dim=1, eps=1e-8)).mean()
    if kind == "kl":
        if x.dim() < 3:
            raise ValueError(f"kl needs [B,C,...] maps, got {list(x.shape)}")
        log_px = F.log_softmax(x.flatten(2), dim=-1)  # [B,C,HW]
        log_py = F.log_softmax(y.flatten(2), dim=-1)
        kl = (log_px.exp() * (log_px - log_py)).sum(dim=-1)  # [B,C]
        return kl.mean()
    raise IkdError(f"kd.distance: unknown distance {kind!r} (known: {', '.join(DISTANCES)})")


def pair_distances(targets: list[Tensor], others: list[Tensor], kind: str = "l2") -> list[Tensor]:
    """[distance(targets[k], others[k], kind) for every pair k] (lists aligned as the teacher/student return them)."""
    if len(targets) != len(others):
        raise ValueError(f"feature lists of different lengths: {len(targets)} vs {len(others)}")
    return [distance(x, y, kind) for x, y in zip(targets, others, strict=True)]


def kd_losses(
    teacher_real: list[Tensor], student: list[Tensor], teacher_syn: list[Tensor], kind: str = "l2"
) -> tuple[Tensor, Tensor]:
    """(irm, iam) for one grain's aligned lists (index 0 = the images, last = the final map).

    teacher_real: T_k(I_r) (no graph needed; detached here); student: S_k (index 0 = I_s, last = m);
    teacher_syn: T_k(I_s) (with graph: gradients flow through the frozen teacher into I_s).
    irm = sum_k d(T_k(I_r), S_k) (eq. 7, includes the image term d(I_r, I_s));
    iam = sum_k d(T_k(I_r), T_k(I_s)) (eq. 8, also includes the image term, as T_0(I_s) = I_s).
    """
    irm = torch.stack(pair_distances(teacher_real, student, kind)).sum()
    iam = torch.stack(pair_distances(teacher_real, teacher_syn, kind)).sum()
    return irm, iam
