"""The translator: Transformer-Tiny with the multimodal feature generator and pseudo-tokens (paper section 3,
eqs. 1-6). Everything translation reads, and nothing else: no CNN is part of it, so image-free inference holds
by construction. Training adds the Distiller (ikd.model.distiller), which turns the generated m and the real
images into the two KD losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ikd.errors import IkdError
from ikd.model.generator import Generator, Shape, masked_mean
from ikd.model.transformer import Decoder, DecoderState, Dense, Embeddings, Encoder, StepLinears, packable
from ikd.recipe import ModelConfig

TEXT_FEATURES = ("embedding", "dropout")


@dataclass
class EncoderOutput:
    """states [B, L, d]; pad_mask [B, L] bool (True = pad; pseudo-tokens are never pad);
    m [B, C, H, W] the generated multimodal feature (None when text-only);
    attention [B, h, L, T] the first encoder layer's probabilities (only when asked for)."""

    states: Tensor
    pad_mask: Tensor
    m: Tensor | None = None
    attention: Tensor | None = None

    def index_select(self, index: Tensor) -> EncoderOutput:
        """Rows `index` [B'] of every field (beam expansion and reordering)."""

        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.index_select(0, index)

        return EncoderOutput(pick(self.states), pick(self.pad_mask), pick(self.m), pick(self.attention))


class PseudoTokens(nn.Module):
    """m [B, C, H, W] -> P = H*W pseudo-tokens [B, P, d] (eq. 1): Linear(C, d) then dropout.

    layout "spatial": token p is the C-vector at spatial position p (`m.flatten(2).transpose(1, 2)`);
    layout "raw": the authors' `m.reshape(B, P, C)`, i.e. chunks of consecutive channels (docs/differences.md).
    """

    def __init__(self, channels: int, d_model: int, dropout: float, layout: str) -> None:
        super().__init__()
        if layout not in ("spatial", "raw"):
            raise IkdError(f"model.token_layout: {layout!r} is not one of spatial, raw")
        self.layout = layout
        self.proj = nn.Linear(channels, d_model)
        self.dropout = nn.Dropout(dropout)

    def tokens(self, m: Tensor) -> Tensor:
        """m [B, C, H, W] -> [B, H*W, C] in the chosen layout (before the projection)."""
        b, c, h, w = m.shape
        if self.layout == "spatial":
            return m.flatten(2).transpose(1, 2)
        return m.reshape(b, h * w, c)

    def forward(self, m: Tensor) -> Tensor:
        return self.dropout(self.proj(self.tokens(m)))


