"""Load a self-contained checkpoint for translation: the translator (eval mode, on the device), vocabulary,
BPE, recipe, languages, and the autocast settings (bf16/fp16 on CUDA, none on CPU). No CNN is built unless
the caller asks for the Distiller (`ikd retrieve` needs its teacher, `ikd analyze imagine` its student)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ikd.checkpoint import load_checkpoint
from ikd.data.vocab import SPECIALS, Vocabulary
from ikd.device import amp_dtype, resolve_device
from ikd.errors import IkdError
from ikd.export.package import read_package
from ikd.model.translator import TranslationModel, build_translator
from ikd.recipe import Recipe, recipe_from_dict


@dataclass
class Loaded:
    """What `load_for_inference` returns. `bpe` is None when the data had no BPE step; `distiller` is None
    unless asked for (and for text-only models)."""

    model: TranslationModel
    vocab: Vocabulary
    bpe: object | None
    recipe: Recipe
    src: str
    tgt: str
    path: Path
    device: torch.device
    amp_dtype: torch.dtype | None = None
    distiller: torch.nn.Module | None = None

    @property
    def keep_tokens(self) -> tuple[str, ...]:
        """Tokens that preprocessing and BPE leave as they are (the mask token and any --glossary entry)."""
        from ikd.data.text import MASK

        return self.bpe.glossaries if self.bpe is not None else (MASK,)

    @property
    def max_positions(self) -> int:
        return self.recipe.model.max_positions

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the forward passes (a no-op on CPU or with amp off)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


@contextlib.contextmanager
def decoding_threads(threads: int, device: torch.device) -> Iterator[None]:
    """Torch intra-op threads while decoding on the CPU, restored afterwards. 0 means 1: search runs many
    small ops per step, for which OpenMP's per-op synchronisation costs more than a second thread gains
    (measured: 1 thread as fast as 2 on an idle 2-core machine, 8x faster than 2 when the cores are shared)."""
    if threads < 0:
        raise IkdError(f"--threads {threads}: must not be negative")
    old = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads or 1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _check_state_dict(path: Path, model: torch.nn.Module, state: dict, vocab: Vocabulary) -> None:
    """`state` must fit `model` key for key and shape for shape; a mismatch names the first keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        raise IkdError(f"{path}: the weights do not fit the model its recipe describes ({'; '.join(parts)})")
    for key, value in expected.items():
        got = tuple(state[key].shape)
        if got == tuple(value.shape):
            continue
        if value.dim() == 2 and value.size(0) == len(vocab) and "embed" in key:
            raise IkdError(
                f"{path}: its vocabulary has {len(vocab)} tokens but the weights ({key}) were trained with "
                f"{got[0]}: the checkpoint's vocabulary and weights come from different data"
            )
        raise IkdError(f"{path}: parameter {key} has shape {got}, the recipe's model expects {tuple(value.shape)}")


def load_for_inference(
    path: str | os.PathLike,
    device: str | torch.device | None = "auto",
    expected_vocab: Vocabulary | None = None,
    amp: str | None = None,
    with_distiller: bool = False,
) -> Loaded:
    """Checkpoint -> Loaded. `expected_vocab` (e.g. a prepared data folder's vocab.txt) must be the
    checkpoint's own vocabulary; `amp` overrides the recipe's train.amp (auto|bf16|fp16|off);
    `with_distiller` also builds the teacher and student CNNs from the checkpoint (IKD models only)."""
    from ikd.data.bpe import BPE, DEFAULT_GLOSSARIES

    path = Path(path)
    payload = read_package(path) if path.is_dir() else load_checkpoint(path)
    for key in ("model", "recipe", "vocab", "src", "tgt"):
        if key not in payload:
            raise IkdError(f"{path}: checkpoint has no '{key}' entry")
    recipe = recipe_from_dict(payload["recipe"], source=f"{path} (recipe)", check_ranges=False)
    vocab = Vocabulary(list(payload["vocab"]))
    if expected_vocab is not None and expected_vocab.fingerprint() != vocab.fingerprint():
        raise IkdError(
            f"{path}: the checkpoint's vocabulary ({len(vocab)} tokens) differs from the given one "
            f"({len(expected_vocab)} tokens, fingerprint {expected_vocab.fingerprint()[:12]} vs "
            f"{vocab.fingerprint()[:12]}): text prepared with other BPE codes would be translated wrongly"
        )
    dev = resolve_device(device)
    shape = feature_shape(payload, recipe)
    state = payload["model"]
    # the generator (12.8M parameters for ResNet-50) is built without values: its random init would cost more
    # than the rest of loading, and the checkpoint's tensors are assigned to it
    model = build_translator(recipe.model, len(vocab), vocab.pad, shape, generator_device="meta")
    _check_state_dict(path, model, state, vocab)
    model.load_state_dict(state, strict=True, assign=True)
    model.to(dev).eval()
    distiller = None
    if with_distiller and not recipe.model.text_only:
        distiller = load_distiller(path, payload, recipe, dev)

    codes = payload.get("bpe_codes") or ""
    bpe = None
    if codes.strip():
        # Training text was segmented with the source language's subword vocabulary as filter; a checkpoint
        # may carry it ("bpe_vocab": {lang: {unit: count}}); otherwise the joint vocabulary keeps every unit
        # the model knows.
        filters = payload.get("bpe_vocab") or {}
        units = filters.get(payload["src"]) or {t for t in vocab.tokens if t not in SPECIALS}
        bpe = BPE.from_codes(codes, units, tuple(payload.get("bpe_glossaries", DEFAULT_GLOSSARIES)))
    setting = amp if amp is not None else recipe.train.amp
    dtype = amp_dtype(setting, dev)
    return Loaded(model, vocab, bpe, recipe, payload["src"], payload["tgt"], path, dev, dtype, distiller)


def feature_shape(payload: dict, recipe: Recipe) -> tuple[int, int, int] | None:
    """(C, H, W) of m: stored in the checkpoint, or (0.1.0 checkpoints) from a weightless teacher."""
    if recipe.model.text_only:
        return None
    if "feature_shape" in payload:
        c, h, w = (int(d) for d in payload["feature_shape"])
        return c, h, w
    from ikd.model.distiller import teacher_feature_shape

    return teacher_feature_shape(recipe.vision)


def load_distiller(path: Path, payload: dict, recipe: Recipe, device: torch.device) -> torch.nn.Module:
    """The checkpoint's teacher and student (eval mode, on `device`)."""
    from ikd.model.distiller import build_distiller

    if "distiller" not in payload:
        raise IkdError(f"{path}: holds no teacher or student weights (a translation-only export?); give the checkpoint")
    distiller = build_distiller(recipe.vision, recipe.kd, channels_last=False, load_teacher_weights=False)
    state = payload["distiller"]
    expected = distiller.state_dict()
    if set(state) != set(expected) or any(state[k].shape != v.shape for k, v in expected.items()):
        raise IkdError(f"{path}: its teacher/student weights do not fit the recipe's vision section")
    distiller.load_state_dict(state, strict=True)
    return distiller.to(device).eval()
