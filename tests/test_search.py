"""Beam and greedy search: exhaustive-search equality on a tiny model, beam 1 = greedy, batched = one at a time,
length rules, and the incremental decoding contract (encoder once, one new token per decoder call)."""

from __future__ import annotations

import itertools

import pytest
import torch

from ikd.inference.search import Hypothesis, beam_search, capped_beam, greedy_search, max_lengths
from ikd.model import build_translator
from ikd.recipe import Recipe

BOS, PAD, EOS, UNK = 0, 1, 2, 3


def greedy_tokens(model, src: torch.Tensor, *args, **kw) -> list[list[int]]:
    return [h[0].tokens for h in greedy_search(model, src, *args, **kw)]


def tiny_model(vocab: int, seed: int = 0, layers: int = 2, scale: float = 1.0):
    torch.manual_seed(seed)
    r = Recipe()
    r.model.d_model, r.model.heads, r.model.ffn = 16, 2, 32
    r.model.encoder_layers = r.model.decoder_layers = layers
    r.model.dropout = 0.0
    r.model.text_only = True
    model = build_translator(r.model, vocab, PAD).eval()
    with torch.no_grad():  # sharper distributions than the default init, so that search choices matter
        model.embed.embed.weight.mul_(scale)
    return model


def make_src(lengths: list[int], vocab: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    src = torch.full((len(lengths), max(lengths)), PAD, dtype=torch.long)
    for i, n in enumerate(lengths):
        src[i, : n - 1] = torch.randint(4, vocab, (n - 1,), generator=g)
        src[i, n - 1] = EOS
    return src


def sequence_logprob(model, src: torch.Tensor, seqs: list[tuple[int, ...]]) -> torch.Tensor:
    """Full (non-incremental) scoring: sum of log p(y_t) plus log p(EOS) after the last token, per sequence."""
    n = len(seqs[0])
    assert all(len(s) == n for s in seqs)
    tgt = torch.tensor(seqs, dtype=torch.long)
    tgt_in = torch.cat([torch.full((len(seqs), 1), EOS), tgt], dim=1)
    tgt_out = torch.cat([tgt, torch.full((len(seqs), 1), EOS)], dim=1)
    enc = model.encode(src.expand(len(seqs), -1))
    lprobs = torch.log_softmax(model.decode(tgt_in, enc).float(), dim=-1)
    return lprobs.gather(2, tgt_out[..., None]).squeeze(2).sum(dim=1)


def exhaustive(model, src: torch.Tensor, max_len: int, lenpen: float, vocab: int) -> list[tuple[float, list[int]]]:
    """Every sequence of 1..max_len generatable tokens (not <s>, <pad>, </s>) followed by EOS, best first."""
    allowed = [t for t in range(vocab) if t not in (BOS, PAD, EOS)]
    scored = []
    with torch.no_grad():
        for n in range(1, max_len + 1):
            seqs = list(itertools.product(allowed, repeat=n))
            logp = sequence_logprob(model, src, seqs)
            scored += [(lp / (n + 1) ** lenpen, list(s)) for lp, s in zip(logp.tolist(), seqs)]
    scored.sort(key=lambda x: -x[0])
    return scored


class WiderVocabulary:
    """The model with `extra` more output tokens whose logits are -1e4: a beam of 800 then fits the vocabulary
    (search narrows a beam to the tokens a hypothesis can start with), and no hypothesis through an extra token
    can rank among the real ones (exp(-1e4 - max) is 0 in float32: the real tokens keep their probabilities; the
    model reads an extra token as <unk>)."""

    def __init__(self, model, extra: int) -> None:
        self.model, self.extra = model, extra
        self.vocab_size = model.vocab_size + extra

    def encode(self, src):
        return self.model.encode(src)

    def new_decoder_state(self):
        return self.model.new_decoder_state()

    def decode(self, tgt_in, enc, state):
        logits = self.model.decode(tgt_in.masked_fill(tgt_in >= self.model.vocab_size, UNK), enc, state)
        return torch.cat([logits, logits.new_full((*logits.shape[:-1], self.extra), -1e4)], dim=-1)


@pytest.mark.parametrize("lenpen", [0.0, 1.0, 2.0])
def test_wide_beam_equals_exhaustive_search(lenpen: float) -> None:
    vocab, max_len = 8, 4
    model = tiny_model(vocab, scale=3.0)
    src = make_src([5], vocab)
    truth = exhaustive(model, src, max_len, lenpen, vocab)
    assert len(truth) == 5 + 25 + 125 + 625
    wide = WiderVocabulary(model, 800)
    hyps = beam_search(wide, src, beam=800, lenpen=lenpen, max_len_a=0, max_len_b=max_len, nbest=5)[0]
    assert [h.tokens for h in hyps] == [s for _, s in truth[:5]]
    assert [h.score for h in hyps] == pytest.approx([sc for sc, _ in truth[:5]], abs=1e-4)


def test_narrow_beam_never_beats_exhaustive_and_is_a_real_sequence_score() -> None:
    vocab, max_len = 8, 4
    model = tiny_model(vocab, scale=3.0)
    for seed in range(3):
        src = make_src([4 + seed], vocab, seed=seed)
        truth = {tuple(s): sc for sc, s in exhaustive(model, src, max_len, 1.0, vocab)}
        best = max(truth.values())
        for beam in (1, 2, 5):
            h = beam_search(model, src, beam=beam, max_len_a=0, max_len_b=max_len)[0][0]
            assert h.score <= best + 1e-5
            assert h.score == pytest.approx(truth[tuple(h.tokens)], abs=1e-4)


def test_beam_one_equals_greedy() -> None:
    vocab = 12
    model = tiny_model(vocab, scale=2.0)
    src = make_src([3, 9, 6, 2, 12, 5, 7, 4], vocab, seed=1)
    greedy = greedy_search(model, src, max_len_a=1.0, max_len_b=3)
    beam1 = beam_search(model, src, beam=1, max_len_a=1.0, max_len_b=3)
    assert [h[0].tokens for h in beam1] == [g[0].tokens for g in greedy]
    assert [h[0].score for h in beam1] == pytest.approx([g[0].score for g in greedy], abs=1e-5)
    assert len({len(g[0].tokens) for g in greedy}) > 1  # sentences finish at different steps (exercises dropping)


@pytest.mark.parametrize("beam", [1, 3])
def test_batched_equals_one_at_a_time(beam: int) -> None:
    vocab = 16
    model = tiny_model(vocab, scale=2.0)
    lengths = [3, 11, 6, 2, 9, 7, 4, 10]
    src = make_src(lengths, vocab, seed=2)
    batched = beam_search(model, src, beam=beam, max_len_a=1.2, max_len_b=2, nbest=beam)
    greedy = greedy_tokens(model, src, max_len_a=1.2, max_len_b=2)
    for i, n in enumerate(lengths):
        alone = beam_search(model, src[i : i + 1, :n], beam=beam, max_len_a=1.2, max_len_b=2, nbest=beam)[0]
        assert [h.tokens for h in batched[i]] == [h.tokens for h in alone]
        assert [h.score for h in batched[i]] == pytest.approx([h.score for h in alone], abs=1e-4)
        assert greedy[i] == greedy_tokens(model, src[i : i + 1, :n], max_len_a=1.2, max_len_b=2)[0]


def test_a_beam_wider_than_the_usable_tokens_is_narrowed_to_them() -> None:
    vocab = 12  # 9 tokens can start a hypothesis (not <s>, <pad>, </s>)
    assert capped_beam(20, vocab) == 9 and capped_beam(5, vocab) == 5 and capped_beam(20, None) == 20
    model = tiny_model(vocab, scale=2.0)
    src = make_src([4, 6], vocab, seed=3)
    for max_len in (1, 3):
        wide = beam_search(model, src, beam=20, max_len_a=0, max_len_b=max_len, nbest=20)
        exact = beam_search(model, src, beam=9, max_len_a=0, max_len_b=max_len, nbest=9)
        assert [len(h) for h in wide] == [9, 9]  # as many as the beam it ran with, never fewer
        assert [[h.tokens for h in x] for x in wide] == [[h.tokens for h in x] for x in exact]
    one_token = beam_search(model, src, beam=20, max_len_a=0, max_len_b=1, nbest=20)[0]
    assert sorted(h.tokens[0] for h in one_token) == list(range(3, vocab))


def test_lengths_respect_per_sentence_caps_and_model_positions() -> None:
    src = make_src([3, 10], 10)
    assert max_lengths(src, PAD, 1.5, 10, 1024).tolist() == [14, 25]
    assert max_lengths(src, PAD, 0, 200, 30).tolist() == [29, 29]
    assert max_lengths(src, PAD, 0, 0, 1024).tolist() == [1, 1]  # at least one token
    model = tiny_model(10)
    hyps = beam_search(model, src, beam=2, max_len_a=1.0, max_len_b=0, nbest=2)
    for h, n in zip(hyps, [3, 10]):
        assert len(h) == 2
        assert all(1 <= len(x.tokens) <= n for x in h)
        assert all(t not in (BOS, PAD, EOS) for x in h for t in x.tokens)
        assert h[0].score >= h[1].score
    capped = beam_search(model, src, beam=2, max_len_a=0, max_len_b=200, max_positions=5)
    assert all(len(h[0].tokens) <= 4 for h in capped)
    assert all(len(g) <= 4 for g in greedy_tokens(model, src, max_len_a=0, max_len_b=200, max_positions=5))


def test_encoder_runs_once_and_decoder_sees_one_new_token_per_step() -> None:
    model = tiny_model(10)
    calls = {"encode": 0, "decode_widths": set()}
    encode, decode = model.encode, model.decode

    def counting_encode(src, **kw):
        calls["encode"] += 1
        return encode(src, **kw)

    def checking_decode(tgt_in, enc, state=None):
        assert state is not None
        calls["decode_widths"].add(tgt_in.size(1))
        return decode(tgt_in, enc, state)

    model.encode, model.decode = counting_encode, checking_decode
    src = make_src([4, 7, 5], 10)
    beam_search(model, src, beam=4, max_len_a=1, max_len_b=5)
    greedy_search(model, src, max_len_a=1, max_len_b=5)
    assert calls == {"encode": 2, "decode_widths": {1}}


def test_argument_checks_and_empty_batch() -> None:
    model = tiny_model(10)
    src = make_src([4], 10)
    with pytest.raises(ValueError, match="nbest"):
        beam_search(model, src, beam=2, nbest=3)
    with pytest.raises(ValueError, match="beam"):
        beam_search(model, src, beam=0)
    empty = src[:0]
    assert beam_search(model, empty) == [] and greedy_search(model, empty) == []
    assert isinstance(beam_search(model, src, beam=2)[0][0], Hypothesis)


def test_row_topk_equals_topk() -> None:
    from ikd.inference.search import row_topk

    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 96, generator=g)
    x[3, :] = float("-inf")
    x[3, 40] = 0.0
    values, cols = row_topk(x, 3)
    ref = x.topk(3, dim=1)
    assert torch.equal(values, ref.values)
    assert torch.equal(x.gather(1, cols), values)
    assert torch.equal(cols[[0, 1, 2, 4, 5, 6]], ref.indices[[0, 1, 2, 4, 5, 6]])
    assert cols[3, 0] == 40