class TranslationModel(nn.Module):
    """The IKD-MMT translator (or, with model.text_only, a plain Transformer). Build it with `build_translator`.

    feature_shape (C, H, W): the shape of the teacher's last feature map, which the generated m imitates
    (None for a text-only model)."""

    def __init__(
        self,
        cfg: ModelConfig,
        vocab_size: int,
        pad: int = 1,
        feature_shape: Shape | None = None,
        generator_device: str | None = None,
    ) -> None:
        super().__init__()
        if cfg.kv_source not in ("embedding", "states"):
            raise IkdError(f"model.kv_source: {cfg.kv_source!r} is not one of embedding, states")
        if cfg.norm not in ("pre", "post"):
            raise IkdError(f"model.norm: {cfg.norm!r} is not one of pre, post")
        if cfg.text_feature not in TEXT_FEATURES:
            raise IkdError(f"model.text_feature: {cfg.text_feature!r} is not one of {', '.join(TEXT_FEATURES)}")
        if not 0 <= pad < vocab_size:
            raise IkdError(f"pad id {pad} is outside the vocabulary of {vocab_size} tokens")
        if not cfg.text_only and feature_shape is None:
            raise ValueError("a multimodal TranslationModel needs the teacher's feature_shape (use build_translator)")
        self.pad = pad
        self.vocab_size = vocab_size
        self.d_model = cfg.d_model
        self.text_only = cfg.text_only
        self.text_queries = cfg.text_queries
        self.kv_source = cfg.kv_source
        self.text_feature = cfg.text_feature
        self.max_positions = cfg.max_positions

        self.embed = Embeddings(vocab_size, cfg.d_model, pad, cfg.dropout, cfg.max_positions)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.generator: Generator | None = None
        self.pseudo_tokens: PseudoTokens | None = None
        self.feature_shape: Shape | None = None
        if not cfg.text_only:
            self.feature_shape = tuple(int(d) for d in feature_shape)  # type: ignore[assignment]
            self.generator = Generator(cfg.d_model, self.feature_shape, generator_device)
            self.pseudo_tokens = PseudoTokens(self.feature_shape[0], cfg.d_model, cfg.dropout, cfg.token_layout)

    @property
    def num_pseudo_tokens(self) -> int:
        """P = H*W of m (0 for a text-only model): encoder states are [text (T); pseudo-tokens (P)]."""
        return 0 if self.feature_shape is None else self.feature_shape[1] * self.feature_shape[2]

    # ------------------------------------------------------------------ text
    def _require_generator(self, what: str) -> None:
        if self.text_only:
            raise IkdError(f"{what} needs the multimodal model; this one is text-only (model.text_only: true)")

    def _embed_source(self, src: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """src [B, T] -> (encoder input x [B, T, d] (after dropout), t [B, d], text pad mask [B, T]).

        t is the masked mean of the embedded source over its real tokens, EOS included (eq. 5). By default
        it is taken before embedding dropout, as eq. 5 has it; model.text_feature "dropout" takes it after,
        where the authors' code happens to read it (a train/test mismatch for the generator's BatchNorm)."""
        text_pad = src.eq(self.pad)
        undropped = self.embed.scaled(src)
        x = self.embed.dropout(undropped)
        if self.text_only:
            return x, x.new_zeros(()), text_pad
        t = masked_mean(undropped if self.text_feature == "embedding" else x, text_pad)
        return x, t, text_pad

    def global_text_feature(self, src: Tensor) -> Tensor:
        """src [B, T] -> t [B, d] (eq. 5), as the encoder computes it in the current mode."""
        self._require_generator("global_text_feature")
        return self._embed_source(src)[1]

    def generate_m(self, src: Tensor) -> Tensor:
        """src [B, T] -> m [B, C, H, W] (the imagined last teacher feature map; no image needed)."""
        self._require_generator("generate_m")
        return self.generator(self._embed_source(src)[1])

    def encode(self, src: Tensor, return_attention: bool = False) -> EncoderOutput:
        """src [B, T] int64 (right-padded) -> EncoderOutput with states [B, L, d], L = T+P (T text-only,
        P without text queries)."""
        x_txt, t, text_pad = self._embed_source(src)
        n_text = src.size(1)
        if self.text_only:
            states, attn = self.encoder(x_txt, text_pad, n_text, None, return_attention)
            return EncoderOutput(states, text_pad, None, attn)
        m = self.generator(t)
        pseudo = self.pseudo_tokens(m)
        image_pad = text_pad.new_zeros(pseudo.shape[:2])
        if self.text_queries:
            queries = torch.cat([x_txt, pseudo], dim=1)
            pad_mask = torch.cat([text_pad, image_pad], dim=1)
            text = x_txt if self.kv_source == "embedding" else None
        else:  # the text stream is never updated, so "states" keys/values are the embedding too
            queries, pad_mask, text = pseudo, image_pad, x_txt
        states, attn = self.encoder(queries, text_pad, n_text, text, return_attention)
        return EncoderOutput(states, pad_mask, m, attn)

    def new_decoder_state(self) -> DecoderState:
        return self.decoder.new_state()

    def decode(self, tgt_in: Tensor, enc: EncoderOutput, state: DecoderState | None = None) -> Tensor:
        """tgt_in [B, U] -> logits [B, U, V]. With a state, tgt_in holds only the new token(s); cached
        keys/values are used and extended, positions continue from state.length; with state.reuse_logits
        (search) the logits are a buffer of the state that the next call overwrites. Incremental decoding
        (search) projects to the vocabulary in fp32 even under autocast: bf16 logits would tie close candidates
        and make GPU translations differ from fp32 ones."""
        start = 0 if state is None else state.length
        if state is not None and state.linears is None and tgt_in.size(1) == 1 and not self.training:
            state.linears, state.output = self._step_weights(packable(self.embed.weight))
        x = self.decoder(self.embed(tgt_in, start), enc.states, enc.pad_mask, state)
        if state is not None and state.output is not None and x.size(1) == 1:
            return state.output(x.view(x.size(0), x.size(2))).view(x.size(0), 1, -1)
        amp = state is not None and torch.is_autocast_enabled(x.device.type)
        out = None
        if state is not None and state.reuse_logits:
            dtype = torch.float32 if amp else x.dtype
            out = state.output_buffer(x.size(0) * x.size(1), self.vocab_size, dtype, x.device)
        if not amp:
            return self.embed.logits(x, out)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.embed.logits(x.float(), out)

    def _step_weights(self, pack: bool) -> tuple[list[StepLinears], Dense | None]:
        """The decoder layers' and the output projection's linear maps for one-token steps, prepacked for oneDNN
        when `pack` (the output projection is used only then: otherwise `decode` keeps its own path, fp32
        logits under autocast included). Built once, and again when a weight has changed since (training
        between searches)."""
        key = (pack, tuple((p.data_ptr(), p._version) for p in self.parameters()))
        if getattr(self, "_step_key", None) != key:
            with torch.no_grad():
                output = Dense(self.embed.weight, None, pack) if pack else None
                self._step_cache = (self.decoder.step_linears(pack), output)
            self._step_key = key
        return self._step_cache

    def forget_step_weights(self) -> None:
        """Drop the prepared step weights, so that the next search prepares them from today's weights: needed
        after an optimiser update that does not bump the parameters' version counters (fused Adam)."""
        self._step_key = None

    def forward(self, src: Tensor, tgt_in: Tensor) -> tuple[Tensor, EncoderOutput]:
        """Teacher-forced pass: src [B, T], tgt_in [B, U] -> (logits [B, U, V], the encoder output with m)."""
        enc = self.encode(src)
        return self.decode(tgt_in, enc), enc


def build_translator(
    cfg: ModelConfig,
    vocab_size: int,
    pad: int = 1,
    feature_shape: Shape | None = None,
    generator_device: str | None = None,
) -> TranslationModel:
    """The translator `cfg` describes; `feature_shape` (C, H, W) of the teacher's last map when multimodal
    (`ikd.model.distiller.teacher_feature_shape` computes it without building a CNN's weights)."""
    return TranslationModel(cfg, vocab_size, pad, None if cfg.text_only else feature_shape, generator_device)
