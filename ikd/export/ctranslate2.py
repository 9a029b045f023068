"""A text-only ikd translator as a CTranslate2 model (`ctranslate2.specs.TransformerSpec`): the same network,
so that `ctranslate2.Translator.score_batch` gives every target token the log-probability ikd gives it.

What has to line up with ikd's Transformer (ikd/model/transformer.py):
- positions: ikd's position i is fairseq's pad+1+i, one later than CTranslate2's built-in table, and ikd
  lays out sin then cos; the exact table is stored in the model (`position_encodings.encodings`);
- embeddings scaled by sqrt(d) (`scale_embeddings`), one matrix for the encoder and decoder inputs and the
  tied output projection (no bias);
- pre-norm layers with the encoder's and decoder's final LayerNorm (post-norm: none), eps 1e-5 (torch's);
- self-attention keeps ikd's fused [3d, d] in-projection; cross-attention splits it into the query rows and
  the fused key/value rows;
- the decoder starts from </s> and the source ends in </s> (fairseq's convention), which the caller passes.

The searches are not the same (`translate_options` says where), so a conversion is verified on scores, not on
translations: `token_log_probs` (ikd, teacher-forced) against `score_batch` on ikd's own hypotheses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ikd.errors import IkdError

LAYER_NORM_EPS = 1e-5


def require_ctranslate2():
    try:
        import ctranslate2
    except ImportError:
        raise IkdError(
            "--format ctranslate2 needs the ctranslate2 package: pip install 'ikd[ctranslate2]'"
        ) from None
    return ctranslate2


MULTIMODAL = (
    "an IKD (multimodal) model cannot be converted to CTranslate2: its encoder reads pseudo-tokens generated "
    "from the source text, which a CTranslate2 Transformer has no place for; only text-only models "
    "(model.text_only: true) can be"
)


def unsupported(recipe: dict | None) -> str | None:
    """Why a checkpoint's recipe (a dict) cannot be converted, or None when it can."""
    model = (recipe or {}).get("model", {})
    if not model.get("text_only", False):
        return MULTIMODAL
    return None


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().contiguous().numpy().copy()


