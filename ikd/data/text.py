"""Text preprocessing that reproduces Multi30K's `*.lc.norm.tok.*` files, and its inverse.

Multi30K's own script runs `lowercase.perl | normalize-punctuation.perl -l L | tokenizer.perl -l L`
(Moses snapshot 3a0631a). sacremoses with `perl_parity=True` and a trailing newline reproduces every line
of the shared copy (train, val and the three test sets; en, de, fr): see tests/test_data_text.py.
"""

from __future__ import annotations

import functools
import re

from sacremoses import MosesDetokenizer, MosesPunctNormalizer, MosesTokenizer

MASK = "[U]"
_MASK_RE = re.compile(re.escape(MASK))
_BPE_RE = re.compile(r"@@( |$)")


@functools.cache
def _normalizer(lang: str) -> MosesPunctNormalizer:
    # perl_parity: the old Moses script maps the right single quote to '"'; Multi30K's files carry that.
    return MosesPunctNormalizer(lang=lang, perl_parity=True)


@functools.cache
def _tokenizer(lang: str) -> MosesTokenizer:
    return MosesTokenizer(lang=lang)


@functools.cache
def _detokenizer(lang: str) -> MosesDetokenizer:
    return MosesDetokenizer(lang=lang)


def _preprocess_piece(text: str, lang: str) -> str:
    # The Perl normaliser sees each line with its newline; some rules (e.g. moving '."' to '".' outside
    # English) need a following character, so the newline is part of the match.
    normalised = _normalizer(lang).normalize(text.lower() + "\n")
    return _tokenizer(lang).tokenize(normalised, escape=True, return_str=True)


def preprocess(line: str, lang: str) -> str:
    """Raw sentence -> lowercased, punctuation-normalised, Moses-tokenised text with XML escapes.

    The mask token `[U]` survives as a token of its own (not lowercased, not escaped).
    """
    if MASK not in line:
        return _preprocess_piece(line, lang)
    pieces = [_preprocess_piece(piece, lang) for piece in _MASK_RE.split(line)]
    return " ".join(p for p in _interleave(pieces) if p)


def _interleave(pieces: list[str]) -> list[str]:
    out: list[str] = []
    for i, piece in enumerate(pieces):
        if i:
            out.append(MASK)
        out.append(piece)
    return out


def detokenize(tokens: list[str], lang: str) -> str:
    """Moses-detokenise (and unescape `&apos;` etc.) a token list into a plain sentence."""
    return _detokenizer(lang).detokenize(tokens, return_str=True, unescape=True)


def remove_bpe(text: str) -> str:
    """Undo subword-nmt segmentation: drop the "@@ " continuation markers."""
    return _BPE_RE.sub("", text)
