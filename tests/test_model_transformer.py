"""Transformer-Tiny backbone: parameter count, embeddings, masking, incremental decoding (text-only model)."""

from __future__ import annotations

import math

import pytest
import torch

from ikd.model import DecoderState, TranslationModel, build_translator
from ikd.model.transformer import Attention, sinusoidal_table
from ikd.recipe import Recipe

PAD = 1
EOS = 2


def build_model(r: Recipe, vocab: int) -> TranslationModel:
    return build_translator(r.model, vocab, PAD)


def tiny_recipe(norm: str = "pre", **model: object) -> Recipe:
    r = Recipe()
    r.model.d_model, r.model.heads, r.model.ffn = 16, 2, 32
    r.model.encoder_layers = r.model.decoder_layers = 2
    r.model.norm = norm
    r.model.text_only = True
    for k, v in model.items():
        setattr(r.model, k, v)
    return r


def batch(vocab: int = 40, b: int = 3, t: int = 7, u: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab, (b, t), generator=g)
    lengths = torch.tensor([t, t - 2, 2])[:b]
    for i, n in enumerate(lengths.tolist()):
        src[i, n - 1] = EOS
        src[i, n:] = PAD
    tgt = torch.randint(4, vocab, (b, u), generator=g)
    tgt[:, 0] = EOS
    return src, tgt


def test_parameter_count_matches_fairseq_transformer_tiny() -> None:
    r = Recipe()
    r.model.text_only = True
    model = build_model(r, 9712)
    d = 128
    attention = 4 * (d * d + d)
    ffn = (d * 256 + 256) + (256 * d + d)
    encoder_layer = attention + ffn + 2 * 2 * d
    decoder_layer = 2 * attention + ffn + 3 * 2 * d
    assert (encoder_layer, decoder_layer) == (132_480, 198_784)  # docs/differences.md
    expected = 9712 * d + 4 * encoder_layer + 4 * decoder_layer + 2 * 2 * d
    assert sum(p.numel() for p in model.parameters()) == expected == 2_568_704
    # the paper's en-de count adds the 2048->128 pseudo-token projector
    assert expected + 2048 * 128 + 128 == 2_830_976


def test_post_norm_encoder_layer_by_hand() -> None:
    """Post-norm (the authors' Transformer-Tiny option): x = LN(x + Attn(x)); x = LN(x + FFN(x)); no final
    LayerNorm. Computed here from the layer's weights with plain tensor ops."""
    model = build_model(tiny_recipe("post", encoder_layers=1, dropout=0.0), 40).eval()
    assert model.encoder.final_norm is None and model.decoder.final_norm is None
    src, _ = batch()
    with torch.no_grad():
        x0 = model.embed(src)
        layer = model.encoder.layers[0]
        w, b = layer.self_attn.in_proj.weight, layer.self_attn.in_proj.bias
        q, k, v = (x0 @ w[i * 16 : (i + 1) * 16].T + b[i * 16 : (i + 1) * 16] for i in range(3))
        heads = []
        for h in range(2):
            sl = slice(8 * h, 8 * h + 8)
            scores = (q[..., sl] @ k[..., sl].transpose(1, 2)) / 8**0.5
            scores = scores.masked_fill(src.eq(PAD)[:, None, :], float("-inf"))
            heads.append(scores.softmax(-1) @ v[..., sl])
        attn = torch.cat(heads, -1) @ layer.self_attn.out_proj.weight.T + layer.self_attn.out_proj.bias

        def norm(x: torch.Tensor, ln: torch.nn.LayerNorm) -> torch.Tensor:
            mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
            return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias

        x1 = norm(x0 + attn, layer.self_attn_norm)
        ffn = torch.relu(x1 @ layer.ffn.fc1.weight.T + layer.ffn.fc1.bias) @ layer.ffn.fc2.weight.T + layer.ffn.fc2.bias
        expected = norm(x1 + ffn, layer.ffn_norm)
        states = model.encode(src).states
    assert torch.allclose(states, expected, atol=1e-5)


def test_shared_embedding_init_and_tied_output() -> None:
    r = Recipe()
    r.model.text_only = True
    model = build_model(r, 2000)
    w = model.embed.weight
    assert torch.all(w[PAD] == 0)
    assert abs(w[4:].std().item() - 128**-0.5) < 0.003
    names = [n for n, _ in model.named_parameters() if "embed" in n]
    assert names == ["embed.embed.weight"]  # one matrix: encoder input, decoder input and output projection
    x = torch.randn(2, 3, 128)
    assert torch.equal(model.embed.logits(x), x @ w.T)


