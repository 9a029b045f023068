"""IKDModel: the Transformer-Tiny translator with the multimodal feature generator, pseudo-tokens, the
frozen CNN teacher and the trainable inverted-CNN student (paper section 3; DESIGN.md section 3).

Translation is image-free: m is generated from the source text alone. Images only feed the two
distillation losses in `forward` (IrM-KD, eq. 7, and IaM-KD, eq. 8).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ikd.errors import IkdError
from ikd.model.transformer import Decoder, DecoderState, Embeddings, Encoder
from ikd.model.vision import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Generator,
    build_student,
    build_teacher,
    distance,
    kd_losses,
    masked_mean,
)
from ikd.recipe import Recipe


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
    layout "raw": the authors' `m.reshape(B, P, C)`, i.e. chunks of consecutive channels (REFERENCE 2.4).
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


class IKDModel(nn.Module):
    """The IKD-MMT translator. Build it with `build_model`; the vision modules come from ikd.model.vision.

    text_only (recipe.model.text_only): a plain Transformer: no generator, pseudo-tokens, teacher or student.
    """

    def __init__(
        self,
        recipe: Recipe,
        vocab_size: int,
        pad: int = 1,
        *,
        generator: nn.Module | None = None,
        teacher: nn.Module | None = None,
        student: nn.Module | None = None,
    ) -> None:
        super().__init__()
        cfg = recipe.model
        if cfg.kv_source not in ("embedding", "states"):
            raise IkdError(f"model.kv_source: {cfg.kv_source!r} is not one of embedding, states")
        if cfg.norm not in ("pre", "post"):
            raise IkdError(f"model.norm: {cfg.norm!r} is not one of pre, post")
        if not 0 <= pad < vocab_size:
            raise IkdError(f"pad id {pad} is outside the vocabulary of {vocab_size} tokens")
        self.pad = pad
        self.vocab_size = vocab_size
        self.d_model = cfg.d_model
        self.text_only = cfg.text_only
        self.text_queries = cfg.text_queries
        self.kv_source = cfg.kv_source
        self.grain = recipe.kd.grain
        self.distance = recipe.kd.distance
        self.image_size = recipe.vision.image_size
        self.channels_last = recipe.train.channels_last
        self.uses_kd = not cfg.text_only and (recipe.kd.lambda_irm > 0 or recipe.kd.lambda_iam > 0)

        self.embed = Embeddings(vocab_size, cfg.d_model, pad, cfg.dropout, cfg.max_positions)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

        self.generator = generator
        self.teacher = teacher
        self.student = student
        self.pseudo_tokens: PseudoTokens | None = None
        self.out_shape: tuple[int, int, int] | None = None
        if not cfg.text_only:
            if generator is None or teacher is None or student is None:
                raise ValueError("a multimodal IKDModel needs generator, teacher and student (use build_model)")
            self.out_shape = tuple(teacher.out_shape)
            self.pseudo_tokens = PseudoTokens(self.out_shape[0], cfg.d_model, cfg.dropout, cfg.token_layout)
            teacher.requires_grad_(False)
            teacher.eval()
        self.register_buffer("_pixel_scale", 1.0 / (255.0 * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)), False)
        self.register_buffer(
            "_pixel_shift",
            -torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
            False,
        )
        self._resize_reported = False

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> IKDModel:
        """As nn.Module.train, but the teacher stays in eval mode (frozen, running BatchNorm statistics)."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    @property
    def num_pseudo_tokens(self) -> int:
        """P = H*W of m (0 for a text-only model): encoder states are [text (T); pseudo-tokens (P)]."""
        return 0 if self.out_shape is None else self.out_shape[1] * self.out_shape[2]

    # ------------------------------------------------------------------ text
    def _require_vision(self, what: str) -> None:
        if self.text_only:
            raise IkdError(f"{what} needs the multimodal model; this one is text-only (model.text_only: true)")

    def global_text_feature(self, x_txt: Tensor, text_pad: Tensor) -> Tensor:
        """t [B, d]: mean of the embedded source (scaled embedding + positions, after dropout, as the
        authors) over the real tokens, EOS included (eq. 5)."""
        return masked_mean(x_txt, text_pad)

    def generate_m(self, src: Tensor) -> Tensor:
        """src [B, T] -> m [B, C, H, W] (the imagined last teacher feature map; no image needed)."""
        self._require_vision("generate_m")
        return self.generator(self.global_text_feature(self.embed(src), src.eq(self.pad)))

    def encode(self, src: Tensor, return_attention: bool = False) -> EncoderOutput:
        """src [B, T] int64 (right-padded) -> EncoderOutput with states [B, L, d], L = T+P (T text-only,
        P without text queries)."""
        text_pad = src.eq(self.pad)
        x_txt = self.embed(src)
        n_text = src.size(1)
        if self.text_only:
            states, attn = self.encoder(x_txt, text_pad, n_text, None, return_attention)
            return EncoderOutput(states, text_pad, None, attn)
        m = self.generator(self.global_text_feature(x_txt, text_pad))
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
        (search) the logits are a buffer of the state that the next call overwrites. Incremental decoding (search)
        projects to the vocabulary in fp32 even under autocast: bf16 logits would tie close candidates and
        make GPU translations differ from fp32 ones."""
        start = 0 if state is None else state.length
        x = self.decoder(self.embed(tgt_in, start), enc.states, enc.pad_mask, state)
        amp = state is not None and torch.is_autocast_enabled(x.device.type)
        out = None
        if state is not None and state.reuse_logits:
            dtype = torch.float32 if amp else x.dtype
            out = state.output_buffer(x.size(0) * x.size(1), self.vocab_size, dtype, x.device)
        if not amp:
            return self.embed.logits(x, out)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.embed.logits(x.float(), out)

    # ------------------------------------------------------------------ images
    def normalise_images(self, images: Tensor) -> Tensor:
        """uint8 [B, 3, S, S] -> float [B, 3, s, s] ImageNet-normalised at the teacher's size s (bilinear,
        antialiased resize on the device when S differs); channels_last when the recipe asks for it."""
        if images.dtype != torch.uint8:
            raise IkdError(f"images must be uint8 [B, 3, S, S] pixels, got {images.dtype}")
        if images.dim() != 4 or images.size(1) != 3:
            raise IkdError(f"images must be uint8 [B, 3, S, S], got shape {tuple(images.shape)}")
        x = torch.addcmul(self._pixel_shift, images.float(), self._pixel_scale)
        if x.shape[-2:] != (self.image_size, self.image_size):
            if not self._resize_reported:
                self._resize_reported = True
                warnings.warn(
                    f"images are {x.shape[-2]}x{x.shape[-1]} but vision.image_size is {self.image_size}: "
                    "resizing on the device (bilinear, antialiased); prepare the data at that size to avoid it",
                    stacklevel=2,
                )
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def teacher_features(self, images: Tensor) -> Tensor:
        """uint8 images [B, 3, S, S] -> the teacher's last feature map [B, C, H, W] (what m is distilled to)."""
        self._require_vision("teacher_features")
        return self.teacher(self.normalise_images(images), "model")[-1]

    def imagine(self, src: Tensor) -> Tensor:
        """src [B, T] -> the student's synthetic image I_s [B, 3, s, s] (normalised pixel space)."""
        self._require_vision("imagine")
        return self.student.imagine(self.generate_m(src))

    def distill(self, m: Tensor, images: Tensor) -> dict[str, Tensor]:
        """IrM-KD and IaM-KD for generated m [B, C, H, W] and real uint8 images [B, 3, S, S].

        Returns {"irm", "iam"} (scalars with gradient; lambdas not applied) plus detached components:
        "image" (the d(I_r, I_s) term, in both losses), "irm_feat" and "iam_feat" (their feature terms)."""
        real = self.normalise_images(images)
        with torch.no_grad():
            teacher_real = self.teacher(real, self.grain)
        student = self.student(m, self.grain)
        teacher_syn = self.teacher(student[0], self.grain)
        irm, iam = kd_losses(teacher_real, student, teacher_syn, self.distance)
        out = {"irm": irm, "iam": iam}
        with torch.no_grad():
            out["image"] = distance(teacher_real[0], student[0], self.distance)
            out["irm_feat"] = irm.detach() - out["image"]
            out["iam_feat"] = iam.detach() - out["image"]
        return out

    # ------------------------------------------------------------------ training
    def forward(self, src: Tensor, tgt_in: Tensor, images: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """src [B, T], tgt_in [B, U], images uint8 [B, 3, S, S] or None -> (logits [B, U, V], kd dict).

        kd is empty without images, for text-only models, and when both KD weights are 0."""
        enc = self.encode(src)
        logits = self.decode(tgt_in, enc)
        kd: dict[str, Tensor] = {}
        if images is not None and self.uses_kd:
            kd = self.distill(enc.m, images)
        return logits, kd


def build_model(recipe: Recipe, vocab_size: int, pad: int = 1, load_teacher_weights: bool = True) -> IKDModel:
    """The model a recipe describes. load_teacher_weights=False builds a random teacher (use it when a
    checkpoint's state dict, which holds the teacher, will be loaded: inference never downloads)."""
    if recipe.model.text_only:
        return IKDModel(recipe, vocab_size, pad)
    v = recipe.vision
    teacher = build_teacher(v.backbone, v.teacher_weights if load_teacher_weights else "none", v.image_size)
    out_shape = tuple(teacher.out_shape)
    student = build_student(v.backbone, v.image_size, out_shape)
    generator = Generator(recipe.model.d_model, out_shape)
    if recipe.train.channels_last:
        teacher.to(memory_format=torch.channels_last)
        student.to(memory_format=torch.channels_last)
    return IKDModel(recipe, vocab_size, pad, generator=generator, teacher=teacher, student=student)
