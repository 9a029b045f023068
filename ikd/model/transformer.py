"""Transformer-Tiny building blocks: shared embeddings with sinusoidal positions, attention through
`scaled_dot_product_attention`, the multimodal encoder layer (paper eqs. 1-3) and a decoder with an
incremental key/value cache for search.

Shapes: B batch, T source tokens, P pseudo-tokens, L encoder states (T+P, T or P), U target tokens,
d model width, h heads, dh = d/h. Boolean masks follow SDPA: True = this key takes part.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ikd.recipe import ModelConfig

SHORT_SOFTMAX = 16  # torch's CPU softmax over a last dimension shorter than this runs 5-10x slower per element
# Self-attention of a one-token step reads at least this many cached positions (the ones not yet decoded are
# masked): on a CPU, torch's batched matmul of [1, T] x [T, dh] for T < 15 takes 1.5-4.5x the time it takes at 16
# (measured with 2,560 matrices, dh 32: 215-642 us for T = 2-12, 139 us for T = 16).
PADDED_KEYS = 16


def sinusoidal_table(positions: Tensor, dim: int) -> Tensor:
    """fairseq's sinusoidal encoding of `positions` [N] -> [N, dim]: sin of every frequency, then cos."""
    half = dim // 2
    scale = math.log(10000.0) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -scale)
    angles = positions.to(torch.float32)[:, None] * freqs[None, :]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        table = F.pad(table, (0, 1))
    return table


class Embeddings(nn.Module):
    """One matrix for the encoder input, the decoder input and the tied output projection (no bias).

    Tokens are embedded as dropout(sqrt(d) * E[token] + PE(position)); pad tokens get no positional
    vector. Position i of a sequence uses fairseq's position pad+1+i, so the numbers match fairseq's
    right-padded inputs.
    """

    def __init__(self, vocab_size: int, d_model: int, pad: int, dropout: float, max_positions: int) -> None:
        super().__init__()
        self.pad = pad
        self.d_model = d_model
        self.scale = math.sqrt(d_model)
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("positions", self._table(max_positions), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.embed.weight, mean=0.0, std=self.d_model**-0.5)
        with torch.no_grad():
            self.embed.weight[self.pad].zero_()

    def _table(self, n: int) -> Tensor:
        return sinusoidal_table(torch.arange(n) + self.pad + 1, self.d_model)

    @property
    def weight(self) -> Tensor:
        """The shared matrix [V, d]."""
        return self.embed.weight

    def position_vectors(self, start: int, length: int) -> Tensor:
        """Positional vectors of positions start..start+length-1 -> [length, d] (the table grows on demand)."""
        end = start + length
        if end > self.positions.size(0):
            self.positions = self._table(max(end, 2 * self.positions.size(0))).to(self.positions.device)
        return self.positions[start:end]

    def scaled(self, tokens: Tensor, start: int = 0) -> Tensor:
        """tokens [B, U] int64 -> sqrt(d) * E[token] + PE(position) [B, U, d], before dropout."""
        x = self.embed(tokens) * self.scale
        pos = self.position_vectors(start, tokens.size(1)).to(x.dtype)
        return x + pos[None] * tokens.ne(self.pad)[..., None].to(x.dtype)

    def forward(self, tokens: Tensor, start: int = 0) -> Tensor:
        """tokens [B, U] int64 -> [B, U, d]; `start` is the position of tokens[:, 0] (incremental decoding)."""
        return self.dropout(self.scaled(tokens, start))

    def logits(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """Tied output projection: x [..., d] -> logits [..., V], written into `out` [prod(...), V] when
        given (a reused buffer: a fresh [N, V] tensor per decoding step costs more in page faults than
        the matmul itself)."""
        if out is None:
            return F.linear(x, self.embed.weight)
        flat = x.reshape(-1, x.size(-1))
        return torch.mm(flat, self.embed.weight.t(), out=out).view(*x.shape[:-1], out.size(-1))


class Attention(nn.Module):
    """Multi-head attention with one fused in-projection [3d, d] (q rows, then k, then v).

    Self-attention projects q/k/v in one matmul; cross-attention (or keys from another sequence) uses
    the q rows on the queries and the k/v rows on the keys, so both cases share the same parameters
    as fairseq's separate q/k/v projections.
    """

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.d_model = d_model
        self.heads = heads
        self.head_dim = d_model // heads
        self.dropout = dropout
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # fairseq: xavier_uniform with gain 1/sqrt(2) per q/k/v matrix, default bias; out_proj xavier, bias 0
        d = self.d_model
        with torch.no_grad():
            for i in range(3):
                nn.init.xavier_uniform_(self.in_proj.weight[i * d : (i + 1) * d], gain=2**-0.5)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: Tensor) -> Tensor:
        """[B, L, d] -> [B, h, L, dh]."""
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def project_self(self, x: Tensor, n_kv: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Queries from all of x [B, Lq, d]; keys/values from its first n_kv rows (all when None).
        Returns q [B, h, Lq, dh], k and v [B, h, n_kv, dh]."""
        if n_kv is None or n_kv == x.size(1):
            q, k, v = self.in_proj(x).chunk(3, dim=-1)
            return self._heads(q), self._heads(k), self._heads(v)
        k, v = self.project_kv(x[:, :n_kv])
        return self.project_q(x), k, v

    def project_q(self, x: Tensor) -> Tensor:
        """x [B, Lq, d] -> q [B, h, Lq, dh]."""
        d = self.d_model
        return self._heads(F.linear(x, self.in_proj.weight[:d], self.in_proj.bias[:d]))

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, Lk, d] -> k, v [B, h, Lk, dh]."""
        d = self.d_model
        k, v = F.linear(x, self.in_proj.weight[d:], self.in_proj.bias[d:]).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """q [B, h, Lq, dh], k/v [B, h, Lk, dh], mask bool broadcastable to [B, h, Lq, Lk] (True = attend)
        -> (output [B, Lq, d], probabilities [B, h, Lq, Lk] when need_weights else None)."""
        p = self.dropout if self.training else 0.0
        probs = None
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5
            if is_causal:
                causal = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool, device=q.device).tril()
                mask = causal if mask is None else mask & causal
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            probs = scores.float().softmax(dim=-1).to(q.dtype)
            out = F.dropout(probs, p, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal)
        return self.out_proj(out.transpose(1, 2).flatten(2)), probs


