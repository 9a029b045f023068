"""Batched beam search and greedy search (image-free) over a model with the TranslationModel search interface:
`encode(src) -> EncoderOutput` (with `index_select`), `new_decoder_state()` (with `reorder`) and
`decode(tgt_in [N, 1], enc, state) -> logits [N, 1, V]`.

Every sentence of the batch and every beam is one row of [B*beam, ...] tensors. The encoder runs once per
batch; the first decoder step runs once per sentence (all its beams are still identical), after which the
decoder state is expanded to the beams. A state with `expand_beams`/`select_sentences` (ikd's DecoderState)
keeps the encoder side per sentence, so the encoder output is never copied per beam; other states get every
row, encoder output included (`index_select`). The decoder state caches past keys/values and is reordered
per step, so nothing is recomputed; each step's logits come in a buffer the state reuses and are turned into
log-probabilities in place. Sentences that are done leave the active batch.

Conventions are fairseq's (the paper's decoder): the decoder starts from EOS; the score of a hypothesis is
sum(log p) / len**lenpen with len counting the final EOS; a sentence is done once it has `beam` finished
hypotheses or reaches its maximum length, max_len = a * src_len + b (src_len counts the source EOS),
capped so that the decoder never sees more than `max_positions` positions. At least one token precedes EOS;
<pad> and <s> are never generated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

NEG_INF = float("-inf")
DEFAULT_MAX_POSITIONS = 1024


def usable_tokens(vocab_size: int, pad: int = 1, bos: int = 0, eos: int = 2) -> int:
    """How many tokens a hypothesis can start with: all but <pad>, <s> and </s>."""
    return vocab_size - len({pad, bos, eos})


def capped_beam(beam: int, vocab_size: int | None, pad: int = 1, bos: int = 0, eos: int = 2) -> int:
    """The beam search runs with: at most the tokens a hypothesis can start with (fairseq caps it at the
    vocabulary size too). A wider beam could not fill its first step, and a short length cap would then leave
    fewer than `beam` distinct hypotheses."""
    if vocab_size is None:
        return beam
    return max(1, min(beam, usable_tokens(vocab_size, pad, bos, eos)))


@dataclass
class Hypothesis:
    """tokens: target ids without EOS; score: sum of log-probabilities (EOS included) / (len + 1)**lenpen."""

    tokens: list[int]
    score: float


def model_max_positions(model, max_positions: int | None = None) -> int:
    if max_positions is not None:
        return max_positions
    return int(getattr(model, "max_positions", None) or DEFAULT_MAX_POSITIONS)


def max_lengths(src: Tensor, pad: int, max_len_a: float, max_len_b: int, max_positions: int) -> Tensor:
    """Per-sentence cap on generated tokens (EOS excluded) -> [B] int64 on src's device.

    int(a * src_len + b) as fairseq, at least 1, and at most max_positions - 1 (the decoder reads EOS plus
    every generated token but the last)."""
    src_len = src.ne(pad).sum(dim=1).to(torch.float64)
    cap = torch.floor(max_len_a * src_len + max_len_b).to(torch.int64)
    return cap.clamp(min=1, max=max(1, max_positions - 1))


def search_view(enc):
    """The encoder output without what decoding does not read (the generated feature map m [B, C, H, W] and
    attention maps), so that expanding it to B*beam rows copies only states and masks."""
    if dataclasses.is_dataclass(enc):
        unused = {name: None for name in ("m", "attention") if getattr(enc, name, None) is not None}
        if unused:
            return dataclasses.replace(enc, **unused)
    return enc


def new_search_state(model):
    """The model's decoder state, told (when it can be) to return each step's logits in a reused buffer."""
    state = model.new_decoder_state()
    if hasattr(state, "reuse_logits"):
        state.reuse_logits = True
    return state


def reorder_within_sentences(state, rows: Tensor) -> None:
    """Beam reordering that keeps every sentence's rows in its own block: only the per-step caches (self-
    attention keys/values) change. Per-sentence caches (cross-attention keys/values, the source mask) are
    equal across a sentence's beams, so copying them would be wasted work (most of a step's memory traffic
    for the multimodal encoder's T+P states). Other state types fall back to their full `reorder`."""
    fast = getattr(state, "reorder_beams", None)
    if fast is not None:
        fast(rows)
    else:
        state.reorder(rows)


