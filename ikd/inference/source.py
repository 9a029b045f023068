"""Source text -> token ids, the one way every command does it (translate, evaluate, retrieve, analyze), and
the one padding helper for id lists.

Input modes: "raw" (Multi30K preprocessing: lowercase, normalise, Moses-tokenise; then the checkpoint's BPE),
"tokenized" (lowercase only, then BPE) and "bpe" (already segmented). One over-length policy: a source longer
than the model's max_positions (EOS included) is cut to its first max_positions - 1 tokens plus EOS, with a
warning naming where it came from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ikd.data.text import lowercase_tokens, preprocess
from ikd.errors import IkdError

INPUT_MODES = ("raw", "tokenized", "bpe")


class SourceEncoder:
    """Lines -> ids for a loaded checkpoint (`ikd.inference.loading.Loaded`)."""

    def __init__(self, loaded: Any, input_mode: str = "raw", warn: Callable[[str], None] | None = None) -> None:
        if input_mode not in INPUT_MODES:
            raise IkdError(f"input mode {input_mode!r} is not one of {', '.join(INPUT_MODES)}")
        self.loaded = loaded
        self.input_mode = input_mode
        self.warn = warn or (lambda message: None)
        self.truncated = 0

    def pieces(self, line: str) -> list[str]:
        """One line -> the model's subword pieces (no EOS); [] for a line with no tokens."""
        lo = self.loaded
        if self.input_mode == "raw":
            tokens = preprocess(line, lo.src, lo.keep_tokens).split()
        elif self.input_mode == "tokenized":
            tokens = lowercase_tokens(line.split(), lo.keep_tokens)
        else:
            tokens = line.split()
        if self.input_mode != "bpe" and lo.bpe is not None and tokens:
            tokens = lo.bpe.apply(tokens)
        return tokens

    def ids(self, line: str, where: str) -> list[int] | None:
        """One line -> ids with EOS, or None when it has no tokens; `where` (e.g. "FILE:LINE" or "line 3")
        names it in the over-length warning."""
        if not line.strip():
            return None
        pieces = self.pieces(line)
        return self.encode_pieces(pieces, where) if pieces else None

    def encode_pieces(self, pieces: Sequence[str], where: str) -> list[int]:
        """Subword pieces -> ids with EOS, cut to the model's limit."""
        vocab = self.loaded.vocab
        ids = vocab.encode(list(pieces))
        limit = self.loaded.max_positions
        if len(ids) > limit:
            self.warn(
                f"{where}: the source has {len(ids)} tokens (EOS included), more than the model's limit of "
                f"{limit}; translating its first {limit - 1} tokens only"
            )
            self.truncated += 1
            ids = ids[: limit - 1] + [vocab.eos]
        return ids


def pad_batch(rows: Sequence[Sequence[int]], pad: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Id lists -> right-padded int64 [B, T] (T the longest row), on `device`."""
    if not rows:
        raise ValueError("pad_batch: no rows")
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), pad, dtype=torch.long)
    for b, row in enumerate(rows):
        out[b, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out if device is None else out.to(device, non_blocking=True)
