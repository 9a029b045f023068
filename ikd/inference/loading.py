"""Load a self-contained checkpoint for translation: model (eval mode, on the device), vocabulary, BPE,
recipe, languages, and the autocast settings (bf16/fp16 on CUDA, none on CPU)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ikd.checkpoint import load_checkpoint
from ikd.data.vocab import SPECIALS, Vocabulary
from ikd.errors import IkdError
from ikd.export.package import read_package
from ikd.recipe import Recipe, recipe_from_dict


@dataclass
class Loaded:
    """What `load_for_inference` returns. `bpe` is None when the data had no BPE step."""

    model: torch.nn.Module
    vocab: Vocabulary
    bpe: object | None
    recipe: Recipe
    src: str
    tgt: str
    path: Path
    device: torch.device
    amp_dtype: torch.dtype | None = None

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


def resolve_device(device: str | torch.device | None) -> torch.device:
    """ "auto"/None -> cuda when available, else cpu; anything else as torch understands it."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise IkdError(f"--device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise IkdError(f"--device {device}: CUDA is not available on this machine")
    return dev


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
) -> Loaded:
    """Checkpoint -> Loaded. `expected_vocab` (e.g. a prepared data folder's vocab.txt) must be the
    checkpoint's own vocabulary; `amp` overrides the recipe's train.amp (auto|bf16|fp16|off)."""
    from ikd.data.bpe import BPE, DEFAULT_GLOSSARIES
    from ikd.model import build_model
    from ikd.train.step import amp_dtype

    path = Path(path)
    payload = read_package(path) if path.is_dir() else load_checkpoint(path)
    for key in ("model", "recipe", "vocab", "src", "tgt"):
        if key not in payload:
            raise IkdError(f"{path}: checkpoint has no '{key}' entry")
    recipe = recipe_from_dict(payload["recipe"], source=f"{path} (recipe)")
    vocab = Vocabulary(list(payload["vocab"]))
    if expected_vocab is not None and expected_vocab.fingerprint() != vocab.fingerprint():
        raise IkdError(
            f"{path}: the checkpoint's vocabulary ({len(vocab)} tokens) differs from the given one "
            f"({len(expected_vocab)} tokens, fingerprint {expected_vocab.fingerprint()[:12]} vs "
            f"{vocab.fingerprint()[:12]}): text prepared with other BPE codes would be translated wrongly"
        )
    dev = resolve_device(device)
    model = build_model(recipe, len(vocab), pad=vocab.pad, load_teacher_weights=False)
    state = payload["model"]
    _check_state_dict(path, model, state, vocab)
    model.load_state_dict(state, strict=True)
    model.to(dev).eval()

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
    return Loaded(model, vocab, bpe, recipe, payload["src"], payload["tgt"], path, dev, amp_dtype(setting, dev))