def _mask_specials(lprobs: Tensor, step: int, pad: int, bos: int, eos: int, force: Tensor | None) -> Tensor:
    """In place on scores [N, V]: <pad>/<s> never; EOS not as the first token; rows in `force` [N] bool:
    EOS only (their own EOS score is kept, as fairseq: the others are masked, not renormalised)."""
    lprobs[:, pad] = NEG_INF
    lprobs[:, bos] = NEG_INF
    if step == 0:
        lprobs[:, eos] = NEG_INF
    elif force is not None:
        eos_col = lprobs[:, eos].clone()
        lprobs.masked_fill_(force[:, None], NEG_INF)
        lprobs[:, eos] = eos_col
    return lprobs


def row_topk(x: Tensor, k: int, groups_of: int = 8) -> tuple[Tensor, Tensor]:
    """The k largest values of each row of x [N, V] and their columns, as x.topk(k, dim=1).

    Two stages, for large V: the maxima of strided column groups (column j + i*G, i < groups_of, in group j)
    in one vectorised pass, then the exact top k among the columns of the k groups with the largest maxima
    (a row's top k lie in at most k groups, and those groups' maxima are among the k largest). Ties among
    equal values may come in another order than topk's."""
    n, v = x.shape
    g = v // groups_of
    if v % groups_of or g < 4 * k:
        return x.topk(k, dim=1)
    best_groups = x.view(n, groups_of, g).amax(dim=1).topk(k, dim=1).indices  # [N, k]
    offsets = torch.arange(0, v, g, device=x.device)
    cols = (best_groups[:, None, :] + offsets[None, :, None]).view(n, groups_of * k)
    values, pos = x.gather(1, cols).topk(k, dim=1)
    return values, cols.gather(1, pos)


