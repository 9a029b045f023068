"""Joint vocabulary with fairseq-compatible special symbols and padding factor."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable

from ikd.errors import IkdError
from ikd.fileio import atomic_write_lines, read_lines

BOS, PAD, EOS, UNK = "<s>", "<pad>", "</s>", "<unk>"
SPECIALS = (BOS, PAD, EOS, UNK)
_CONTROL = frozenset((BOS, PAD, EOS))


class Vocabulary:
    """Token <-> id map. Ids 0..3 are <s>, <pad>, </s>, <unk> (fairseq's order)."""

    bos = 0
    pad = 1
    eos = 2
    unk = 3

    def __init__(self, tokens: list[str]):
        if tuple(tokens[:4]) != SPECIALS:
            raise IkdError(f"vocabulary must start with the special symbols {SPECIALS}")
        if len(set(tokens)) != len(tokens):
            dup = next(t for t, c in Counter(tokens).items() if c > 1)
            raise IkdError(f"vocabulary has the token {dup!r} twice")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, sentences: Iterable[list[str]], padding_factor: int = 8) -> Vocabulary:
        """Count tokens, order by frequency (ties alphabetically), pad the size to a multiple of
        `padding_factor` with fillers as fairseq does (its Multi30K EN-DE dictionary has 9,712 entries)."""
        counts: Counter[str] = Counter()
        for tokens in sentences:
            counts.update(tokens)
        for special in SPECIALS:
            counts.pop(special, None)
        ordered = sorted(counts, key=lambda t: (-counts[t], t))
        tokens = list(SPECIALS) + ordered
        filler = 0
        while padding_factor > 1 and len(tokens) % padding_factor:
            tokens.append(f"madeupword{filler:04d}")
            filler += 1
        return cls(tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    def encode(self, tokens: list[str], add_eos: bool = True) -> list[int]:
        """Tokens -> ids; unknown tokens map to <unk>; EOS appended (no BOS), as fairseq does. Text that spells
        a control symbol (<s>, <pad>, </s>) is unknown text too: as its id it would act as padding or an end."""
        unk, index = self.unk, self.index
        ids = [unk if t in _CONTROL else index.get(t, unk) for t in tokens]
        if add_eos:
            ids.append(self.eos)
        return ids

    def decode(self, ids: Iterable[int], strip_special: bool = True) -> list[str]:
        """Ids -> tokens; stops at the first EOS and drops <s>/<pad> when `strip_special`."""
        out = []
        for i in ids:
            i = int(i)
            if strip_special:
                if i == self.eos:
                    break
                if i in (self.bos, self.pad):
                    continue
            out.append(self.tokens[i])
        return out

    def fingerprint(self) -> str:
        """sha256 of the token list: a checkpoint is only usable with the vocabulary it was trained on."""
        return hashlib.sha256("\n".join(self.tokens).encode("utf-8")).hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        """One token per line, in id order (specials first)."""
        atomic_write_lines(path, self.tokens)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        return cls(read_lines(path))
