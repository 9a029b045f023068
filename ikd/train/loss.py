"""Label-smoothed cross entropy, as fairseq's criterion defines it (docs/differences.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def label_smoothed_ce(
    logits: torch.Tensor, target: torch.Tensor, epsilon: float, pad: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed label-smoothed CE and summed NLL over the non-pad target tokens.

    logits [B,U,V] (any float dtype; computed in fp32), target [B,U] int64. Per token:
    (1 - eps) * -log p(y) + (eps / V) * sum_v -log p(v), i.e. the target distribution is (1 - eps) on y plus
    eps spread uniformly over all V entries (PyTorch's `label_smoothing` convention).
    Returns (loss_sum, nll_sum) as fp32 scalars (nll detached); divide by the number of target tokens for
    the mean. One log-softmax serves both; pads are masked without boolean indexing (no host sync).
    """
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
