"""A text-only ikd translator as a CTranslate2 model (`ctranslate2.specs.TransformerSpec`), so that
`ctranslate2.Translator` decodes it with the same output as ikd's beam search.

What has to line up with ikd's Transformer (ikd/model/transformer.py):
- positions: ikd's position i is fairseq's pad+1+i, one later than CTranslate2's built-in table, and ikd
  lays out sin then cos; the exact table is stored in the model (`position_encodings.encodings`);
- embeddings scaled by sqrt(d) (`scale_embeddings`), one matrix for the encoder and decoder inputs and the
  tied output projection (no bias);
- pre-norm layers with the encoder's and decoder's final LayerNorm (post-norm: none), eps 1e-5 (torch's);
- self-attention keeps ikd's fused [3d, d] in-projection; cross-attention splits it into the query rows and
  the fused key/value rows;
- the decoder starts from </s> and the source ends in </s> (fairseq's convention), which the translation
  options below pass explicitly.
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


def translate_options(beam: int, lenpen: float = 1.0, max_len: int = 200) -> dict:
    """ctranslate2.Translator.translate_batch options equal to ikd's search settings with a fixed length
    cap (ikd's --max-len-a 0 --max-len-b max_len; CTranslate2 has no per-source cap) and fairseq's
    conventions: at least one token before </s>, <s>/<pad> never generated, a sentence done when `beam`
    hypotheses have finished."""
    return dict(
        beam_size=beam,
        length_penalty=lenpen,
        max_decoding_length=max(1, int(max_len)),
        min_decoding_length=1,
        patience=1.0,
        suppress_sequences=[["<s>"], ["<pad>"]],
    )
