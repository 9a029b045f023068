"""Text preprocessing that reproduces Multi30K's `*.lc.norm.tok.*` files, and its inverse.

Multi30K's own script runs `lowercase.perl | normalize-punctuation.perl -l L | tokenizer.perl -l L`
(Moses snapshot 3a0631a). sacremoses with `perl_parity=True` and a trailing newline reproduces every line
of the shared copy (train, val and the three test sets; en, de, fr): see tests/test_data_text.py.
"""

from __future__ import annotations

import functools
import re

from ikd.data.moses_import import import_sacremoses

_sacremoses = import_sacremoses()
MosesDetokenizer = _sacremoses.MosesDetokenizer
MosesPunctNormalizer = _sacremoses.MosesPunctNormalizer
MosesTokenizer = _sacremoses.MosesTokenizer

MASK = "[U]"
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


@functools.cache
def _keep_pattern(keep: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("(" + "|".join(re.escape(t) for t in sorted(keep, key=len, reverse=True)) + ")")


def preprocess(line: str, lang: str, keep: tuple[str, ...] = (MASK,)) -> str:
    """Raw sentence -> lowercased, punctuation-normalised, Moses-tokenised text with XML escapes.

    The tokens in `keep` (the mask token `[U]` by default; a BPE glossary) survive as tokens of their own,
    not lowercased, not escaped.
    """
    keep = tuple(t for t in keep if t and t in line)
    if not keep:
        return _preprocess_piece(line, lang)
    out: list[str] = []
    for i, piece in enumerate(_keep_pattern(keep).split(line)):
        if i % 2:  # the split pattern's group: a kept token
            out.append(piece)
        elif piece.strip():
            out.append(_preprocess_piece(piece, lang))
    return " ".join(p for p in out if p)


def lowercase_tokens(tokens: list[str], keep: tuple[str, ...] = (MASK,)) -> list[str]:
    """Already tokenised text, lowercased as Multi30K's files are, but for the tokens in `keep`."""
    return [t if t in keep else t.lower() for t in tokens]


def detokenize(tokens: list[str], lang: str) -> str:
    """Moses-detokenise (and unescape `&apos;` etc.) a token list into a plain sentence."""
    return _detokenizer(lang).detokenize(tokens, return_str=True, unescape=True)


def remove_bpe(text: str) -> str:
    """Undo subword-nmt segmentation: drop the "@@ " continuation markers."""
    return _BPE_RE.sub("", text)
