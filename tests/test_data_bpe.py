"""ikd.data.bpe and `ikd bpe`: joint BPE, per-language vocabulary filter, glossary, vocabulary sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_data import make_prepared

from ikd.cli import main
from ikd.data.bpe import BPE, learn_and_apply
from ikd.data.text import remove_bpe
from ikd.data.vocab import Vocabulary
from ikd.errors import IkdError

CODES = "#version: 0.2\nl o\nlo w</w>\ne r</w>\n"


def test_apply_codes_and_glossary() -> None:
    bpe = BPE.from_codes(CODES)
    assert bpe.apply(["low", "lower", "[U]", "newer"]) == ["low", "lo@@", "w@@", "er", "[U]", "n@@", "e@@", "w@@", "er"]
    # without the glossary, subword-nmt would cut the mask token into characters
    assert BPE.from_codes(CODES, glossaries=()).apply(["[U]"]) == ["[@@", "U@@", "]"]
    assert BPE.from_codes(CODES).apply_line("x[U]low") == "x@@ [U]@@ low"


def test_word_cache_is_bounded(monkeypatch) -> None:
    """A long stream of new word types (streaming `ikd translate`) never grows the cache past its bound, and
    segmenting after a reset gives the same pieces."""
    import ikd.data.bpe as bpe_module

    monkeypatch.setattr(bpe_module, "CACHE_TYPES", 3)
    bpe = BPE.from_codes(CODES)
    first = bpe.apply(["lower", "newer"])
    for i in range(20):
        bpe.apply([f"word{i}", "low"])
        assert len(bpe._words) <= 3
    assert bpe.apply(["lower", "newer"]) == first


def test_vocabulary_filter_splits_unseen_units() -> None:
    # "low" is a unit of the codes, but this language never produced it: it is split back to "lo@@ w".
    bpe = BPE.from_codes(CODES, vocab={"lo@@": 3, "w": 2})
    assert bpe.apply(["low"]) == ["lo@@", "w"]


def test_malformed_codes_are_an_error() -> None:
    with pytest.raises(IkdError, match="malformed"):
        BPE.from_codes("#version: 0.2\na b c\n")
    with pytest.raises(IkdError, match="empty"):
        BPE.from_codes("")


def test_learn_and_apply_on_toy_data(toy_data: Path) -> None:
    pair = toy_data / "en-de"
    vocab = Vocabulary.load(pair / "vocab.txt")
    assert len(vocab) % 8 == 0 and vocab.tokens[:4] == ["<s>", "<pad>", "</s>", "<unk>"]
    state = json.loads((pair / "bpe.json").read_text())
    for split in ("train", "val", "test"):
        for lang in ("en", "de"):
            bpe_lines = (pair / f"{split}.bpe.{lang}").read_text(encoding="utf-8").splitlines()
            text_lines = (toy_data / "text" / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()
            assert [remove_bpe(line) for line in bpe_lines] == text_lines
            assert state["tokens"][split][lang] == sum(len(line.split()) + 1 for line in bpe_lines)
    assert any("@@" in line for line in (pair / "train.bpe.de").read_text(encoding="utf-8").splitlines())
    train_tokens = {t for lang in ("en", "de") for t in (pair / f"train.bpe.{lang}").read_text().split()}
    assert train_tokens <= set(vocab.tokens)
    # the per-language filter files load back into a BPE that reproduces the stored segmentation
    bpe_en = BPE.load(pair, "en")
    text_en = (toy_data / "text" / "val.en").read_text(encoding="utf-8").splitlines()
    assert [bpe_en.apply_line(line) for line in text_en] == (pair / "val.bpe.en").read_text().splitlines()


def test_mask_token_survives_bpe_and_enters_vocab(tmp_path: Path) -> None:
    en = ["a [U] dog runs", "the [U] cat sleeps", "a dog runs fast", "dogs and cats"] * 5
    de = ["ein hund läuft", "die katze schläft", "ein hund rennt", "hunde und katzen"] * 5
    data = make_prepared(tmp_path, {"train": {"en": en, "de": de}, "val": {"en": ["a [U][U] dog"], "de": ["x"]}})
    result = learn_and_apply(data, "en", "de", merges=20)
    assert "[U]" in result.vocab
    train = (data / "en-de" / "train.bpe.en").read_text().splitlines()
    assert all("[U]" in line.split() for line in train if "[U]" in remove_bpe(line))
    assert (data / "en-de" / "val.bpe.en").read_text().split()[1:3] == ["[U]@@", "[U]"]


def test_rerun_is_a_no_op_and_options_invalidate(tmp_path: Path) -> None:
    data = make_prepared(tmp_path, {"train": {"en": ["ab bc c", "ab b"], "de": ["xy y", "xy yz"]}})
    first = learn_and_apply(data, "en", "de", merges=5)
    mtime = (data / "en-de" / "train.bpe.en").stat().st_mtime_ns
    again = learn_and_apply(data, "en", "de", merges=5)
    assert again.reused and not first.reused and again.tokens == first.tokens
    assert (data / "en-de" / "train.bpe.en").stat().st_mtime_ns == mtime
    assert not learn_and_apply(data, "en", "de", merges=3).reused
    (data / "en-de" / "train.bpe.en").write_text("tampered\n")
    assert not learn_and_apply(data, "en", "de", merges=3).reused


def test_bad_inputs(tmp_path: Path, capsys) -> None:
    assert main(["bpe", "--data", str(tmp_path), "--pair", "en-de"]) == 1
    assert "manifest.json: not found" in capsys.readouterr().err
    data = make_prepared(tmp_path / "d", {"train": {"en": ["a"], "de": ["b"]}})
    assert main(["bpe", "--data", str(data), "--pair", "en-fr"]) == 1
    assert "no train split with both en and fr" in capsys.readouterr().err
    assert main(["bpe", "--data", str(data), "--pair", "ende"]) == 1
    assert main(["bpe", "--data", str(data), "--pair", "en-de"]) == 1
    assert "nothing to learn" in capsys.readouterr().err
    assert not (data / "en-fr").exists()


@pytest.mark.slow
def test_multi30k_vocabulary_sizes(shared_data: Path, tmp_path: Path, capsys) -> None:
    """10,000 merges reproduce the authors' fairseq dictionaries: 9,712 (en-de), 9,544 (en-fr)."""
    data = tmp_path / "m30k"
    assert main(["prepare", "multi30k", "--source", str(shared_data / "multi30k"), "--out", str(data)]) == 0
    assert main(["bpe", "--data", str(data), "--pair", "en-de"]) == 0
    assert "10,000 merges, vocabulary 9,712 entries" in capsys.readouterr().out
    assert len(Vocabulary.load(data / "en-de" / "vocab.txt")) == 9712
    result = learn_and_apply(data, "en", "fr")
    assert len(result.vocab) == 9544
    # the authors' logged token counts (train, including EOS)
    assert result.tokens["train"] == {"en": 423353, "fr": 457762}
    assert result.lines == {
        "train": 29000,
        "val": 1014,
        "test_2016_flickr": 1000,
        "test_2017_flickr": 1000,
        "test_2017_mscoco": 461,
    }
