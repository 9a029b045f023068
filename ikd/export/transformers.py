"""An ikd translator as a Hugging Face transformers model folder.

A text-only checkpoint becomes a plain `M2M100ForConditionalGeneration` (no custom code): ikd's pre-norm
Transformer is M2M100's layout with sqrt(d)-scaled embeddings, fairseq's sinusoidal positions (pad + 1 + i,
sin then cos), ReLU, one embedding matrix for the encoder, the decoder and the tied output projection, and
</s> as the decoder's start. ikd's fused [3d, d] in-projections split into q/k/v. An IKD checkpoint, whose
encoder appends pseudo-tokens generated from the text, becomes transformers custom code (hf_code/
modeling_ikd_mmt.py, loaded with `trust_remote_code=True`): ikd's encoder under M2M100's decoder.

Both carry ikd's search settings in generation_config.json, the tokenizer (hf_code/tokenization_ikd.py with the
BPE codes, vocabulary and glossary), the length-cap logits processor (hf_code/length_cap.py) and a model card.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

from ikd.errors import IkdError
from ikd.fileio import atomic_write_lines, atomic_write_text

HF_CODE = Path(__file__).with_name("hf_code")
LENGTH_CAP = "length_cap.py"
INFO = "ikd.json"
INFO_FORMAT = "ikd-transformers-1"
DEFAULT_MAX_LEN_B = 200  # ikd translate's cap: 0 * src_len + 200

POST_NORM = (
    "a post-norm model (model.norm: post) cannot be exported to transformers: M2M100's layers are pre-norm, "
    "with a final LayerNorm"
)


def require_transformers():
    try:
        import transformers
    except ImportError:
        raise IkdError(
            "--format transformers needs the transformers package: pip install 'ikd[transformers]'"
        ) from None
    return transformers


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No transformers progress bars (weights written, weights loaded) on ikd's console; restored afterwards."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


def unsupported(recipe: dict | None) -> str | None:
    """Why a checkpoint's recipe (a dict) cannot be exported, or None when it can."""
    if (recipe or {}).get("model", {}).get("norm", "pre") != "pre":
        return POST_NORM
    return None


# ---------------------------------------------------------------------------------------------- weights
def _split_attention(prefix: str, attn) -> dict[str, torch.Tensor]:
    """ikd's fused in-projection (q rows, then k, then v) as q_proj/k_proj/v_proj, and out_proj."""
    w, b, d = attn.in_proj.weight, attn.in_proj.bias, attn.d_model
    out = {}
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        out[f"{prefix}.{name}.weight"] = w[i * d : (i + 1) * d]
        out[f"{prefix}.{name}.bias"] = b[i * d : (i + 1) * d]
    out[f"{prefix}.out_proj.weight"] = attn.out_proj.weight
    out[f"{prefix}.out_proj.bias"] = attn.out_proj.bias
    return out


def _norm(prefix: str, norm: torch.nn.LayerNorm) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": norm.weight, f"{prefix}.bias": norm.bias}


def _ffn(prefix: str, layer) -> dict[str, torch.Tensor]:
    out = _norm(f"{prefix}.final_layer_norm", layer.ffn_norm)
    for name in ("fc1", "fc2"):
        fc = getattr(layer.ffn, name)
        out |= {f"{prefix}.{name}.weight": fc.weight, f"{prefix}.{name}.bias": fc.bias}
    return out


