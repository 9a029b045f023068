"""Sentences given on the command line -> the model's source pieces and ids, through the same SourceEncoder
as `ikd translate` (the same preprocessing, BPE and over-length policy)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ikd.errors import IkdError
from ikd.inference.source import SourceEncoder, pad_batch


def source_pieces(
    loaded: Any, sentence: str, tokenized: bool = False, warn: Callable[[str], None] | None = None
) -> list[str]:
    """Raw text -> lowercased, normalised, Moses-tokenised (unless `tokenized`) -> BPE pieces (no EOS), cut
    to the model's limit (with a warning) as `ikd translate` cuts its input."""
    encoder = SourceEncoder(loaded, "tokenized" if tokenized else "raw", warn)
    pieces = encoder.pieces(sentence)
    if not pieces:
        raise IkdError(f"--sentence {sentence!r}: empty after preprocessing")
    ids = encoder.encode_pieces(pieces, f"--sentence {sentence[:40]!r}")
    return pieces[: len(ids) - 1]


def batch_ids(loaded: Any, pieces: list[list[str]]) -> torch.Tensor:
    """Pieces of several sentences -> right-padded ids [B, T] with EOS, on the model's device."""
    return pad_batch([loaded.vocab.encode(p) for p in pieces], loaded.vocab.pad, loaded.device)