@torch.no_grad()
def beam_search(
    model,
    src: Tensor,
    beam: int = 5,
    lenpen: float = 1.0,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    nbest: int = 1,
    *,
    pad: int = 1,
    bos: int = 0,
    eos: int = 2,
    max_positions: int | None = None,
) -> list[list[Hypothesis]]:
    """src [B, T] int64 right-padded (EOS included) -> for each sentence its `nbest` best hypotheses, best
    first. Each row of the batch is searched exactly as it would be alone. A beam wider than the tokens a
    hypothesis can start with (`capped_beam`, from the model's `vocab_size`) is narrowed to them, and nbest
    with it."""
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if not 1 <= nbest <= beam:
        raise ValueError(f"nbest must be between 1 and the beam size {beam}, got {nbest}")
    device = src.device
    k = capped_beam(beam, getattr(model, "vocab_size", None), pad, bos, eos)
    nbest = min(nbest, k)
    n_sent = src.size(0)
    if n_sent == 0:
        return []
    maxlen = max_lengths(src, pad, max_len_a, max_len_b, model_max_positions(model, max_positions))
    maxlen_cpu = maxlen.cpu()
    horizon = int(maxlen_cpu.max())

    enc = search_view(model.encode(src))
    state = new_search_state(model)
    # States that keep the encoder side per sentence (DecoderState) are expanded and pruned per sentence;
    # others get every row, encoder output included.
    shared = hasattr(state, "expand_beams") and hasattr(state, "select_sentences")
    expand = torch.arange(n_sent, device=device).repeat_interleave(k)

    # Finished hypotheses per original sentence; slot k is a dump for candidates that are not kept,
    # so that finalisation needs no host sync.
    fin_tokens = torch.full((n_sent, k + 1, horizon + 1), pad, dtype=torch.long, device=device)
    fin_len = torch.zeros((n_sent, k + 1), dtype=torch.long, device=device)
    fin_scores = torch.full((n_sent, k + 1), NEG_INF, device=device)
    fin_count = torch.zeros(n_sent, dtype=torch.long, device=device)

    sent = torch.arange(n_sent, device=device)  # original index of each active sentence
    tokens = torch.full((n_sent * k, 1), eos, dtype=torch.long, device=device)
    scores = torch.zeros(n_sent * k, device=device)
    beam_ids = torch.arange(k, device=device)
    row_base_all = torch.arange(n_sent, device=device)[:, None] * k  # first row of each active sentence: [:n_act]
    never_first, never = torch.tensor([pad, bos, eos], device=device), torch.tensor([pad, bos], device=device)
    first_capped = int(maxlen_cpu.min())
    # On a CPU a host check costs nothing: steps skip the finalisation when no EOS is among a sentence's best k.
    # Elsewhere every step runs it (one host sync per step).
    check = device.type == "cpu"

    for step in range(horizon + 1):
        n_act = sent.numel()
        if step == 0:
            # The beams of a sentence are identical before the first token: decode and rank one row per
            # sentence (its cross-attention keys/values are computed once), then expand the state to k rows.
            logits = model.decode(tokens[::k, -1:], enc, state)[:, -1, :].float()
        else:
            logits = model.decode(tokens[:, -1:], enc, state)[:, -1, :].float()
        vocab = logits.size(-1)
        lprobs = torch.log_softmax(logits, dim=-1, out=logits)  # in place: no new [N, V] tensor per step
        lprobs.index_fill_(1, never_first if step == 0 else never, NEG_INF)
        if step > 0 and step >= first_capped:
            # at its length cap a sentence's rows may only end: EOS keeps its score, the others are masked
            force = (maxlen <= step).repeat_interleave(k)
            eos_col = lprobs[:, eos].clone()
            lprobs.masked_fill_(force[:, None], NEG_INF)
            lprobs[:, eos] = eos_col

        # The best 2k of a sentence's k*V candidates are among the best 2k of each beam's row (a row's
        # candidates share its score): rank rows first, then the k*2k survivors, not all k*V.
        per_row = min(2 * k, vocab)
        row_lp, row_tok = row_topk(lprobs, per_row)
        if step == 0:  # one row per sentence, score 0; EOS cannot come first
            n_cand = per_row
            cand_scores, cand_tok = row_lp, row_tok
            cand_beam = torch.zeros_like(row_tok)
        else:
            n_cand = min(2 * k, k * per_row)
            cand_scores, cand_idx = (row_lp + scores[:, None]).view(n_act, k * per_row).topk(n_cand, dim=1)
            cand_beam = torch.div(cand_idx, per_row, rounding_mode="floor")
            cand_tok = row_tok.view(n_act, k * per_row).gather(1, cand_idx)
        cand_eos = cand_tok.eq(eos)
        row_base = row_base_all[:n_act]

        # Finalise EOS candidates among the best k (fairseq), first come first served, at most k per sentence.
        top_scores = cand_scores[:, :k]
        fin_mask = cand_eos[:, :k] & top_scores.gt(NEG_INF)
        if not check or bool(fin_mask.any()):
            count = fin_count.index_select(0, sent)
            slot = count[:, None] + fin_mask.long().cumsum(dim=1) - 1
            accept = fin_mask & slot.lt(k)
            slot = torch.where(accept, slot, torch.full_like(slot, k))
            sent_rows = sent[:, None].expand(-1, k)
            if step > 0:
                prefix = tokens.index_select(0, (row_base + cand_beam[:, :k]).view(-1))[:, 1:]
                fin_tokens[sent_rows.reshape(-1), slot.view(-1), :step] = prefix
            fin_len[sent_rows, slot] = step
            fin_scores[sent_rows, slot] = top_scores / float(step + 1) ** lenpen
            count = count + accept.sum(dim=1)
            fin_count.index_copy_(0, sent, count)
            done = count.ge(k)
            if step >= first_capped:
                done |= maxlen.le(step)
        else:  # nothing finished: only the length cap ends a sentence
            done = maxlen.le(step) if step >= first_capped else None

        # The next beams: the best k candidates that do not end in EOS.
        if check and not bool(cand_eos.any()):
            new_scores, new_tok, rows = top_scores, cand_tok[:, :k], row_base + cand_beam[:, :k]
        else:
            order = cand_eos.long() * n_cand + torch.arange(n_cand, device=device)
            pick = order.topk(k, dim=1, largest=False).indices
            new_scores = cand_scores.gather(1, pick).masked_fill(cand_eos.gather(1, pick), NEG_INF)
            new_tok = cand_tok.gather(1, pick)
            rows = row_base + cand_beam.gather(1, pick)

        done_cpu = None if done is None else done.cpu()  # the one host sync per step
        if done_cpu is not None and bool(done_cpu.all()):
            break
        if step == 0:
            # every row of a sentence holds the same state: expanding it is the reorder (no sentence ends at
            # step 0: no EOS is allowed and every cap is at least 1)
            if shared:
                state.expand_beams(k)
            else:
                state.reorder(expand)
                enc = enc.index_select(expand)
            rows = rows.view(-1)
        elif done_cpu is not None and bool(done_cpu.any()):
            keep_cpu = (~done_cpu).nonzero().squeeze(1)
            keep = keep_cpu.to(device)
            rows, new_tok, new_scores = rows[keep].view(-1), new_tok[keep], new_scores[keep]
            sent = sent[keep]
            maxlen, maxlen_cpu = maxlen[keep], maxlen_cpu[keep_cpu]
            if shared:
                state.select_sentences(keep, rows)
            else:
                enc = enc.index_select((keep[:, None] * k + beam_ids).view(-1))
                state.reorder(rows)
        else:
            rows = rows.view(-1)
            reorder_within_sentences(state, rows)
        tokens = torch.cat([tokens.index_select(0, rows), new_tok.reshape(-1, 1)], dim=1)
        scores = new_scores.reshape(-1)

    return _collect(fin_tokens[:, :k].cpu(), fin_len[:, :k].cpu(), fin_scores[:, :k].cpu(), nbest)


