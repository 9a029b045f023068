"""The batched search against a plain reference: fairseq's beam search written out for one sentence, every
prefix decoded again from scratch (no cache, no batching, no reordering), candidates ranked with Python's
sort. Compared on small random models: 1-best and n-best tokens and scores for beam 1 and 5, batched and one
sentence at a time, long and short sources mixed in one batch."""

from __future__ import annotations

import pytest
import torch
from test_search import BOS, EOS, PAD, make_src, tiny_model

from ikd.inference.search import Hypothesis, beam_search, greedy_search, max_lengths


def reference_beam_search(model, src: torch.Tensor, beam: int, lenpen: float, max_len: int) -> list[Hypothesis]:
    """src [T] (EOS included, no padding) -> every finished hypothesis, best first (ties: finishing order).

    At each step every live beam is extended by every token (never <pad>/<s>; not </s> first; only </s> at
    max_len); of the 2*beam best candidates, those among the first `beam` that end in </s> are finished (at most
    `beam` in all), and the first `beam` others become the next beams. Done at `beam` finished hypotheses or
    at max_len. Score: sum of log-probabilities / (tokens + 1)**lenpen."""
    with torch.no_grad():
        enc = model.encode(src[None])
        beams: list[tuple[tuple[int, ...], float]] = [((), 0.0)]
        finished: list[Hypothesis] = []
        for step in range(max_len + 1):
            tgt_in = torch.tensor([[EOS, *tokens] for tokens, _ in beams])
            rows = enc.index_select(torch.zeros(len(beams), dtype=torch.long))
            lprobs = torch.log_softmax(model.decode(tgt_in, rows)[:, -1].float(), dim=-1).tolist()
            candidates = []
            for b, (_, score) in enumerate(beams):
                for token, lp in enumerate(lprobs[b]):
                    if token in (PAD, BOS) or (step == 0 and token == EOS) or (step == max_len and token != EOS):
                        continue
                    candidates.append((score + lp, b, token))
            candidates.sort(key=lambda c: -c[0])
            top = candidates[: 2 * beam]
            for score, b, token in top[:beam]:
                if token == EOS and len(finished) < beam:
                    finished.append(Hypothesis(list(beams[b][0]), score / (step + 1) ** lenpen))
            if len(finished) >= beam or step == max_len:
                break
            beams = [(beams[b][0] + (token,), score) for score, b, token in top if token != EOS][:beam]
        finished.sort(key=lambda h: -h.score)
        return finished


LENGTHS = [2, 17, 5, 9, 3, 14, 7, 2, 11, 4]  # long and short sources in one batch


def ending_model(vocab: int = 24):
    """A random model whose </s> is likely enough that some outputs end by themselves and others at the cap."""
    model = tiny_model(vocab, seed=6, scale=2.5)
    with torch.no_grad():
        model.embed.embed.weight[EOS] *= 2.0
    return model


def assert_same(got: list[Hypothesis], want: list[Hypothesis]) -> None:
    assert [h.tokens for h in got] == [h.tokens for h in want]
    assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)


@pytest.mark.parametrize("beam,nbest,lenpen", [(1, 1, 1.0), (5, 1, 1.0), (5, 5, 1.0), (5, 3, 0.6), (3, 2, 2.0)])
def test_batched_search_equals_the_reference(beam: int, nbest: int, lenpen: float) -> None:
    vocab = 24
    model = ending_model(vocab)
    src = make_src(LENGTHS, vocab, seed=7)
    a, b = 1.0, 2
    caps = max_lengths(src, PAD, a, b, 1024).tolist()
    batched = beam_search(model, src, beam=beam, lenpen=lenpen, max_len_a=a, max_len_b=b, nbest=nbest)
    ended_early = 0
    for i, n in enumerate(LENGTHS):
        want = reference_beam_search(model, src[i, :n], beam, lenpen, caps[i])[:nbest]
        assert len(want) == nbest
        assert_same(batched[i], want)
        alone = beam_search(model, src[i : i + 1, :n], beam=beam, lenpen=lenpen, max_len_a=a, max_len_b=b, nbest=nbest)
        assert_same(alone[0], want)
        ended_early += len(want[0].tokens) < caps[i]
    assert 3 <= ended_early < len(LENGTHS)  # some outputs end by themselves, others at the cap


def test_greedy_search_equals_the_reference_beam_one_with_its_score() -> None:
    vocab = 24
    model = ending_model(vocab)
    src = make_src(LENGTHS, vocab, seed=7)
    caps = max_lengths(src, PAD, 1.0, 2, 1024).tolist()
    for lenpen in (1.0, 0.5):
        greedy = greedy_search(model, src, max_len_a=1.0, max_len_b=2, lenpen=lenpen)
        ended_early = 0
        for i, n in enumerate(LENGTHS):
            want = reference_beam_search(model, src[i, :n], 1, lenpen, caps[i])[:1]
            assert_same(greedy[i], want)
            ended_early += len(want[0].tokens) < caps[i]
        assert 3 <= ended_early < len(LENGTHS)
