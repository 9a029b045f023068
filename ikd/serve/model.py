"""The model behind the server: the checkpoint(s) loaded once, their identity (file names, sha256, languages,
recipe summary), batched translation for a set of search settings, and what the student imagines.

Everything here runs on the batcher's worker thread; nothing imports FastAPI."""

from __future__ import annotations

import hashlib
import io
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ikd.errors import IkdError
from ikd.inference.loading import Loaded
from ikd.inference.translator import SearchOptions, Translator

LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "cs": "Czech"}


class SearchKey(NamedTuple):
    """Settings that one batched search shares; requests with the same key are searched together."""

    input_mode: str
    beam: int
    lenpen: float


@dataclass
class Imagined:
    """One sentence seen by the multimodal encoder: its source pieces (EOS last), the pseudo-token attention
    of the first multimodal layer [heads, P, T], the pseudo-token grid (H, W) and layout, and the student's
    image [S, S, 3] uint8 (None when the checkpoint holds no student, e.g. a translation-only export)."""

    pieces: list[str]
    attention: np.ndarray
    grid: tuple[int, int]
    layout: str
    image: np.ndarray | None


def checkpoint_digest(path: Path) -> str:
    """sha256 of a checkpoint file, or of an export folder (over its files' names and digests, sorted)."""
    from ikd.fileio import sha256_file

    if not path.is_dir():
        return sha256_file(path)
    h = hashlib.sha256()
    for child in sorted(p for p in path.iterdir() if p.is_file()):
        h.update(f"{child.name}\0{sha256_file(child)}\n".encode())
    return h.hexdigest()


def png_bytes(picture: np.ndarray) -> bytes:
    """uint8 [H, W, 3] -> a PNG file's bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def finite_or_none(score: float) -> float | None:
    """Greedy search has no score (NaN), which JSON cannot carry: None."""
    return score if math.isfinite(score) else None


class ServedModel:
    """What the endpoints ask of the loaded model. `loaded` may be an ensemble (translation uses all members;
    attention and imagined images the first, whose teacher and student `loaded.distiller` holds)."""

    def __init__(
        self,
        loaded: Loaded,
        paths: Sequence[Path],
        *,
        max_len_a: float = 0.0,
        max_len_b: int = 200,
        batch_size: int = 128,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.loaded = loaded
        self.paths = [Path(p) for p in paths]
        self.max_len_a = max_len_a
        self.max_len_b = max_len_b
        self.batch_size = batch_size
        self.warn = warn or (lambda message: None)
        self._translators: dict[SearchKey, Translator] = {}
        self.identity = self._identity()

    @classmethod
    def load(
        cls, paths: Sequence[str | os.PathLike], device: str = "auto", amp: str | None = None, **options: Any
    ) -> ServedModel:
        """Load checkpoints (several: their ensemble, as `ikd translate -c A -c B`). The first one's teacher
        and student are loaded too when it is a multimodal checkpoint file (an export folder has none)."""
        from ikd.inference.ensemble import load_ensemble

        paths = [Path(p) for p in paths]
        loaded = load_ensemble(paths, device, amp=amp, with_distiller=bool(paths) and not paths[0].is_dir())
        return cls(loaded, paths, **options)

    @property
    def member(self) -> Any:
        """The first model (of an ensemble): the one whose attention and imagination are shown."""
        from ikd.inference.ensemble import Ensemble

        model = self.loaded.model
        return model.models[0] if isinstance(model, Ensemble) else model

    @property
    def multimodal(self) -> bool:
        return not self.member.text_only

    @property
    def source(self) -> str:
        return self.loaded.src

    @property
    def target(self) -> str:
        return self.loaded.tgt

    def _identity(self) -> dict[str, Any]:
        r = self.loaded.recipe
        summary: dict[str, Any] = {
            "text_only": r.model.text_only,
            "d_model": r.model.d_model,
            "heads": r.model.heads,
            "ffn": r.model.ffn,
            "encoder_layers": r.model.encoder_layers,
            "decoder_layers": r.model.decoder_layers,
            "max_positions": r.model.max_positions,
        }
        if self.multimodal:
            summary["pseudo_tokens"] = self.member.num_pseudo_tokens
            summary["token_layout"] = r.model.token_layout
            summary["vision"] = {"backbone": r.vision.backbone, "image_size": r.vision.image_size}
            summary["kd"] = {k: getattr(r.kd, k) for k in ("grain", "distance", "lambda_irm", "lambda_iam")}
        return {
            "checkpoints": [{"name": p.name, "sha256": checkpoint_digest(p)} for p in self.paths],
            "source": self.source,
            "target": self.target,
            "multimodal": self.multimodal,
            "imagines": self.multimodal and self.loaded.distiller is not None,
            "recipe": summary,
            "max_len": {"a": self.max_len_a, "b": self.max_len_b},
        }

    def translator(self, key: SearchKey) -> Translator:
        """One translator per search setting, all sharing the loaded model."""
        if key not in self._translators:
            options = SearchOptions(key.beam, key.lenpen, self.max_len_a, self.max_len_b)
            self._translators[key] = Translator(
                self.loaded, options, input_mode=key.input_mode, batch_size=self.batch_size, warn=self.warn
            )
        return self._translators[key]

    def translate(self, key: SearchKey, sentences: list[str]) -> list[list[tuple[str, float]]]:
        """Sentences -> for each its `key.beam` best (tokenised text, score), best first; a request takes
        the first n it asked for (beam search's n best are the first n of its beam)."""
        return self.translator(key).translate_nbest(sentences, key.beam)

    def detokenize(self, text: str) -> str:
        from ikd.data.text import detokenize

        return detokenize(text.split(), self.target)

    def imagine(self, sentence: str, input_mode: str) -> Imagined:
        """One sentence -> its pseudo-token attention and the student's image (IKD models only)."""
        from ikd.probes.attention import pseudo_token_attention
        from ikd.probes.imagine import imagined_images
        from ikd.probes.sentences import batch_ids, source_pieces

        if not self.multimodal:
            raise IkdError("a text-only model has no pseudo-tokens and imagines no image")
        pieces = source_pieces(self.loaded, sentence, tokenized=input_mode == "tokenized", warn=self.warn)
        src = batch_ids(self.loaded, [pieces])
        model = self.member
        attention = pseudo_token_attention(model, src)
        image = None
        if self.loaded.distiller is not None:
            image = imagined_images(model, self.loaded.distiller, src)[0]
        _, h, w = model.feature_shape
        return Imagined([*pieces, "</s>"], attention, (h, w), self.loaded.recipe.model.token_layout, image)