class FeedForward(nn.Module):
    """fc1 -> ReLU -> activation dropout -> fc2 (xavier weights, zero biases, as fairseq)."""

    def __init__(self, d_model: int, ffn: int, activation_dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, ffn)
        self.fc2 = nn.Linear(ffn, d_model)
        self.activation_dropout = nn.Dropout(activation_dropout)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.fc1(x))
        return self.fc2(self.activation_dropout(h) if self.training else h)


class EncoderLayer(nn.Module):
    """Encoder layer; multimodal when the keys/values differ from the queries (paper eqs. 1-3).

    Queries are x [B, Lq, d] (text states and/or pseudo-tokens). Keys/values are text only: either
    `text` [B, T, d] (the embedded source, re-normalised by this layer's own attention LayerNorm in
    pre-norm, as the authors do) or, when `text` is None, the first `n_text` rows of x (the current text
    states; plain self-attention when n_text == Lq).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.pre_norm = cfg.norm == "pre"
        self.self_attn = Attention(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.self_attn_norm = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn, cfg.activation_dropout)
        self.ffn_norm = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, x: Tensor, key_mask: Tensor, n_text: int, text: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """x [B, Lq, d], key_mask [B, 1, 1, T] bool (True = real token) -> (x [B, Lq, d], probs [B, h, Lq, T])."""
        h = self.self_attn_norm(x) if self.pre_norm else x
        if text is None:
            q, k, v = self.self_attn.project_self(h, n_text)
        else:
            kv_in = self.self_attn_norm(text) if self.pre_norm else text
            q = self.self_attn.project_q(h)
            k, v = self.self_attn.project_kv(kv_in)
        a, probs = self.self_attn.attend(q, k, v, key_mask, need_weights=need_weights)
        x = x + self.dropout(a)
        if not self.pre_norm:
            x = self.self_attn_norm(x)
        h = self.ffn_norm(x) if self.pre_norm else x
        x = x + self.dropout(self.ffn(h))
        if not self.pre_norm:
            x = self.ffn_norm(x)
        return x, probs


class Encoder(nn.Module):
    """A stack of EncoderLayers plus a final LayerNorm in pre-norm."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model) if cfg.norm == "pre" else None

    def forward(
        self,
        x: Tensor,
        text_pad_mask: Tensor,
        n_text: int,
        text: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """x [B, Lq, d] queries; text_pad_mask [B, T] bool (True = pad); `text` [B, T, d] fixed keys/values
        for every layer, or None (keys/values = the current states' first n_text rows).
        Returns (states [B, Lq, d], first layer's attention probabilities [B, h, Lq, T] or None)."""
        key_mask = ~text_pad_mask[:, None, None, :]
        first = None
        for i, layer in enumerate(self.layers):
            x, probs = layer(x, key_mask, n_text, text, need_weights=need_weights and i == 0)
            if i == 0:
                first = probs
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, first


@dataclass
class DecoderState:
    """Incremental decoding cache.

    Self-attention keys/values of all steps so far live in one time-major buffer for every layer,
    `kv` [capacity, layers, 2, allocated rows, d], of which the first `rows` rows are in use: a step writes
    its new keys/values in place, and a beam reorder is one `index_select` into the spare buffer of the same
    shape, so a step neither concatenates nor allocates. Cross-attention keys/values [S, h, L, dh] are
    computed once from the encoder states and kept per source sentence: the `beam` consecutive rows of a
    sentence share them and their queries are stacked (one attention call per sentence, the encoder side
    never copied per beam). `length` is the number of target positions already decoded. The encoder's key
    mask [S, 1, 1, L] is cached too, so after the first step `decode` reads nothing from the EncoderOutput
    it is given."""

    layers: int
    cross_k: list[Tensor | None] = field(default_factory=list)
    cross_v: list[Tensor | None] = field(default_factory=list)
    cross_mask: Tensor | None = None
    length: int = 0
    beam: int = 1
    rows: int = 0
    kv: Tensor | None = None
    spare: Tensor | None = None
    logits: Tensor | None = None
    _cross_bias: Tensor | None = None
    reuse_logits: bool = False  # search sets it: decode then returns logits in `logits`, overwritten next step
    linears: list[StepLinears] | None = None  # each layer's linear maps for one-token steps (Decoder.step_linears)
    output: Dense | None = None  # the output projection of one-token steps (set by the model)

    @classmethod
    def empty(cls, layers: int) -> DecoderState:
        return cls(layers, [None] * layers, [None] * layers)

    # ------------------------------------------------------------------ self-attention cache
    def reserve(self, rows: int, new: int, d: int, dtype: torch.dtype, device: torch.device) -> None:
        """Room for `new` more positions of `rows` rows of width d."""
        need = self.length + new
        if self.kv is None:
            # zeros: a one-token step reads PADDED_KEYS positions from the start (those not yet written get
            # probability 0, and must not hold NaN)
            shape = (max(PADDED_KEYS, 2 * need), self.layers, 2, rows, d)
            self.kv = torch.zeros(shape, dtype=dtype, device=device)
            self.spare, self.rows = torch.zeros_like(self.kv), rows
            return
        if rows != self.rows:
            raise ValueError(f"the decoder state holds {self.rows} rows but the input has {rows}")
        if need > self.kv.size(0):  # grow in time; allocate only the rows still in use
            shape = (2 * need, self.layers, 2, rows, self.kv.size(4))
            kv = self.kv.new_zeros(shape)  # zeros, as above: reorders may view any part of these as filler
            kv[: self.length, :, :, :rows] = self.kv[: self.length, :, :, :rows]
            self.kv, self.spare = kv, kv.new_zeros(shape)

    def append_one(self, layer: int, kv_new: Tensor) -> tuple[Tensor, Tensor]:
        """kv_new [N, 2d] (this layer's keys, then values, of one new position) -> the keys and values of
        max(length+1, PADDED_KEYS) positions, each [keys, N, d]: the first length+1 are the positions so far,
        any others are finite filler that the step masks."""
        n, two_d = kv_new.shape
        t = self.length
        self.kv[t, layer, :, :n].copy_(kv_new.view(n, 2, two_d // 2).transpose(0, 1))
        keys = max(t + 1, PADDED_KEYS)
        return self.kv[:keys, layer, 0, :n], self.kv[:keys, layer, 1, :n]

    def append(self, layer: int, kv_new: Tensor) -> tuple[Tensor, Tensor]:
        """kv_new [N, u, 2d] (this layer's new keys, then values) -> all keys and values so far, each
        [length+u, N, d] (time-major views of the buffer)."""
        n, u, two_d = kv_new.shape
        t = self.length
        self.kv[t : t + u, layer, :, :n].copy_(kv_new.view(n, u, 2, two_d // 2).permute(1, 2, 0, 3))
        return self.kv[: t + u, layer, 0, :n], self.kv[: t + u, layer, 1, :n]

    def _reorder_self(self, index: Tensor) -> None:
        if self.kv is None:
            return
        t, n_new = self.length, index.numel()
        shape = (self.kv.size(0), self.layers, 2, n_new, self.kv.size(4))
        if n_new > self.kv.size(3):  # more rows than allocated (beam expansion): new buffers
            target, spare = self.kv.new_zeros(shape), None
        elif 4 * n_new <= self.kv.size(3):
            # few rows left: the same memory viewed with fewer rows keeps the rows in use close together (what
            # it held before is finite, as the padded keys need)
            target, spare = _narrowed(self.spare, shape), None
        else:
            target, spare = self.spare, self.kv
        if t:
            d = self.kv.size(4)
            src = self.kv[:t, :, :, : self.rows].view(-1, self.rows, d)
            torch.index_select(src, 1, index, out=target[:t, :, :, :n_new].view(-1, n_new, d))
        if spare is None:
            spare = _narrowed(self.kv, shape) if self.kv.numel() >= target.numel() else target.new_zeros(shape)
        self.kv, self.spare, self.rows = target, spare, n_new

    def output_buffer(self, rows: int, width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """A [rows, width] buffer for this step's logits, reused across steps (valid until the next step)."""
        buf = self.logits
        if buf is None or buf.numel() < rows * width or buf.dtype != dtype or buf.device != device:
            self.logits = buf = torch.empty(rows * width, dtype=dtype, device=device)
        return buf[: rows * width].view(rows, width)

    # ------------------------------------------------------------------ reordering
    def reorder(self, index: Tensor) -> DecoderState:
        """Keep/reorder batch rows: row i becomes the old row index[i], for every cache. In place. Cross-
        attention caches shared by a sentence's beams become per-row ones (beam 1): any rows may now mix."""
        self._reorder_self(index)
        per_row = index.div(self.beam, rounding_mode="floor") if self.beam > 1 else index
        self.beam = 1
        self._select_cross(per_row)
        return self

    def reorder_beams(self, index: Tensor) -> DecoderState:
        """Reorder rows within each sentence's block of beams: only the self-attention cache moves (cross-
        attention caches are per sentence, or equal across a sentence's rows). In place."""
        self._reorder_self(index)
        return self

    def expand_beams(self, beam: int) -> DecoderState:
        """Every row (one per sentence) becomes `beam` consecutive rows that share its cross-attention cache."""
        if self.beam != 1 or self.kv is None:
            raise ValueError("expand_beams needs a state with one decoded row per sentence")
        self._reorder_self(torch.arange(self.rows, device=self.kv.device).repeat_interleave(beam))
        self.beam = beam
        return self

    def select_sentences(self, keep: Tensor, rows: Tensor) -> DecoderState:
        """Keep the sentences `keep` [S'] (cross entries) with rows `rows` [S' * beam] (their new beams,
        within their blocks). In place."""
        self._reorder_self(rows)
        self._select_cross(keep)
        return self

    def cross_bias(self, dtype: torch.dtype) -> Tensor:
        """The encoder key mask as an additive bias [S, 1, 1, L] (0 / -inf): one add per attention call."""
        bias = self._cross_bias
        if bias is None or bias.dtype != dtype or bias.size(0) != self.cross_mask.size(0):
            zeros = torch.zeros(self.cross_mask.shape, dtype=dtype, device=self.cross_mask.device)
            self._cross_bias = bias = zeros.masked_fill_(~self.cross_mask, float("-inf"))
        return bias

    def _select_cross(self, index: Tensor) -> None:
        for cache in (self.cross_k, self.cross_v):
            for i, t in enumerate(cache):
                if t is not None:
                    cache[i] = t.index_select(0, index)
        if self.cross_mask is not None:
            self.cross_mask = self.cross_mask.index_select(0, index)
        if self._cross_bias is not None:
            self._cross_bias = self._cross_bias.index_select(0, index)


def _narrowed(buffer: Tensor, shape: tuple[int, ...]) -> Tensor:
    """The first elements of a contiguous buffer viewed with a smaller shape."""
    return buffer.view(-1)[: math.prod(shape)].view(shape)


@functools.cache
def onednn_linear_available() -> bool:
    """Whether torch's oneDNN linear (prepacked weights) runs here: a CPU build with oneDNN, and not switched off
    with IKD_ONEDNN=0. On CPUs where torch's BLAS is slow (MKL on AMD: 2-3x slower than oneDNN at these
    shapes) it speeds up every linear map of a decoding step."""
    if os.environ.get("IKD_ONEDNN", "1") == "0" or not torch.backends.mkldnn.is_available():
        return False
    try:
        with torch.no_grad():
            w = torch.ops.mkldnn._reorder_linear_weight(torch.ones(8, 4), None)
            y = torch.ops.mkldnn._linear_pointwise(torch.ones(2, 4), w, torch.ones(8), "none", [], "")
        return bool(torch.equal(y, torch.full((2, 8), 5.0)))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


class Dense:
    """y = x W^T + b of a decoding step, x [N, k] -> [N, n]; with `pack` (float32 on a CPU) through oneDNN with the
    weight reordered once into its blocked layout, the bias, ReLU or residual add fused into the same call.
    Either way the result is the linear map's, rounding aside (equal bits to F.linear in the cases measured
    with k = 128)."""

    __slots__ = ("weight", "bias", "packed")

    def __init__(self, weight: Tensor, bias: Tensor | None, pack: bool) -> None:
        self.weight, self.bias = weight.detach(), None if bias is None else bias.detach()
        self.packed = None
        if pack:
            self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.contiguous(), None)

    def __call__(self, x: Tensor) -> Tensor:
        if self.packed is None:
            return F.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise.default(x, self.packed, self.bias, "none", [], "")

    def relu(self, x: Tensor) -> Tensor:
        if self.packed is None:
            return F.relu(F.linear(x, self.weight, self.bias))
        return torch.ops.mkldnn._linear_pointwise.default(x, self.packed, self.bias, "relu", [None], "")

    def add(self, x: Tensor, other: Tensor) -> Tensor:
        """other + x W^T + b."""
        if self.packed is None:
            return other + F.linear(x, self.weight, self.bias)
        # the explicit overload: the packet would first try the unary one and format the tensors of its error
        return torch.ops.mkldnn._linear_pointwise.binary(x, other, self.packed, self.bias, "add")


@dataclass
class StepLinears:
    """The linear maps of one decoder layer's step."""

    in_proj: Dense
    out_proj: Dense
    cross_q: Dense
    cross_out: Dense
    fc1: Dense
    fc2: Dense


def packable(x: Tensor) -> bool:
    """Whether a step on x may use oneDNN linears: float32 on a CPU, outside CPU autocast."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and onednn_linear_available()
    )


def _norm(norm: nn.LayerNorm, x: Tensor) -> Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _heads_time_major(x: Tensor, heads: int) -> Tensor:
    """[T, N, d] -> [N, h, T, dh] (a view: N and h merge into one batch dimension for matmul)."""
    t, n, d = x.shape
    return x.view(t, n, heads, d // heads).permute(1, 2, 0, 3)


def _attend_small(
    attn: Attention, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, bias: Tensor | None = None
) -> Tensor:
    """Attention for a few queries per row (incremental decoding), as two batched matmuls: for one query,
    the fused SDPA kernel spends more on tiling than on arithmetic. q [B, h, Lq, dh], k/v [B, h, Lk, dh],
    mask bool broadcastable to [B, h, Lq, Lk] (True = attend), or bias: the same as 0 / -inf to add
    -> [B, Lq, d]."""
    scores = torch.matmul(q, k.transpose(-2, -1)).mul_(attn.head_dim**-0.5)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    if bias is not None:
        scores = scores.add_(bias)
    out = torch.matmul(scores.softmax(dim=-1), v)
    return attn.out_proj(out.transpose(1, 2).flatten(2))


def softmax_last(scores: Tensor) -> Tensor:
    """softmax over the last dimension of attention scores, in place where that is faster: on a CPU, rows
    shorter than SHORT_SOFTMAX keys (most decoding steps on Multi30K: short sources, short prefixes) go
    through max, exp and sum as whole-tensor operations (measured at [2560, 1, 15]: 87 us against torch's
    453 us; the values agree within 1.2e-7)."""
    if scores.device.type != "cpu" or scores.size(-1) >= SHORT_SOFTMAX:
        return scores.softmax(dim=-1)
    scores = scores.sub_(scores.amax(dim=-1, keepdim=True)).exp_()
    return scores.div_(scores.sum(dim=-1, keepdim=True))


def _attend_one(q: Tensor, k: Tensor, v: Tensor, scale: float, length: int) -> Tensor:
    """Attention of one query per row over the time-major cache: q [N*h, 1, dh] contiguous, k/v [N*h, K, dh]
    views of which the first `length` keys are real (the rest is padding to PADDED_KEYS, masked here)
    -> [N*h, 1, dh]. The same batched matmuls as `_attend_small`, without its 4-d reshapes."""
    scores = torch.bmm(q, k.transpose(1, 2)).mul_(scale)
    if length < scores.size(-1):
        scores[:, :, length:] = float("-inf")
    return torch.bmm(softmax_last(scores), v)


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention over the encoder states, feed-forward."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.pre_norm = cfg.norm == "pre"
        self.self_attn = Attention(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.self_attn_norm = nn.LayerNorm(cfg.d_model)
        self.cross_attn = Attention(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.cross_attn_norm = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn, cfg.activation_dropout)
        self.ffn_norm = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def _residual(self, x: Tensor, y: Tensor, norm: nn.LayerNorm) -> Tensor:
        x = x + (self.dropout(y) if self.training else y)  # eval: no call per sublayer and step
        return x if self.pre_norm else norm(x)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        memory_mask: Tensor,
        state: DecoderState | None = None,
        index: int = 0,
    ) -> Tensor:
        """x [B, U, d]; memory [B, L, d] encoder states; memory_mask [B, 1, 1, L] bool (True = real);
        `state`/`index`: this layer's cache slot. Returns [B, U, d]."""
        if state is None:
            return self._forward_full(x, memory, memory_mask)
        n, u, d = x.shape
        heads = self.self_attn.heads
        h = self.self_attn_norm(x) if self.pre_norm else x
        qkv = self.self_attn.in_proj(h)
        q = self.self_attn._heads(qkv[..., :d])
        k, v = state.append(index, qkv[..., d:])
        mask = None
        if u > 1:  # several new tokens (after a prefix): each sees the prefix and itself
            mask = torch.ones(u, k.size(0), dtype=torch.bool, device=x.device).tril(state.length)
        a = _attend_small(self.self_attn, q, _heads_time_major(k, heads), _heads_time_major(v, heads), mask)
        x = self._residual(x, a, self.self_attn_norm)

        h = self.cross_attn_norm(x) if self.pre_norm else x
        if state.cross_k[index] is None:  # contiguous once, so that every step's matmul reads them in place
            ck, cv = self.cross_attn.project_kv(memory)
            state.cross_k[index], state.cross_v[index] = ck.contiguous(), cv.contiguous()
        ck, cv = state.cross_k[index], state.cross_v[index]
        # the rows of a sentence's beams are consecutive: stack their queries against the shared keys
        s = ck.size(0)
        q = self.cross_attn.project_q(h.reshape(s, (n // s) * u, d))
        a = _attend_small(self.cross_attn, q, ck, cv, bias=state.cross_bias(q.dtype)).view(n, u, d)
        x = self._residual(x, a, self.cross_attn_norm)

        h = self.ffn_norm(x) if self.pre_norm else x
        return self._residual(x, self.ffn(h), self.ffn_norm)

    def step(self, x: Tensor, memory: Tensor, state: DecoderState, index: int, w: StepLinears) -> Tensor:
        """One new position per row in eval mode, x [N, d] -> [N, d]: `forward` with a state and U = 1, computed
        on 2-d inputs without module calls or 4-d reshapes (a decoding step at a few rows is mostly Python
        dispatch), its linear maps `w` (oneDNN with prepacked weights where available)."""
        n, d = x.shape
        heads, dh = self.self_attn.heads, self.self_attn.head_dim
        scale = dh**-0.5
        pre = self.pre_norm

        h = _norm(self.self_attn_norm, x) if pre else x
        qkv = w.in_proj(h)
        k, v = state.append_one(index, qkv[:, d:])
        q = qkv[:, :d].reshape(n * heads, 1, dh)
        k = k.view(k.size(0), n * heads, dh).transpose(0, 1)
        v = v.view(v.size(0), n * heads, dh).transpose(0, 1)
        x = w.out_proj.add(_attend_one(q, k, v, scale, state.length + 1).view(n, d), x)
        if not pre:
            x = _norm(self.self_attn_norm, x)

        h = _norm(self.cross_attn_norm, x) if pre else x
        if state.cross_k[index] is None:
            ck, cv = self.cross_attn.project_kv(memory)
            state.cross_k[index], state.cross_v[index] = ck.contiguous(), cv.contiguous()
        ck, cv = state.cross_k[index], state.cross_v[index]
        s, length = ck.size(0), ck.size(2)
        rows = n // s  # a sentence's beams are consecutive rows: their queries share its keys
        q = w.cross_q(h).view(s, rows, heads, dh).transpose(1, 2).reshape(s * heads, rows, dh)
        scores = torch.bmm(q, ck.view(s * heads, length, dh).transpose(1, 2)).mul_(scale)
        scores.view(s, heads, rows, length).add_(state.cross_bias(scores.dtype))
        o = torch.bmm(softmax_last(scores), cv.view(s * heads, length, dh))
        x = w.cross_out.add(o.view(s, heads, rows, dh).transpose(1, 2).reshape(n, d), x)
        if not pre:
            x = _norm(self.cross_attn_norm, x)

        h = _norm(self.ffn_norm, x) if pre else x
        x = w.fc2.add(w.fc1.relu(h), x)
        return x if pre else _norm(self.ffn_norm, x)

    def step_linears(self, pack: bool) -> StepLinears:
        d = self.self_attn.d_model
        sa, ca, ffn = self.self_attn, self.cross_attn, self.ffn
        return StepLinears(
            Dense(sa.in_proj.weight, sa.in_proj.bias, pack),
            Dense(sa.out_proj.weight, sa.out_proj.bias, pack),
            Dense(ca.in_proj.weight[:d], ca.in_proj.bias[:d], pack),
            Dense(ca.out_proj.weight, ca.out_proj.bias, pack),
            Dense(ffn.fc1.weight, ffn.fc1.bias, pack),
            Dense(ffn.fc2.weight, ffn.fc2.bias, pack),
        )

    def _forward_full(self, x: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        """Training and full (non-incremental) decoding: causal self-attention over x itself."""
        h = self.self_attn_norm(x) if self.pre_norm else x
        q, k, v = self.self_attn.project_self(h)
        a, _ = self.self_attn.attend(q, k, v, None, is_causal=x.size(1) > 1)
        x = self._residual(x, a, self.self_attn_norm)

        h = self.cross_attn_norm(x) if self.pre_norm else x
        ck, cv = self.cross_attn.project_kv(memory)
        a, _ = self.cross_attn.attend(self.cross_attn.project_q(h), ck, cv, memory_mask)
        x = self._residual(x, a, self.cross_attn_norm)

        h = self.ffn_norm(x) if self.pre_norm else x
        return self._residual(x, self.ffn(h), self.ffn_norm)


class Decoder(nn.Module):
    """A stack of DecoderLayers plus a final LayerNorm in pre-norm."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model) if cfg.norm == "pre" else None

    def new_state(self) -> DecoderState:
        return DecoderState.empty(len(self.layers))

    def step_linears(self, pack: bool) -> list[StepLinears]:
        """Every layer's step linears, prepacked for oneDNN when `pack`."""
        with torch.no_grad():
            return [layer.step_linears(pack) for layer in self.layers]

    def forward(self, x: Tensor, memory: Tensor, memory_pad_mask: Tensor, state: DecoderState | None = None) -> Tensor:
        """x [B, U, d] embedded target; memory [B, L, d]; memory_pad_mask [B, L] bool (True = pad) -> [B, U, d]."""
        if state is not None:
            if state.cross_mask is None:
                state.cross_mask = ~memory_pad_mask[:, None, None, :]
            memory_mask = state.cross_mask
            # keys/values are stored as the projections compute them (the autocast dtype under autocast)
            amp = torch.is_autocast_enabled(x.device.type)
            dtype = torch.get_autocast_dtype(x.device.type) if amp else x.dtype
            state.reserve(x.size(0), x.size(1), x.size(-1), dtype, x.device)
        else:
            memory_mask = ~memory_pad_mask[:, None, None, :]
        if state is not None and x.size(1) == 1 and not self.training:
            x = x.view(x.size(0), x.size(2))
            if state.linears is None:
                state.linears = self.step_linears(packable(x))
            linears = state.linears
            for i, layer in enumerate(self.layers):
                x = layer.step(x, memory, state, i, linears[i])
            x = x.view(x.size(0), 1, x.size(1))
        else:
            for i, layer in enumerate(self.layers):
                x = layer(x, memory, memory_mask, state, i)
        if state is not None:
            state.length += x.size(1)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x
