"""An IKD-MMT translator (image-free multimodal MT by inversion knowledge distillation) in transformers: ikd's
multimodal encoder under M2M100's decoder, so that `generate()` works as for any seq2seq model.

The encoder (pre-norm Transformer layers, as ikd's) embeds the source, takes the mean of its embedded tokens as
the global text feature t, generates the feature map m = ReLU(BatchNorm(Linear(t))) of shape [C, H, W] that
imitates an image CNN's last map (no image is read), projects its P = H*W positions to pseudo-tokens and runs
the encoder layers over [text; pseudo-tokens] (queries) with the text alone as keys and values. The decoder
cross-attends over all T + P states: `IkdMmtModel.forward` appends P ones to the source attention mask.

Shapes: B batch, T source tokens, P pseudo-tokens, L = T + P encoder states (P without text queries), d width.
Inference only: dropout is not part of this port. Written against transformers 4.40 to 5.x: the decoder, its
embedding and its cache are whatever the installed M2M100Model builds (the cache argument is `past_key_values` in
4.x, `cache` in 5.x).
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import M2M100ForConditionalGeneration, M2M100Model
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqModelOutput
from transformers.models.m2m_100.modeling_m2m_100 import M2M100PreTrainedModel, M2M100SinusoidalPositionalEmbedding

from .configuration_ikd_mmt import IkdMmtConfig


class IkdFeatureGenerator(nn.Module):
    """t [B, d] -> m [B, C, H, W] = ReLU(BatchNorm2d(Linear(t) viewed as [C, H, W]))."""

    def __init__(self, d_model: int, shape: list[int]) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.fc = nn.Linear(d_model, math.prod(self.shape))
        self.bn = nn.BatchNorm2d(self.shape[0])

    def forward(self, t: Tensor) -> Tensor:
        return F.relu(self.bn(self.fc(t).view(t.size(0), *self.shape)))


class IkdPseudoTokens(nn.Module):
    """m [B, C, H, W] -> pseudo-tokens [B, H*W, d]: "spatial" takes the C-vector of each position, "raw" the
    chunks of m.reshape(B, H*W, C); then Linear(C, d)."""

    def __init__(self, channels: int, d_model: int, layout: str) -> None:
        super().__init__()
        if layout not in ("spatial", "raw"):
            raise ValueError(f"token_layout {layout!r} is not one of spatial, raw")
        self.layout = layout
        self.proj = nn.Linear(channels, d_model)

    def forward(self, m: Tensor) -> Tensor:
        b, c, h, w = m.shape
        tokens = m.flatten(2).transpose(1, 2) if self.layout == "spatial" else m.reshape(b, h * w, c)
        return self.proj(tokens)


class IkdAttention(nn.Module):
    """Multi-head attention of queries [B, Lq, d] over keys/values [B, T, d] with key_mask [B, 1, 1, T]
    (True = attend) -> [B, Lq, d]."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _split(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, queries: Tensor, keys_values: Tensor, key_mask: Tensor) -> Tensor:
        q, k, v = self._split(self.q_proj(queries)), self._split(self.k_proj(keys_values)), self._split(
            self.v_proj(keys_values)
        )
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class IkdEncoderLayer(nn.Module):
    """Pre-norm encoder layer whose keys and values are text only: `text` [B, T, d] (normalised by this layer's
    attention LayerNorm) or, when it is None, the first n_text rows of the normalised queries."""

    def __init__(self, config: IkdMmtConfig) -> None:
        super().__init__()
        d = config.d_model
        self.self_attn = IkdAttention(d, config.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, config.encoder_ffn_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, x: Tensor, key_mask: Tensor, n_text: int, text: Tensor | None) -> Tensor:
        h = self.self_attn_layer_norm(x)
        kv = h[:, :n_text] if text is None else self.self_attn_layer_norm(text)
        x = x + self.self_attn(h, kv, key_mask)
        return x + self.fc2(F.relu(self.fc1(self.final_layer_norm(x))))