def _collect(tokens: Tensor, lengths: Tensor, scores: Tensor, nbest: int) -> list[list[Hypothesis]]:
    out = []
    for toks, lens, scs in zip(tokens.tolist(), lengths.tolist(), scores.tolist()):
        hyps = [Hypothesis(t[:n], s) for t, n, s in zip(toks, lens, scs) if s != NEG_INF]
        hyps.sort(key=lambda h: -h.score)  # stable: ties keep the order they finished in
        out.append(hyps[:nbest])
    return out


@torch.no_grad()
def greedy_search(
    model,
    src: Tensor,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    lenpen: float = 1.0,
    *,
    pad: int = 1,
    bos: int = 0,
    eos: int = 2,
    max_positions: int | None = None,
) -> list[list[Hypothesis]]:
    """src [B, T] -> for each sentence its greedy output (the same as beam 1) as one Hypothesis, scored as beam
    search scores: sum of log-probabilities (EOS included) / (len + 1)**lenpen."""
    device = src.device
    n_sent = src.size(0)
    if n_sent == 0:
        return []
    maxlen = max_lengths(src, pad, max_len_a, max_len_b, model_max_positions(model, max_positions))
    maxlen_cpu = maxlen.cpu()
    horizon = int(maxlen_cpu.max())
    enc = search_view(model.encode(src))
    state = new_search_state(model)
    out = torch.full((n_sent, horizon + 1), eos, dtype=torch.long, device=device)
    total = torch.zeros(n_sent, device=device)
    sent = torch.arange(n_sent, device=device)
    last = torch.full((n_sent, 1), eos, dtype=torch.long, device=device)
    for step in range(horizon + 1):
        logits = model.decode(last, enc, state)[:, -1, :].float()
        lprobs = torch.log_softmax(logits, dim=-1, out=logits)
        force = None
        if step > 0 and step >= int(maxlen_cpu.min()):
            force = maxlen.le(step)
        tok = _mask_specials(lprobs, step, pad, bos, eos, force).argmax(dim=-1)
        out[sent, step] = tok
        total.index_add_(0, sent, lprobs.gather(1, tok[:, None]).squeeze(1))
        ended = tok.eq(eos)
        ended_cpu = ended.cpu()
        if bool(ended_cpu.all()):
            break
        if bool(ended_cpu.any()):
            keep_cpu = (~ended_cpu).nonzero().squeeze(1)
            keep = keep_cpu.to(device)
            sent, tok, maxlen, maxlen_cpu = sent[keep], tok[keep], maxlen[keep], maxlen_cpu[keep_cpu]
            if hasattr(state, "select_sentences"):
                state.select_sentences(keep, keep)
            else:
                enc = enc.index_select(keep)
                state.reorder(keep)
        last = tok[:, None]
    result = []
    for row, score in zip(out.cpu().tolist(), total.cpu().tolist()):
        tokens = row[: row.index(eos)] if eos in row else row
        result.append([Hypothesis(tokens, score / float(len(tokens) + 1) ** lenpen)])
    return result