def test_sinusoidal_positions_follow_fairseq_layout() -> None:
    d = 8
    table = sinusoidal_table(torch.tensor([2, 5]), d)
    freqs = [math.exp(-i * math.log(10000) / (d // 2 - 1)) for i in range(d // 2)]
    expected = [[math.sin(p * f) for f in freqs] + [math.cos(p * f) for f in freqs] for p in (2, 5)]
    assert torch.allclose(table, torch.tensor(expected), atol=1e-6)


def test_embedding_scale_positions_and_pad() -> None:
    model = build_model(tiny_recipe(), 40).eval()
    tokens = torch.tensor([[5, 7, PAD]])
    x = model.embed(tokens)
    pe = sinusoidal_table(torch.arange(3) + PAD + 1, 16)
    w = model.embed.weight
    assert torch.allclose(x[0, 0], 4.0 * w[5] + pe[0], atol=1e-6)
    assert torch.allclose(x[0, 1], 4.0 * w[7] + pe[1], atol=1e-6)
    assert torch.equal(x[0, 2], torch.zeros(16))  # pad: zero row, no position
    assert torch.allclose(model.embed(torch.tensor([[7]]), start=1)[0, 0], x[0, 1], atol=1e-6)


def test_positions_grow_beyond_the_table() -> None:
    model = build_model(tiny_recipe(max_positions=4), 40).eval()
    x = model.embed(torch.full((1, 9), 5))
    assert torch.allclose(x[0, 8], 4.0 * model.embed.weight[5] + sinusoidal_table(torch.tensor([8 + 2]), 16)[0])


def test_explicit_attention_equals_sdpa() -> None:
    att = Attention(16, 4, 0.0)
    q, k, v = att.project_self(torch.randn(2, 5, 16))
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])[:, None, None, :]
    fused, none = att.attend(q, k, v, mask)
    explicit, probs = att.attend(q, k, v, mask, need_weights=True)
    assert none is None and probs.shape == (2, 4, 5, 5)
    assert torch.allclose(fused, explicit, atol=1e-6)
    assert torch.all(probs[1, :, :, 3:] == 0)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 4, 5))
    causal, _ = att.attend(q, k, v, is_causal=True)
    causal_explicit, p = att.attend(q, k, v, is_causal=True, need_weights=True)
    assert torch.allclose(causal, causal_explicit, atol=1e-6) and torch.all(p.triu(1) == 0)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_text_only_shapes_and_attention(norm: str) -> None:
    model = build_model(tiny_recipe(norm), 40)
    src, tgt = batch()
    logits, enc = model(src, tgt)
    assert logits.shape == (3, 6, 40) and enc.m is None
    enc = model.encode(src, return_attention=True)
    assert enc.states.shape == (3, 7, 16) and enc.m is None
    assert torch.equal(enc.pad_mask, src.eq(PAD))
    assert enc.attention.shape == (3, 2, 7, 7)
    assert torch.all(enc.attention[2, :, :, 2:] == 0)  # pad keys get no attention
    assert model.encode(src).attention is None


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_pad_keys_are_masked(norm: str) -> None:
    model = build_model(tiny_recipe(norm), 40).eval()
    src, tgt = batch()
    enc = model.encode(src)
    logits = model.decode(tgt, enc)
    with torch.no_grad():
        model.embed.embed.weight[PAD].normal_()
    enc2 = model.encode(src)
    real = ~src.eq(PAD)
    assert torch.allclose(enc.states[real], enc2.states[real], atol=1e-6)
    other = torch.arange(40) != PAD
    assert torch.allclose(logits[..., other], model.decode(tgt, enc2)[..., other], atol=1e-5)
    # more padding changes nothing either
    longer = torch.cat([src, torch.full((3, 4), PAD)], dim=1)
    enc3 = model.encode(longer)
    assert torch.allclose(enc2.states[real], enc3.states[:, :7][real], atol=1e-5)
    assert torch.allclose(model.decode(tgt, enc2), model.decode(tgt, enc3), atol=1e-5)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_incremental_decoding_equals_full_decoding(norm: str) -> None:
    model = build_model(tiny_recipe(norm), 40).eval()
    src, tgt = batch()
    with torch.no_grad():
        enc = model.encode(src)
        full = model.decode(tgt, enc)
        state = model.new_decoder_state()
        steps = [model.decode(tgt[:, i : i + 1], enc, state) for i in range(tgt.size(1))]
        assert state.length == tgt.size(1)
        assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
        # a prefix of 2, then 3 tokens at once, then 1
        state = model.new_decoder_state()
        parts = [model.decode(tgt[:, a:b], enc, state) for a, b in ((0, 2), (2, 5), (5, 6))]
        assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


def test_state_reorder_for_beam_search() -> None:
    model = build_model(tiny_recipe(), 40).eval()
    src, tgt = batch()
    index = torch.tensor([2, 0, 0, 1])
    with torch.no_grad():
        enc = model.encode(src)
        state = model.new_decoder_state()
        model.decode(tgt[:, :3], enc, state)
        state.reorder(index)
        step = model.decode(tgt[index, 3:4], enc.index_select(index), state)
        ref = model.decode(tgt[index, :4], model.encode(src[index]))
    assert isinstance(state, DecoderState)
    assert torch.allclose(step[:, 0], ref[:, 3], atol=1e-5)


def test_dropout_is_active_in_training_only() -> None:
    model = build_model(tiny_recipe(), 40)
    src, tgt = batch()
    a, _ = model(src, tgt)
    b, _ = model(src, tgt)
    assert not torch.allclose(a, b)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(src, tgt)[0], model(src, tgt)[0])