def _linear(spec, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    spec.weight = _np(weight)
    if bias is not None:
        spec.bias = _np(bias)


def _norm(spec, norm: torch.nn.LayerNorm) -> None:
    spec.gamma = _np(norm.weight)
    spec.beta = _np(norm.bias)


def _ffn(spec, layer) -> None:
    _norm(spec.layer_norm, layer.ffn_norm)
    _linear(spec.linear_0, layer.ffn.fc1.weight, layer.ffn.fc1.bias)
    _linear(spec.linear_1, layer.ffn.fc2.weight, layer.ffn.fc2.bias)


def build_spec(model, vocab_tokens: list[str], source: str = "checkpoint"):
    """An ikd text-only TranslationModel (eval mode) -> a validated ctranslate2 TransformerSpec with the vocabulary."""
    require_ctranslate2()
    from ctranslate2.specs import transformer_spec

    if not model.text_only:
        raise IkdError(f"{source}: {MULTIMODAL}")
    enc_layers, dec_layers = model.encoder.layers, model.decoder.layers
    pre_norm = enc_layers[0].pre_norm
    heads = enc_layers[0].self_attn.heads
    d = model.d_model
    encoder = transformer_spec.TransformerEncoderSpec(len(enc_layers), heads, pre_norm=pre_norm)
    decoder = transformer_spec.TransformerDecoderSpec(len(dec_layers), heads, pre_norm=pre_norm)
    spec = transformer_spec.TransformerSpec(encoder, decoder)
    spec.config.layer_norm_epsilon = LAYER_NORM_EPS
    spec.config.decoder_start_token = "</s>"
    spec.config.add_source_eos = False  # ikd's source ids already end in </s>: the caller passes it

    weight = _np(model.embed.weight)
    n_pos = model.embed.positions.size(0)
    table = _np(model.embed.position_vectors(0, n_pos))  # row i = ikd's vector for position i
    encoder.embeddings[0].weight = weight
    encoder.scale_embeddings = True
    encoder.position_encodings.encodings = table
    decoder.embeddings.weight = weight
    decoder.scale_embeddings = True
    decoder.position_encodings.encodings = table
    decoder.projection.weight = weight

    for layer_spec, layer in zip(encoder.layer, enc_layers):
        att = layer_spec.self_attention
        _norm(att.layer_norm, layer.self_attn_norm)
        _linear(att.linear[0], layer.self_attn.in_proj.weight, layer.self_attn.in_proj.bias)
        _linear(att.linear[1], layer.self_attn.out_proj.weight, layer.self_attn.out_proj.bias)
        _ffn(layer_spec.ffn, layer)
    for layer_spec, layer in zip(decoder.layer, dec_layers):
        att = layer_spec.self_attention
        _norm(att.layer_norm, layer.self_attn_norm)
        _linear(att.linear[0], layer.self_attn.in_proj.weight, layer.self_attn.in_proj.bias)
        _linear(att.linear[1], layer.self_attn.out_proj.weight, layer.self_attn.out_proj.bias)
        cross, w, b = layer_spec.attention, layer.cross_attn.in_proj.weight, layer.cross_attn.in_proj.bias
        _norm(cross.layer_norm, layer.cross_attn_norm)
        _linear(cross.linear[0], w[:d], b[:d])
        _linear(cross.linear[1], w[d:], b[d:])
        _linear(cross.linear[2], layer.cross_attn.out_proj.weight, layer.cross_attn.out_proj.bias)
        _ffn(layer_spec.ffn, layer)
    if pre_norm:
        _norm(encoder.layer_norm, model.encoder.final_norm)
        _norm(decoder.layer_norm, model.decoder.final_norm)

    spec.register_source_vocabulary(list(vocab_tokens))
    spec.register_target_vocabulary(list(vocab_tokens))
    try:
        spec.validate()
    except ValueError as e:
        raise IkdError(f"{source}: the converted model is incomplete ({e})") from None
    return spec


def save_ctranslate2(model, vocab_tokens: list[str], out: Path, source: str = "checkpoint") -> None:
    """Convert and save into the (new, empty) folder `out`: model.bin, config.json, shared_vocabulary.json."""
    spec = build_spec(model, vocab_tokens, source)
    spec.optimize(quantization=None)
    out.mkdir(parents=True, exist_ok=True)
    spec.save(str(out))


def token_log_probs(model, src: list[int], tgt: list[int], eos: int = 2) -> list[float]:
    """ikd's log-probability of each token of `tgt` + </s> given `src` (ids, EOS-terminated), teacher-forced
    from </s> without any search mask: what `score_batch` returns for the same sequences -> len(tgt) + 1 floats."""
    with torch.no_grad():
        enc = model.encode(torch.tensor([src]))
        logits = model.decode(torch.tensor([[eos, *tgt]]), enc)[0].float()  # [len + 1, V]
        lprobs = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor([*tgt, eos])[:, None])
    return lprobs.squeeze(1).tolist()


def translate_options(beam: int, lenpen: float = 1.0, max_len: int = 200) -> dict:
    """ctranslate2.Translator.translate_batch options that come closest to ikd's beam search with a fixed
    length cap (ikd's --max-len-a 0 --max-len-b max_len; CTranslate2 has no per-source cap).

    Where the two still differ (CTranslate2 masks logits before its softmax, ikd masks log-probabilities
    after it, as fairseq does):
    - </s> as the first token: both forbid it (min_decoding_length 1), but CTranslate2 renormalises the first
      step, which adds -log(1 - p(</s>)) to every hypothesis's summed log-probability (its score, divided by the
      length, then favours short hypotheses). min_decoding_length 0 would keep the scores but let the empty
      translation take one of the `beam` finished slots, which changes far more outputs;
    - <pad> and <s>: ikd never generates them; they are not suppressed here, because suppress_sequences
      renormalises every step (measured: more outputs differ) and a trained model gives them almost no mass;
    - at the cap ikd appends a forced </s> (scored), CTranslate2 stops without one;
    - with lenpen 0 CTranslate2 stops once the best open hypothesis ends (the same 1-best, other n-best).
    The rest is the same: 2*beam candidates per step, the first step from one beam, </s> candidates among the
    best `beam` finished, a sentence done when `beam` hypotheses have finished (patience 1), scores divided by
    (tokens + 1)**lenpen, </s> counted."""
    return dict(
        beam_size=beam,
        length_penalty=lenpen,
        max_decoding_length=max(1, int(max_len)),
        min_decoding_length=1,
        patience=1.0,
        return_scores=True,
    )
