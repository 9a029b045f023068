"""Sentences given on the command line -> the model's source pieces and ids (as `ikd translate` does)."""

from __future__ import annotations

from typing import Any

import torch

from ikd.errors import IkdError


def source_pieces(loaded: Any, sentence: str, tokenized: bool = False) -> list[str]:
    """Raw text -> lowercased, normalised, Moses-tokenised (unless `tokenized`) -> BPE pieces (no EOS)."""
    from ikd.data.text import lowercase_tokens, preprocess

    keep = loaded.keep_tokens
    tokens = lowercase_tokens(sentence.split(), keep) if tokenized else preprocess(sentence, loaded.src, keep).split()
    if loaded.bpe is not None:
        tokens = loaded.bpe.apply(tokens)
    if not tokens:
        raise IkdError(f"--sentence {sentence!r}: empty after preprocessing")
    if len(tokens) + 1 > loaded.max_positions:
        raise IkdError(f"--sentence {sentence[:40]!r}...: {len(tokens) + 1} tokens, more than the model's limit")
    return tokens


def batch_ids(loaded: Any, pieces: list[list[str]]) -> torch.Tensor:
    """Pieces of several sentences -> right-padded ids [B, T] with EOS, on the model's device."""
    ids = [loaded.vocab.encode(p) for p in pieces]
    width = max(len(x) for x in ids)
    src = torch.full((len(ids), width), loaded.vocab.pad, dtype=torch.long)
    for b, row in enumerate(ids):
        src[b, : len(row)] = torch.tensor(row)
    return src.to(loaded.device)