def transformers_state_dict(model) -> dict[str, torch.Tensor]:
    """An ikd TranslationModel (pre-norm) -> the state dict of M2M100ForConditionalGeneration, or of
    IkdMmtForConditionalGeneration for a multimodal model (the encoder's generator and pseudo-token
    projection under model.encoder). Tensors are detached contiguous CPU copies."""
    embed = model.embed.weight
    state = {key: embed for key in ("model.shared.weight", "lm_head.weight")}
    state["model.encoder.embed_tokens.weight"] = state["model.decoder.embed_tokens.weight"] = embed
    for i, layer in enumerate(model.encoder.layers):
        p = f"model.encoder.layers.{i}"
        state |= _split_attention(f"{p}.self_attn", layer.self_attn)
        state |= _norm(f"{p}.self_attn_layer_norm", layer.self_attn_norm) | _ffn(p, layer)
    for i, layer in enumerate(model.decoder.layers):
        p = f"model.decoder.layers.{i}"
        state |= _split_attention(f"{p}.self_attn", layer.self_attn)
        state |= _norm(f"{p}.self_attn_layer_norm", layer.self_attn_norm)
        state |= _split_attention(f"{p}.encoder_attn", layer.cross_attn)
        state |= _norm(f"{p}.encoder_attn_layer_norm", layer.cross_attn_norm) | _ffn(p, layer)
    state |= _norm("model.encoder.layer_norm", model.encoder.final_norm)
    state |= _norm("model.decoder.layer_norm", model.decoder.final_norm)
    if not model.text_only:
        for key, value in model.generator.state_dict().items():
            state[f"model.encoder.generator.{key}"] = value
        for key, value in model.pseudo_tokens.proj.state_dict().items():
            state[f"model.encoder.pseudo_tokens.proj.{key}"] = value
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def model_config(model, recipe) -> dict:
    """The transformers config of an ikd TranslationModel and its recipe (a Recipe), as keyword arguments of
    M2M100Config (text-only) or IkdMmtConfig (multimodal)."""
    m = recipe.model
    config = dict(
        vocab_size=model.vocab_size,
        d_model=m.d_model,
        encoder_layers=m.encoder_layers,
        decoder_layers=m.decoder_layers,
        encoder_attention_heads=m.heads,
        decoder_attention_heads=m.heads,
        encoder_ffn_dim=m.ffn,
        decoder_ffn_dim=m.ffn,
        max_position_embeddings=m.max_positions,
        scale_embedding=True,
        activation_function="relu",
        # an inference export: with dropout 0 even a model left in training mode translates as ikd does
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        encoder_layerdrop=0.0,
        decoder_layerdrop=0.0,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        tie_word_embeddings=True,
    )
    if not model.text_only:
        config |= dict(
            feature_shape=list(model.feature_shape),
            token_layout=m.token_layout,
            text_queries=m.text_queries,
            kv_source=m.kv_source,
        )
    return config


def build_transformers_model(model, recipe):
    """An ikd TranslationModel -> the equivalent transformers model (eval mode, on the CPU)."""
    require_transformers()
    if recipe.model.norm != "pre":
        raise IkdError(POST_NORM)
    config = model_config(model, recipe)
    if model.text_only:
        from transformers import M2M100Config, M2M100ForConditionalGeneration

        hf = M2M100ForConditionalGeneration(M2M100Config(**config))
    else:
        from ikd.export.hf_code.configuration_ikd_mmt import IkdMmtConfig
        from ikd.export.hf_code.modeling_ikd_mmt import IkdMmtForConditionalGeneration

        hf = IkdMmtForConditionalGeneration(IkdMmtConfig(**config))
    hf.load_state_dict(transformers_state_dict(model), strict=True)
    return hf.eval()


# ---------------------------------------------------------------------------------------------- search
def max_new_tokens(max_positions: int, max_len_b: int = DEFAULT_MAX_LEN_B) -> int:
    """ikd's fixed cap (a = 0) as transformers' max_new_tokens: the cap, then room for </s>."""
    return max(1, min(max_len_b, max_positions - 1)) + 1


def generation_config(beam: int, max_positions: int, lenpen: float = 1.0, max_len_b: int = DEFAULT_MAX_LEN_B):
    """transformers.GenerationConfig with ikd's search settings: beam search that ends a sentence once `beam`
    hypotheses have finished, scores divided by length**lenpen (</s> counted), at least one token before
    </s>, <s> and <pad> never generated, decoding from </s>."""
    from transformers import GenerationConfig

    return GenerationConfig(
        num_beams=beam,
        do_sample=False,
        length_penalty=lenpen,
        early_stopping=True,
        min_new_tokens=1,
        suppress_tokens=[0, 1],
        max_new_tokens=max_new_tokens(max_positions, max_len_b),
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
    )


# ---------------------------------------------------------------------------------------------- folder
def write_tokenizer(payload: dict, folder: Path, max_positions: int) -> None:
    """The tokenizer files (vocab.txt, bpe.codes, bpe_vocab.json, tokenizer_config.json with auto_map) and its
    code (tokenization_ikd.py)."""
    import json

    from ikd.export.hf_code.tokenization_ikd import VOCAB_FILES_NAMES, IkdTokenizer

    files = {key: folder / name for key, name in VOCAB_FILES_NAMES.items()}
    atomic_write_lines(files["vocab_file"], list(payload["vocab"]))
    codes = payload.get("bpe_codes") or ""
    if codes.strip():
        atomic_write_text(files["codes_file"], codes)
    if payload.get("bpe_vocab"):
        text = json.dumps(payload["bpe_vocab"], ensure_ascii=False, sort_keys=True)
        atomic_write_text(files["bpe_vocab_file"], text)
    IkdTokenizer.register_for_auto_class("AutoTokenizer")
    tokenizer = IkdTokenizer(
        **{key: str(path) for key, path in files.items() if path.is_file()},
        src_lang=payload["src"],
        tgt_lang=payload["tgt"],
        glossaries=list(payload.get("bpe_glossaries", ["[U]"])),
        model_max_length=max_positions,
    )
    tokenizer.save_pretrained(str(folder))


