"""ikd.data.text: Multi30K-compatible preprocessing, detokenisation, BPE removal."""

from __future__ import annotations

import gzip

import pytest

from ikd.data.text import MASK, detokenize, lowercase_tokens, preprocess, remove_bpe


def test_preprocess_lowercases_normalises_and_escapes() -> None:
    assert preprocess('A man\'s "big" dog & cat.', "en") == "a man &apos;s &quot; big &quot; dog &amp; cat ."
    assert preprocess("Ein Mann (rechts) läuft.", "de") == "ein mann ( rechts ) läuft ."
    assert preprocess("Un petit cercle rouge au-dessus d'un carré.", "fr") == (
        "un petit cercle rouge au-dessus d&apos; un carré ."
    )


def test_preprocess_follows_the_old_moses_normaliser() -> None:
    # Outside English, '."' at the end of a line becomes '".' (the Perl script sees the newline).
    assert preprocess('Il s\'appelle "32 De Neude."', "fr") == "il s&apos; appelle &quot; 32 de neude &quot; ."
    # Moses 3a0631a maps the right single quote to a double quote; Multi30K's files carry that.
    assert preprocess("Un coup d’œil.", "fr") == "un coup d &quot; œil ."


def test_mask_token_survives_intact() -> None:
    assert preprocess("The [U] dog[U].", "en") == f"the {MASK} dog {MASK} ."
    assert preprocess("[U] läuft", "de") == f"{MASK} läuft"
    # other kept tokens (a BPE glossary): neither lowercased nor escaped, the longest match first
    assert preprocess("A <MASK> & [U]<MASK2>", "en", ("<MASK>", "<MASK2>", MASK)) == "a <MASK> &amp; [U] <MASK2>"
    assert preprocess("A <MASK>", "en", ()) == "a &lt; mask &gt;"
    assert lowercase_tokens(["A", "[U]", "Big", "<MASK>"], ("[U]", "<MASK>")) == ["a", "[U]", "big", "<MASK>"]


def test_detokenize_inverts_tokenisation() -> None:
    assert detokenize("a man &apos;s &quot; big &quot; dog .".split(), "en") == 'a man\'s "big" dog.'
    assert detokenize("l&apos; homme dit bonjour .".split(), "fr") == "l'homme dit bonjour."


def test_remove_bpe() -> None:
    assert remove_bpe("ein gro@@ ßer hun@@ d läuft") == "ein großer hund läuft"
    assert remove_bpe("trailing@@") == "trailing"
    assert remove_bpe("no markers") == "no markers"


@pytest.mark.parametrize("lang", ["en", "de", "fr"])
def test_raw_multi30k_reproduces_tok_files(shared_data, lang: str) -> None:
    """Every line of test_2016_flickr: raw -> preprocess == the dataset's *.lc.norm.tok.* line."""
    root = shared_data / "multi30k"
    with gzip.open(root / "raw" / f"test_2016_flickr.{lang}.gz", "rt", encoding="utf-8") as f:
        raw = f.read().splitlines()
    tok = (root / "tok" / f"test_2016_flickr.lc.norm.tok.{lang}").read_text(encoding="utf-8").splitlines()
    assert len(raw) == len(tok) == 1000
    mismatches = [(i + 1, r, t) for i, (r, t) in enumerate(zip(raw, tok)) if preprocess(r, lang) != t]
    assert mismatches == []
