"""Label-smoothed cross entropy, as fairseq's criterion defines it (docs/differences.md).

`label_smoothed_ce` is the training objective's CE: one autograd function whose backward writes the gradient
w.r.t. the logits into one tensor (softmax minus the smoothed target), instead of the chain of gather, sum,
masking and log-softmax backward passes over [tokens, V] that autograd would run (a third of the CPU time of
a text-only step went there). `label_smoothed_ce_reference` composes the same quantity of plain autograd
operators: the definition the fused one is tested against, and the baseline of `bench/cpu_train.py`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class _LabelSmoothedCE(torch.autograd.Function):
    """(loss_sum, nll_sum) of logits [N, V] and target [N]; the gradient w.r.t. the logits of a kept row is
    softmax(x) - (1 - eps) * onehot(y) - eps / V, zero for a pad row, written into one new tensor."""

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, epsilon: float, pad: int) -> tuple[Tensor, Tensor]:
        lprobs = F.log_softmax(logits.float(), dim=1)  # [N, V]
        keep = target.ne(pad)
        nll_tok = -lprobs.gather(1, target[:, None]).squeeze(1)
        nll = torch.where(keep, nll_tok, 0.0).sum()
        if epsilon:
            smooth_tok = -lprobs.sum(dim=1)  # sum_v -log p(v)
            loss = torch.where(keep, (1.0 - epsilon) * nll_tok + (epsilon / lprobs.size(1)) * smooth_tok, 0.0).sum()
        else:
            loss = nll.clone()
        ctx.save_for_backward(lprobs, target, keep)
        ctx.epsilon = epsilon
        ctx.logits_dtype = logits.dtype
        ctx.mark_non_differentiable(nll)
        return loss, nll

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_nll: Tensor):
        lprobs, target, keep = ctx.saved_tensors
        eps = ctx.epsilon
        grad = lprobs.exp()
        if eps:
            grad.sub_(eps / grad.size(1))
        grad.scatter_add_(1, target[:, None], grad.new_full((grad.size(0), 1), -(1.0 - eps)))
        grad.mul_(torch.where(keep, grad_loss, 0.0)[:, None])
        return grad.to(ctx.logits_dtype), None, None, None


def label_smoothed_ce(logits: Tensor, target: Tensor, epsilon: float, pad: int) -> tuple[Tensor, Tensor]:
    """Summed label-smoothed CE and summed NLL over the non-pad target tokens.

    logits [B,U,V] (any float dtype; computed in fp32), target [B,U] int64. Per token:
    (1 - eps) * -log p(y) + (eps / V) * sum_v -log p(v), i.e. the target distribution is (1 - eps) on y plus
    eps spread uniformly over all V entries (PyTorch's `label_smoothing` convention).
    Returns (loss_sum, nll_sum) as fp32 scalars (nll detached); divide by the number of target tokens for
    the mean. Pads are masked without boolean indexing (no host sync)."""
    vocab = logits.size(-1)
    return _LabelSmoothedCE.apply(logits.reshape(-1, vocab), target.reshape(-1), float(epsilon), int(pad))


def label_smoothed_ce_reference(
    logits: Tensor, target: Tensor, epsilon: float, pad: int
) -> tuple[Tensor, Tensor]:
    """`label_smoothed_ce` composed of autograd operators: one log-softmax serves both sums."""
    vocab = logits.size(-1)
    lprobs = F.log_softmax(logits.reshape(-1, vocab).float(), dim=-1)
    flat_target = target.reshape(-1, 1)
    keep = flat_target.ne(pad)
    nll = -lprobs.gather(1, flat_target).masked_fill(~keep, 0.0).sum()
    if epsilon == 0.0:
        return nll, nll.detach()
    smooth = -lprobs.sum(dim=1, keepdim=True).masked_fill(~keep, 0.0).sum()
    loss = (1.0 - epsilon) * nll + (epsilon / vocab) * smooth
    return loss, nll.detach()
