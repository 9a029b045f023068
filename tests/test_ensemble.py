"""Ensembles: a model with itself is the model; two models decode with log of the mean probability (hand check on
a tiny vocabulary); `ikd translate -c A -c B`; different vocabularies are an error naming both files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from test_search import EOS, make_src, tiny_model

from ikd.checkpoint import save_checkpoint
from ikd.data.vocab import Vocabulary
from ikd.errors import IkdError
from ikd.inference.ensemble import Ensemble, load_ensemble
from ikd.inference.search import beam_search, greedy_search


def test_an_ensemble_of_a_model_with_itself_is_the_model() -> None:
    model = tiny_model(12, scale=2.0)
    src = make_src([3, 8, 5, 6], 12, seed=3)
    single = beam_search(model, src, beam=3, max_len_a=1.0, max_len_b=2, nbest=3)
    double = beam_search(Ensemble([model, model]), src, beam=3, max_len_a=1.0, max_len_b=2, nbest=3)
    assert [[h.tokens for h in x] for x in double] == [[h.tokens for h in x] for x in single]
    for a, b in zip(single, double):
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
    greedy = greedy_search(model, src, 1.0, 2)
    greedy_double = greedy_search(Ensemble([model, model]), src, 1.0, 2)
    assert [g[0].tokens for g in greedy_double] == [g[0].tokens for g in greedy]
    assert [g[0].score for g in greedy_double] == pytest.approx([g[0].score for g in greedy], abs=1e-5)


def test_two_models_decode_with_the_log_of_the_mean_probability() -> None:
    vocab = 6
    a, b = tiny_model(vocab, seed=1, scale=3.0), tiny_model(vocab, seed=2, scale=3.0)
    ens = Ensemble([a, b])
    src = make_src([4], vocab, seed=0)
    tgt = torch.tensor([[EOS, 4, 5]])
    with torch.no_grad():
        pa = torch.softmax(a.decode(tgt, a.encode(src)), dim=-1)
        pb = torch.softmax(b.decode(tgt, b.encode(src)), dim=-1)
        got = ens.decode(tgt, ens.encode(src))
    # by hand, one entry: log((p_a + p_b) / 2)
    assert got[0, 2, 3].item() == pytest.approx(math.log((pa[0, 2, 3].item() + pb[0, 2, 3].item()) / 2), abs=1e-5)
    assert torch.allclose(got, torch.log((pa + pb) / 2), atol=1e-5)
    assert torch.allclose(got.exp().sum(-1), torch.ones(1, 3), atol=1e-5)  # a distribution
    # search: every hypothesis' score is the length-normalised sum of these log-mean probabilities
    hyps = beam_search(ens, src, beam=3, max_len_a=0, max_len_b=3, nbest=3)[0]
    alone = [beam_search(m, src, beam=3, max_len_a=0, max_len_b=3, nbest=3)[0] for m in (a, b)]
    assert [h.score for h in hyps] != [h.score for h in alone[0]] and [h.score for h in hyps] != [
        h.score for h in alone[1]
    ]
    for h in hyps:
        seq = torch.tensor([[EOS, *h.tokens]])
        out = torch.tensor(h.tokens + [EOS])
        with torch.no_grad():
            qa = torch.softmax(a.decode(seq, a.encode(src)), dim=-1)[0]
            qb = torch.softmax(b.decode(seq, b.encode(src)), dim=-1)[0]
        logp = torch.log((qa + qb) / 2).gather(1, out[:, None]).sum().item()
        assert h.score == pytest.approx(logp / len(out), abs=1e-4)


def _checkpoint(path: Path, tokens: list[str], seed: int) -> Path:
    from test_translate import tiny_recipe

    from ikd.model import build_translator

    torch.manual_seed(seed)
    r = tiny_recipe()
    model = build_translator(r.model, len(tokens), 1)
    payload = {"model": model.state_dict(), "recipe": r.to_dict(), "vocab": tokens, "bpe_codes": ""}
    save_checkpoint({**payload, "src": "en", "tgt": "de", "epoch": 0, "updates": 0}, path)
    return path


def test_cli_ensemble_and_vocabulary_mismatch(tmp_path: Path, monkeypatch, capsys) -> None:
    from test_translate import run_stdin

    words = ["a", "man", "dog", "runs", "the", "red", "ball", "on"]
    tokens = Vocabulary.build([words], padding_factor=1).tokens
    a = _checkpoint(tmp_path / "a.pt", tokens, seed=1)
    b = _checkpoint(tmp_path / "b.pt", tokens, seed=2)
    lines = ["a man runs", "the red dog on the ball"]
    args = ["--tokenized", "--max-len-a", "1", "--max-len-b", "1", "-q"]
    code, out, _ = run_stdin(monkeypatch, capsys, lines, ["-c", str(a), "-c", str(b), *args])
    assert code == 0 and len(out) == 2
    loaded = load_ensemble([a, b], "cpu")
    assert isinstance(loaded.model, Ensemble) and len(loaded.model.models) == 2
    code, same, _ = run_stdin(monkeypatch, capsys, lines, ["-c", str(a), "-c", str(a), *args])
    code, single, _ = run_stdin(monkeypatch, capsys, lines, ["-c", str(a), *args])
    assert same == single
    other = _checkpoint(tmp_path / "other.pt", tokens + ["cat"], seed=3)
    with pytest.raises(IkdError, match="other.pt: its vocabulary .* differs from that of .*a.pt"):
        load_ensemble([a, other], "cpu")
    code, _, err = run_stdin(monkeypatch, capsys, lines, ["-c", str(a), "-c", str(other), *args])
    assert code == 1 and "other.pt" in err and "a.pt" in err