def save_model(model, recipe, folder: Path, beam: int = 5) -> None:
    """config.json, model.safetensors, generation_config.json (and for an IKD model its custom code)."""
    hf = build_transformers_model(model, recipe)
    if not model.text_only:
        type(hf.config).register_for_auto_class("AutoConfig")
        type(hf).register_for_auto_class("AutoModelForSeq2SeqLM")
    hf.generation_config = generation_config(beam, recipe.model.max_positions)
    with quiet_transformers():
        hf.save_pretrained(str(folder))
    weights = folder / "model.safetensors"
    if weights.is_file():  # safetensors writes it owner-only; the folder's other files follow the umask
        weights.chmod((folder / "config.json").stat().st_mode & 0o777)
    shutil.copyfile(HF_CODE / LENGTH_CAP, folder / LENGTH_CAP)


def load_exported(folder: Path, text_only: bool):
    """The saved model read back with the classes of this ikd version (no dynamic-module cache)."""
    if text_only:
        from transformers import M2M100ForConditionalGeneration as cls
    else:
        from ikd.export.hf_code.modeling_ikd_mmt import IkdMmtForConditionalGeneration as cls
    with quiet_transformers():
        return cls.from_pretrained(str(folder)).eval()


@torch.no_grad()
def generate_ids(
    hf, sources: list[list[int]], beam: int, max_len_a: float = 0.0, max_len_b: int = DEFAULT_MAX_LEN_B
) -> list[list[int]]:
    """Source id lists (ending in </s>) -> transformers' best hypotheses as ikd token lists (no </s>), with
    ikd's per-sentence length cap (`length_cap.IkdLengthCap`)."""
    from ikd.export.hf_code.length_cap import ikd_generate_kwargs
    from ikd.inference.source import pad_batch

    pad, eos = hf.config.pad_token_id, hf.config.eos_token_id
    src = pad_batch(sources, pad)
    mask = src.ne(pad).long()
    kwargs = ikd_generate_kwargs(mask, max_len_a, max_len_b, hf.config.max_position_embeddings, eos)
    out = hf.generate(input_ids=src, attention_mask=mask, num_beams=beam, **kwargs)
    hyps = []
    for row in out.tolist():
        row = row[1:]  # the decoder's start, </s>
        hyps.append(row[: row.index(eos)] if eos in row else [t for t in row if t != pad])
    return hyps


def write_export(
    payload: dict,
    loaded,
    folder: Path,
    check: tuple[list[list[int]], list, int, int],
    scores: Path | None = None,
    source: str = "checkpoint",
) -> int:
    """Write the transformers folder of a checkpoint (its payload, and `loaded` = load_for_inference of it) into
    `folder` and check it: `check` = (source id lists, ikd's hypotheses for them, beam, length cap), which the
    saved model read back must reproduce. Returns the model's parameter count."""
    import json

    from ikd.export.model_card import model_card

    model, recipe = loaded.model, loaded.recipe
    save_model(model, recipe, folder)
    write_tokenizer(payload, folder, recipe.model.max_positions)
    sources, expected, beam, max_len = check
    hf = load_exported(folder, model.text_only)
    got = generate_ids(hf, sources, beam, 0.0, max_len)
    for i, (hyp, ours) in enumerate(zip(expected, got)):
        if hyp.tokens != ours:
            raise IkdError(f"{source}: the transformers model translates check sentence {i + 1} differently from ikd")
    parameters = sum(p.numel() for p in hf.parameters())
    atomic_write_text(folder / "README.md", model_card(payload, parameters, model.text_only, scores))
    info = {
        "format": INFO_FORMAT,
        "model": "M2M100ForConditionalGeneration" if model.text_only else "IkdMmtForConditionalGeneration",
        "src": payload["src"],
        "tgt": payload["tgt"],
        "epoch": payload.get("epoch"),
        "updates": payload.get("updates"),
    }
    atomic_write_text(folder / INFO, json.dumps(info, indent=2, ensure_ascii=False) + "\n")  # last: marks it done
    return parameters