class _RowsOnly:
    """A model whose decoder state only offers the generic `reorder`: search then expands and prunes every row,
    encoder output included (the path of other models)."""

    def __init__(self, model) -> None:
        self.model = model

    def encode(self, src):
        return self.model.encode(src)

    def new_decoder_state(self):
        inner = self.model.new_decoder_state()

        class State:
            def reorder(self, index):
                inner.reorder(index)

        state = State()
        state.inner = inner
        return state

    def decode(self, tgt_in, enc, state):
        return self.model.decode(tgt_in, enc, state.inner)


@pytest.mark.parametrize("beam", [1, 5])
def test_per_sentence_cross_attention_equals_per_row_search(beam: int) -> None:
    vocab = 16
    model = tiny_model(vocab, scale=2.0)
    src = make_src([3, 11, 6, 2, 9, 7, 4, 10], vocab, seed=4)
    fast = beam_search(model, src, beam=beam, max_len_a=1.2, max_len_b=2, nbest=beam)
    rows = beam_search(_RowsOnly(model), src, beam=beam, max_len_a=1.2, max_len_b=2, nbest=beam)
    assert [[h.tokens for h in x] for x in fast] == [[h.tokens for h in x] for x in rows]
    for a, b in zip(fast, rows):
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
    assert greedy_tokens(model, src, 1.2, 2) == greedy_tokens(_RowsOnly(model), src, 1.2, 2)