def test_text_only_model_refuses_vision_calls() -> None:
    from ikd.errors import IkdError

    model = build_model(tiny_recipe(), 40)
    src, _ = batch()
    with pytest.raises(IkdError, match="text-only"):
        model.generate_m(src)


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("onednn", [True, False])
def test_one_token_steps_equal_full_decoding_with_and_without_onednn(norm: str, onednn: bool, monkeypatch) -> None:
    from ikd.model import transformer

    if onednn and not transformer.onednn_linear_available():
        pytest.skip("torch has no oneDNN linear here")
    monkeypatch.setattr(transformer, "onednn_linear_available", lambda: onednn)
    model = build_model(tiny_recipe(norm), 40).eval()
    src, tgt = batch()
    with torch.no_grad():
        enc = model.encode(src)
        full = model.decode(tgt, enc)
        state = model.new_decoder_state()
        steps = torch.cat([model.decode(tgt[:, i : i + 1], enc, state) for i in range(tgt.size(1))], dim=1)
    assert (state.output is not None) == onednn  # the packed output projection only with oneDNN
    assert torch.allclose(steps, full, atol=1e-5)


def test_prepacked_step_weights_follow_weight_updates() -> None:
    model = build_model(tiny_recipe(), 40).eval()
    src, tgt = batch()

    def first_steps() -> torch.Tensor:
        state = model.new_decoder_state()
        return torch.cat([model.decode(tgt[:, i : i + 1], enc, state) for i in range(3)], dim=1)

    with torch.no_grad():
        enc = model.encode(src)
        before = first_steps()
        model.decoder.layers[0].ffn.fc2.weight.mul_(3.0)  # as an optimiser step would, in place
        model.embed.embed.weight.add_(0.1)
        enc = model.encode(src)
        after = first_steps()
        full = model.decode(tgt[:, :3], enc)
    assert not torch.allclose(before, after, atol=1e-3)
    assert torch.allclose(after, full, atol=1e-5)


def test_step_weights_are_prepared_again_after_a_fused_adam_update() -> None:
    """Fused Adam updates the weights in place without bumping their version counters: validation during
    training must not search with the weights of an earlier epoch."""
    model = build_model(tiny_recipe(), 40)
    src, tgt = batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05, fused=True)

    def steps() -> torch.Tensor:
        with torch.no_grad():
            enc = model.encode(src)
            state = model.new_decoder_state()
            return torch.cat([model.decode(tgt[:, i : i + 1], enc, state) for i in range(3)], dim=1), enc

    model.eval()
    steps()  # prepares the step weights
    model.train()
    logits, _ = model(src, tgt)
    logits.float().logsumexp(-1).mean().backward()
    optimizer.step()
    model.eval()
    model.forget_step_weights()
    after, enc = steps()
    with torch.no_grad():
        full = model.decode(tgt[:, :3], enc)
    assert torch.allclose(after, full, atol=1e-5)


@pytest.mark.parametrize("keys", [1, 5, 15, 16, 40])
def test_short_row_softmax_equals_torch_softmax(keys: int) -> None:
    from ikd.model.transformer import softmax_last

    g = torch.Generator().manual_seed(keys)
    scores = torch.randn(6, 3, keys, generator=g) * 8
    if keys > 2:
        scores[:, :, keys // 2 :] = float("-inf")  # masked keys (padding, the positions not yet decoded)
    expected = torch.softmax(scores, dim=-1)
    got = softmax_last(scores.clone())
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    if keys > 2:
        assert torch.all(got[:, :, keys // 2 :] == 0)


def test_one_token_steps_through_growth_and_reorders_equal_full_decoding() -> None:
    """Steps past PADDED_KEYS and past the first cache buffer, with the beam reorders of a search: rows
    multiplied (more than allocated), then narrowed to few (the buffers are viewed smaller), then kept."""
    from ikd.model.transformer import PADDED_KEYS

    model = build_model(tiny_recipe(), 40).eval()
    g = torch.Generator().manual_seed(3)
    src, _ = batch()
    steps = 2 * PADDED_KEYS + 3
    tgt = torch.randint(4, 40, (3, steps), generator=g)
    tgt[:, 0] = EOS
    expand, narrow, swap = [0, 0, 1, 1, 2, 2, 2, 0, 1, 2, 2, 1], [11, 4], [1, 0]
    reorders = {3: torch.tensor(expand), 9: torch.tensor(narrow), 20: torch.tensor(swap)}
    rows = torch.arange(3)  # which source row each decoder row belongs to
    history = tgt[:, :1]
    with torch.no_grad():
        state = model.new_decoder_state()
        enc = model.encode(src)
        for i in range(steps):
            if i in reorders:
                index = reorders[i]
                state.reorder(index)
                rows, history = rows[index], history[index]
            out = model.decode(history[:, -1:], enc.index_select(rows), state)
            ref = model.decode(history, model.encode(src[rows]))[:, -1:]
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
            history = torch.cat([history, tgt[rows % 3, i + 1 : i + 2] if i + 1 < steps else history[:, :1]], dim=1)
    assert state.length == steps
