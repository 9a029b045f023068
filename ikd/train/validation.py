"""Validation of a training run at the end of each epoch: the objective on the valid split (with its KD
terms, as in training) and corpus BLEU of the translator's output."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ikd.data.text import remove_bpe
from ikd.evaluation.metrics import bleu
from ikd.inference.loading import Loaded
from ikd.inference.translator import SearchOptions, Translator
from ikd.recipe import Recipe
from ikd.train import distributed as dist
from ikd.train.data import RunData, make_loader
from ikd.train.objective import KD_FIELDS, TrainingModel, objective, weighted_loss

# Validation BLEU caps the output at 1.5 * source + 10 tokens (the test-time cap is 0 * source + 200): an
# untrained model that never emits EOS would otherwise decode 200 tokens per sentence every epoch.
VALID_MAX_LEN = (1.5, 10)


@torch.no_grad()
def validation_loss(
    model: TrainingModel,
    data: RunData,
    recipe: Recipe,
    device: torch.device,
    dtype: torch.dtype | None,
    info: dist.DistInfo,
) -> dict[str, float]:
    """{ce, nll, ppl, loss and, when the split has images, the KD terms}: label-smoothed CE and NLL per target
    token, each KD term per sentence, and the objective's weighted sum of those means. Each rank takes its
    share of the valid batches; the sums are over all ranks."""
    split, t = data.valid, recipe.train
    model.eval()
    batches = split.batches(t.max_tokens, t.batch_multiple, False, t.seed, 0)
    batches = batches[info.rank :: info.world_size]  # all of them, unevenly shared
    # sums: ce*tokens, nll*tokens, tokens, sentences, then each KD term * sentences
    sums = torch.zeros(4 + len(KD_FIELDS), dtype=torch.float64, device=device)
    for batch in make_loader(split, batches, data.vocab.pad, 0, False, t.seed):
        batch = batch.to(device, non_blocking=True)
        losses = objective(model, batch, recipe, data.vocab.pad, dtype)
        n, ntok = len(batch.indices), batch.ntokens
        counts = losses.ce.new_tensor([float(ntok), float(n)])
        kd = torch.stack([getattr(losses, k) for k in KD_FIELDS]) * n
        sums += torch.cat([torch.stack([losses.ce, losses.nll]) * ntok, counts, kd]).double()
    dist.all_reduce_sum(sums, info)
    ce, nll, ntok, n, *kd_sums = sums.tolist()
    model.train()
    out = {"ce": ce / max(ntok, 1), "nll": nll / max(ntok, 1)}
    out.update({k: v / max(n, 1) for k, v in zip(KD_FIELDS, kd_sums)})
    out["ppl"] = math.exp(min(out["nll"], 50.0))
    out["loss"] = weighted_loss(out["ce"], out["irm"], out["iam"], recipe.kd)
    if split.data.images is None:  # no KD terms on this split
        out = {k: v for k, v in out.items() if k not in KD_FIELDS}
    return out


@torch.no_grad()
def validation_bleu(
    model: TrainingModel, data: RunData, recipe: Recipe, out: Path, device: torch.device, dtype: torch.dtype | None
) -> float:
    """Corpus BLEU on the valid split, decoded by the same Translator as `ikd translate` and `ikd evaluate`
    (train.valid_beam; 1 = greedy) with the output cap VALID_MAX_LEN: de-BPE'd, tokenised text, sacrebleu
    with tokenize=none (the paper's multi-bleu-style number)."""
    translator, split, vocab = model.translator, data.valid, data.vocab
    translator.eval()
    translator.forget_step_weights()  # the optimiser's fused in-place update leaves the weights' versions as they were
    loaded = Loaded(translator, vocab, None, recipe, recipe.data.src, recipe.data.tgt, out, device, dtype)
    a, b = VALID_MAX_LEN
    search = Translator(loaded, SearchOptions(beam=recipe.train.valid_beam, max_len_a=a, max_len_b=b))
    found = search.search([split.data.src[int(i)].tolist() for i in split.keep])
    translator.train()
    hyps = [remove_bpe(" ".join(vocab.decode(h[0].tokens))) if h else "" for h in found]
    return bleu(hyps, data.valid_refs).score