class IkdMmtEncoder(M2M100PreTrainedModel):
    """input_ids [B, T] (right-padded, ending in </s>) -> states [B, L, d]."""

    config: IkdMmtConfig

    def __init__(self, config: IkdMmtConfig) -> None:
        super().__init__(config)
        d, pad = config.d_model, config.pad_token_id
        scale = math.sqrt(d) if config.scale_embedding else 1.0
        self.padding_idx = pad
        self.embed_scale = scale
        self.embed_tokens = nn.Embedding(config.vocab_size, d, pad)  # tied to the model's shared embedding
        self.embed_positions = M2M100SinusoidalPositionalEmbedding(config.max_position_embeddings, d, pad)
        self.layers = nn.ModuleList(IkdEncoderLayer(config) for _ in range(config.encoder_layers))
        self.layer_norm = nn.LayerNorm(d)
        shape = list(config.feature_shape)
        self.generator = IkdFeatureGenerator(d, shape)
        self.pseudo_tokens = IkdPseudoTokens(shape[0], d, config.token_layout)
        self.post_init()

    @property
    def num_pseudo_tokens(self) -> int:
        return self.generator.shape[1] * self.generator.shape[2]

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **kwargs) -> BaseModelOutput:
        text_pad = input_ids.eq(self.padding_idx) if attention_mask is None else attention_mask.eq(0)
        x = self.embed_tokens(input_ids) * self.embed_scale
        x = x + self.embed_positions(input_ids).to(x.dtype)
        keep = (~text_pad).unsqueeze(-1).to(x.dtype)
        t = (x * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)  # mean over the real tokens, </s> included
        pseudo = self.pseudo_tokens(self.generator(t))
        n_text = input_ids.size(1)
        if self.config.text_queries:
            queries = torch.cat([x, pseudo], dim=1)
            text = x if self.config.kv_source == "embedding" else None
        else:  # the text is never updated: its embedding is every layer's keys and values
            queries, text = pseudo, x
        key_mask = ~text_pad[:, None, None, :]
        for layer in self.layers:
            queries = layer(queries, key_mask, n_text, text)
        return BaseModelOutput(last_hidden_state=self.layer_norm(queries))

    def memory_mask(self, attention_mask: Tensor, states: Tensor) -> Tensor:
        """The source mask [B, T] -> the mask over the encoder states [B, L]: pseudo-tokens are never padding."""
        ones = attention_mask.new_ones(attention_mask.size(0), self.num_pseudo_tokens)
        return torch.cat([attention_mask, ones], dim=1) if self.config.text_queries else ones


class IkdMmtModel(M2M100Model):
    """M2M100Model with ikd's multimodal encoder; the shared embedding and the decoder are M2M100's."""

    config: IkdMmtConfig

    def __init__(self, config: IkdMmtConfig) -> None:
        super().__init__(config)  # M2M100's shared embedding, encoder (replaced here) and decoder
        self.encoder = IkdMmtEncoder(config)
        self.encoder.embed_tokens.weight = self.shared.weight  # 5.x's shared embedding scales itself; ours not
        params = inspect.signature(self.decoder.forward).parameters
        self._decoder_takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        self._decoder_params = set(params)
        self.post_init()

    def _decoder_kwargs(self, kwargs: dict) -> dict:
        """The keyword arguments of M2M100Model.forward that its decoder takes (cache, use_cache, output flags)."""
        kwargs = dict(kwargs)
        kwargs.pop("head_mask", None)  # the encoder's; ikd's encoder has no head mask
        if "decoder_head_mask" in kwargs:
            kwargs["head_mask"] = kwargs.pop("decoder_head_mask")
        if self._decoder_takes_any:
            return kwargs
        kwargs = {k: v for k, v in kwargs.items() if k in self._decoder_params}
        if "return_dict" in self._decoder_params:
            kwargs["return_dict"] = True
        return kwargs

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        decoder_input_ids: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        inputs_embeds: Tensor | None = None,
        decoder_inputs_embeds: Tensor | None = None,
        **kwargs,
    ) -> Seq2SeqModelOutput:
        """input_ids [B, T], attention_mask [B, T] (1 = token), decoder_input_ids [B, S] -> decoder states
        [B, S, d] over the encoder states [B, L, d]; the decoder's cross-attention mask is attention_mask with P
        ones appended (pseudo-tokens are never padding)."""
        if inputs_embeds is not None:
            raise ValueError("the IKD-MMT encoder reads token ids (input_ids), not inputs_embeds")
        if attention_mask is None and input_ids is not None:
            attention_mask = input_ids.ne(self.config.pad_token_id).long()
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(last_hidden_state=encoder_outputs[0])
        states = encoder_outputs.last_hidden_state
        memory_mask = None if attention_mask is None else self.encoder.memory_mask(attention_mask, states)
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=states,
            encoder_attention_mask=memory_mask,
            inputs_embeds=decoder_inputs_embeds,
            **self._decoder_kwargs(kwargs),
        )
        cache = "cache" if "cache" in Seq2SeqModelOutput.__dataclass_fields__ else "past_key_values"
        return Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=states,
            **{cache: getattr(decoder_outputs, cache, None)},
        )


class IkdMmtForConditionalGeneration(M2M100ForConditionalGeneration):
    """The translator with its tied output projection; `generate()` as for M2M100."""

    config_class = IkdMmtConfig
    config: IkdMmtConfig

    def __init__(self, config: IkdMmtConfig) -> None:
        M2M100PreTrainedModel.__init__(self, config)
        self.model = IkdMmtModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()
