"""`ikd degrade color|entity`: colour deprivation and entity masking (paper Table 6)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ikd.cli import main
from ikd.errors import IkdError
from ikd.fileio import sha256_file
from ikd.probes.degrade import (
    BUILTIN_COLOURS,
    ColourMasker,
    PositionMasker,
    degrade_lines,
)

TEST2016 = "multi30k/tok/test_2016_flickr.lc.norm.tok.en"
COLOURS17 = "fairseq-mmt-probing/wordlists/colors.en.txt"
POSITIONS = "fairseq-mmt-probing/positions"
# Lines of train + val before test_2016_flickr in the concatenated positions files.
TEST2016_OFFSET = 29000 + 1014


def listed_tokens(path: Path, words: Path) -> tuple[int, int]:
    """(tokens in the word list, all tokens) of a tokenised file, counted here without the library."""
    vocab = set(words.read_text(encoding="utf-8").split())
    tokens = path.read_text(encoding="utf-8").split()
    return sum(t in vocab for t in tokens), len(tokens)


def positioned_tokens(text: Path, position_files: list[Path], offset: int) -> tuple[int, int]:
    """(tokens at the union of the listed 0-based positions, all tokens) of text's lines, which are lines
    offset.. of the positions files (-1 = no position), counted here without the library."""
    lines = text.read_text(encoding="utf-8").splitlines()
    tables = [f.read_text(encoding="utf-8").splitlines()[offset : offset + len(lines)] for f in position_files]
    masked = 0
    for i, line in enumerate(lines):
        wanted = {int(p) for table in tables for p in table[i].split()} - {-1}
        masked += len(wanted & set(range(len(line.split()))))
    return masked, sum(len(line.split()) for line in lines)


def _json_tail(out: str) -> dict:
    """With --json, stdout is the JSON alone (the table goes to stderr)."""
    return json.loads(out)


def test_colour_list_masks_354_percent_of_test2016(probing_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "test.en"
    code = main(
        ["degrade", "color", "--words", str(probing_data / COLOURS17), "--input", str(probing_data / TEST2016)]
        + ["--output", str(out), "--json", "-"]
    )
    assert code == 0
    report = _json_tail(capsys.readouterr().out)[str(probing_data / TEST2016)]
    masked_n, tokens_n = listed_tokens(probing_data / TEST2016, probing_data / COLOURS17)
    assert (report["masked"], report["tokens"]) == (masked_n, tokens_n)
    assert report["lines_masked"] == 321  # the probing README: 321 of 1,000 test2016 sentences have a colour
    assert report["percent"] == pytest.approx(100 * masked_n / tokens_n, abs=1e-4)
    masked = out.read_text().splitlines()
    assert len(masked) == 1000
    assert masked[0] == "a man in an [U] hat starring at something ."
    assert sum(line.split().count("[U]") for line in masked) == masked_n


def test_builtin_colour_list() -> None:
    for word in ("red", "blue", "grey", "gray", "purple", "blond", "turquoise", "reddish"):
        assert word in BUILTIN_COLOURS
    for word in ("snow", "tomato", "chocolate", "olive", "dark", "light", "aliceblue"):  # CSS3 or not a colour
        assert word not in BUILTIN_COLOURS
    lines, count = degrade_lines(
        ["a man in a Red shirt and redheaded boy", "two blue - green birds", "no colours"],
        ColourMasker(BUILTIN_COLOURS),
    )
    assert lines == ["a man in a [U] shirt and redheaded boy", "two [U] - [U] birds", "no colours"]
    assert (count.masked, count.tokens, count.lines, count.lines_masked) == (3, 16, 3, 2)


def test_builtin_list_and_custom_mask_on_a_file(tmp_path: Path, capsys) -> None:
    src = tmp_path / "in.en"
    src.write_text("a girl in a pink dress .\na black dog .\n")
    out = str(tmp_path / "o")
    code = main(["degrade", "color", "--mask", "<unk>", "--input", str(src), "--output", out, "--json", "-"])
    assert code == 0
    assert (tmp_path / "o").read_text() == "a girl in a <unk> dress .\na <unk> dog .\n"
    assert _json_tail(capsys.readouterr().out)[str(src)]["masked"] == 2


@pytest.mark.parametrize(
    "args,message",
    [
        (["--mask", "a b"], "one non-empty token"),
        (["--data", "x"], "--data and --out go together"),
        (["--data", "x", "--out", "y", "--input", "z", "--output", "w"], "either --data"),
        ([], "give --data"),
        (["--input", "x.de", "--output", "y", "--lang", "de"], "the built-in colour list is English"),
    ],
)
def test_colour_argument_errors(tmp_path: Path, capsys, monkeypatch, args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("x", "z", "x.de"):  # inputs exist: paths are checked before anything else
        (tmp_path / name).write_text("a red car\n")
    if "--input" not in args and "--data" not in args and "--mask" in args:
        args = args + ["--input", "x", "--output", "y"]
    assert main(["degrade", "color", *args]) == 1
    assert message in capsys.readouterr().err


def test_word_list_errors(tmp_path: Path, capsys) -> None:
    words = tmp_path / "w.txt"
    words.write_text("red\nlight blue\n")
    src = tmp_path / "in.en"
    src.write_text("a red car\n")
    assert main(["degrade", "color", "--words", str(words), "--input", str(src), "--output", str(tmp_path / "o")]) == 1
    assert f"{words}:2: expected one word per line" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# Entity masking from positions files


def test_positions_by_hand(tmp_path: Path, capsys) -> None:
    src = tmp_path / "in.en"
    src.write_text("a man rides a horse .\ntwo dogs\nthe end\n")
    pos = tmp_path / "p1"
    pos.write_text("9\n1 4\n-1\n0 \n")  # line 0 is another split's
    pos2 = tmp_path / "p2"
    pos2.write_text("-1\n4\n1\n-1\n")
    out = tmp_path / "out.en"
    args = ["degrade", "entity", "--positions", str(pos), "--positions", str(pos2), "--offset", "1"]
    assert main([*args, "--input", str(src), "--output", str(out), "--json", "-"]) == 0
    assert out.read_text() == "a [U] rides a [U] .\ntwo [U]\n[U] end\n"
    report = _json_tail(capsys.readouterr().out)[str(src)]
    assert (report["masked"], report["tokens"]) == (4, 10)


def test_positions_mismatch_is_an_error(tmp_path: Path, capsys) -> None:
    src = tmp_path / "in.en"
    src.write_text("a man\ntwo dogs\n")
    pos = tmp_path / "p"
    pos.write_text("1\n0\n-1\n")
    base = ["degrade", "entity", "--positions", str(pos), "--input", str(src), "--output", str(tmp_path / "o")]
    assert main(base) == 1
    assert f"{pos}: 3 lines but {src} has 2; give --offset N" in capsys.readouterr().err
    assert main([*base, "--offset", "2"]) == 1
    assert "too few for the 2 lines" in capsys.readouterr().err
    assert main([*base, "--offset", "1"]) == 0  # lines 2-3 of the positions file fit the 2 lines
    assert (tmp_path / "o").read_text() == "[U] man\ntwo dogs\n"
    (tmp_path / "o").unlink()
    capsys.readouterr()
    pos.write_text("1\n5\n")
    assert main(base) == 1
    assert f"{pos}:2: token position 5 is beyond line 2" in capsys.readouterr().err
    pos.write_text("1\nx\n")
    assert main(base) == 1
    assert f"{pos}:2: 'x' is not a token position" in capsys.readouterr().err
    pos.write_text("1\n0\n")
    other = tmp_path / "q"
    other.write_text("1\n")
    assert main([*base, "--positions", str(other)]) == 1
    assert "positions files must align" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_noun_positions_on_test2016(probing_data: Path, tmp_path: Path, capsys) -> None:
    p = probing_data / POSITIONS
    out = tmp_path / "test.en"
    args = ["degrade", "entity", "--positions", str(p / "multi30k.noun.position")]
    args += ["--positions", str(p / "multi30k.nouns.position"), "--offset", str(TEST2016_OFFSET)]
    assert main([*args, "--input", str(probing_data / TEST2016), "--output", str(out), "--json", "-"]) == 0
    report = _json_tail(capsys.readouterr().out)[str(probing_data / TEST2016)]
    files = [p / "multi30k.noun.position", p / "multi30k.nouns.position"]
    assert (report["masked"], report["tokens"]) == positioned_tokens(probing_data / TEST2016, files, TEST2016_OFFSET)
    assert round(report["percent"], 1) == 29.0  # the probing README: test2016 29.0%
    first = out.read_text().splitlines()[1]
    assert first == "a [U] [U] is running on lush green [U] in front of a white [U] ."


def test_position_masker_maps_kept_lines() -> None:
    rows = read_positions_from_lists([[0], [1], [0, 1]])
    masker = PositionMasker(rows, 0, "p", [0, 2], "split")  # original line 1 was dropped
    lines, _ = degrade_lines(["a b", "c d"], masker)
    assert lines == ["[U] b", "[U] [U]"]
    with pytest.raises(IkdError, match="too few"):
        PositionMasker(rows, 1, "p", [0, 2], "split")


def read_positions_from_lists(rows: list[list[int]]) -> list[frozenset[int]]:
    return [frozenset(r) for r in rows]


# ---------------------------------------------------------------------------------------------------------
# Entity masking from Flickr30K Entities annotations

ANNOTATIONS = {
    "100": [
        "[/EN#1/people A man] in [/EN#2/clothing an orange hat] starring at [/EN#3/other something] .",
        "[/EN#1/people A man] wears [/EN#2/clothing an orange hat] and [/EN#4/clothing glasses] .",
    ],
    "200": [
        "[/EN#5/animals A Boston Terrier] is running on [/EN#6/scene lush green grass] in front of "
        "[/EN#7/other a white fence] .",
        "[/EN#5/animals A dog] runs in [/EN#8/notvisual the sun] on [/EN#6/scene grass] .",
    ],
    "300": ["[/EN#9/people/other Two kids] play with [/EN#10/notvisual fun] [/EN#11/other toys] ."],
}
SENTENCES = [
    "a man in an orange hat starring at something .",
    "a boston terrier is running on the lush and green grass in front of a white fence .",  # "the", "and" added
    "a dog runs in the sun on grass .",
    "two kids play with fun toys !",  # "!" replaces "."
]
IMAGES = ["100.jpg", "200.jpg", "200.jpg", "300.jpg"]


def _entities(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "flickr30k_entities"
    (root / "Sentences").mkdir(parents=True)
    for image, lines in ANNOTATIONS.items():
        (root / "Sentences" / f"{image}.txt").write_text("\n".join(lines) + "\n")
    src = tmp_path / "in.en"
    src.write_text("\n".join(SENTENCES) + "\n")
    names = tmp_path / "images.txt"
    names.write_text("\n".join(IMAGES) + "\n")
    return root, src, names


def test_entities_default_types(tmp_path: Path, capsys) -> None:
    root, src, names = _entities(tmp_path)
    out = tmp_path / "out.en"
    args = ["degrade", "entity", "--entities", str(root), "--image-list", str(names)]
    assert main([*args, "--input", str(src), "--output", str(out), "--json", "-"]) == 0
    assert out.read_text().splitlines() == [
        "[U] [U] in [U] [U] [U] starring at [U] .",
        "[U] [U] [U] is running on the [U] [U] [U] [U] in front of [U] [U] [U] .",  # "and" is inside the phrase
        "[U] [U] runs in the sun on [U] .",  # notvisual stays
        "[U] [U] play with fun [U] !",  # people/other is selected, notvisual "fun" is not
    ]
    report = _json_tail(capsys.readouterr().out)[str(src)]
    assert (report["masked"], report["tokens"], report["unmatched_lines"]) == (22, 44, [])


def test_entities_types_and_span(tmp_path: Path) -> None:
    root, src, names = _entities(tmp_path)
    out = tmp_path / "out.en"
    args = ["degrade", "entity", "--entities", str(root / "Sentences"), "--image-list", str(names)]
    assert main([*args, "--types", "people,scene", "--span", "last", "--input", str(src), "--output", str(out)]) == 0
    assert out.read_text().splitlines() == [
        "a [U] in an orange hat starring at something .",
        "a boston terrier is running on the lush and green [U] in front of a white fence .",
        "a dog runs in the sun on [U] .",
        "two [U] play with fun toys !",
    ]


def test_entities_errors(tmp_path: Path, capsys) -> None:
    root, src, names = _entities(tmp_path)
    names.write_text("100.jpg\n200.jpg\n999.jpg\n300.jpg\n")
    out = tmp_path / "out.en"
    args = ["degrade", "entity", "--entities", str(root), "--image-list", str(names), "--input", str(src)]
    assert main([*args, "--output", str(out)]) == 1
    assert "1 line(s) have no annotation file" in capsys.readouterr().err
    assert not out.exists()
    assert main([*args, "--output", str(out), "--allow-unmatched", "--json", "-"]) == 0
    assert out.read_text().splitlines()[2] == SENTENCES[2]
    assert _json_tail(capsys.readouterr().out)[str(src)]["unmatched_lines"] == [3]
    assert main([*args, "--output", str(out), "--types", "people,cars"]) == 1
    assert "unknown entity type(s) cars" in capsys.readouterr().err
    names.write_text("100.jpg\n")
    assert main([*args, "--output", str(out)]) == 1
    assert "1 image names but" in capsys.readouterr().err
    assert main(["degrade", "entity", "--input", str(src), "--output", str(out)]) == 1
    assert "either --entities" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# Whole prepared data folders

TRAIN_EN = ["a man in a red shirt", "a black dog runs", "two women sit"]
TRAIN_DE = ["ein mann in einem roten hemd", "ein schwarzer hund rennt", "zwei frauen sitzen"]


def _prepared(tmp_path: Path) -> Path:
    """A minimal prepared folder in the DATA layout: train (3 lines, images) and test (2 lines, no images)."""
    data = tmp_path / "data"
    (data / "text").mkdir(parents=True)
    (data / "images").mkdir()
    splits = {}
    texts = {
        "train": {"en": TRAIN_EN, "de": TRAIN_DE},
        "test": {"en": ["a blue car", "a cat"], "de": ["ein blaues auto", "eine katze"]},
    }
    for split, langs in texts.items():
        entry = {"lines": len(langs["en"]), "langs": {}, "images": None, "dropped_lines": []}
        for lang, lines in langs.items():
            path = data / "text" / f"{split}.{lang}"
            path.write_text("\n".join(lines) + "\n")
            entry["langs"][lang] = {"path": f"text/{split}.{lang}", "sha256": sha256_file(path)}
        splits[split] = entry
    np.save(data / "images" / "train.npy", np.arange(3 * 3 * 4 * 4, dtype=np.uint8).reshape(3, 3, 4, 4))
    (data / "images" / "train.names").write_text("1.png\n2.png\n3.png\n")
    splits["train"]["images"] = {"path": "images/train.npy", "names": "images/train.names", "count": 3, "size": 4}
    manifest = {"kind": "toy", "source": "test", "image_size": 4, "splits": splits}
    (data / "manifest.json").write_text(json.dumps(manifest))
    return data


def test_colour_on_a_prepared_folder(tmp_path: Path, capsys) -> None:
    data = _prepared(tmp_path)
    out = tmp_path / "dc"
    assert main(["degrade", "color", "--data", str(data), "--out", str(out), "--json", "-"]) == 0
    report = _json_tail(capsys.readouterr().out)
    assert report["train"]["masked"] == 2 and report["test"]["masked"] == 1
    assert (out / "text" / "train.en").read_text().splitlines() == [
        "a man in a [U] shirt",
        "a [U] dog runs",
        "two women sit",
    ]
    assert (out / "text" / "train.de").read_bytes() == (data / "text" / "train.de").read_bytes()
    assert np.array_equal(np.load(out / "images" / "train.npy"), np.load(data / "images" / "train.npy"))
    assert (out / "images" / "train.names").read_text() == "1.png\n2.png\n3.png\n"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["train"]["langs"]["en"]["sha256"] == sha256_file(out / "text" / "train.en")
    assert manifest["splits"]["train"]["langs"]["de"]["sha256"] == sha256_file(data / "text" / "train.de")
    assert manifest["splits"]["train"]["images"]["path"] == "images/train.npy"
    (entry,) = manifest["degrade"]
    assert entry["kind"] == "color" and entry["words"] == "builtin" and entry["mask"] == "[U]"
    assert entry["counts"]["train"]["masked"] == 2 and entry["total"]["tokens"] == 18
    assert entry["from_manifest_sha256"] == sha256_file(data / "manifest.json")
    # the original is untouched, and the output is never overwritten
    assert (data / "text" / "train.en").read_text().splitlines() == TRAIN_EN
    assert main(["degrade", "color", "--data", str(data), "--out", str(out)]) == 1
    assert "already exists and is not empty" in capsys.readouterr().err
    # degrading a degraded folder appends to its history
    assert main(["degrade", "color", "--data", str(out), "--out", str(tmp_path / "dc2"), "--mask", "[C]"]) == 0
    history = json.loads((tmp_path / "dc2" / "manifest.json").read_text())["degrade"]
    assert [h["mask"] for h in history] == ["[U]", "[C]"]


def test_positions_on_a_prepared_folder(tmp_path: Path, capsys) -> None:
    data = _prepared(tmp_path)
    pos = tmp_path / "pos"
    pos.write_text("1\n-1\n0 1\n2\n1\n")  # train 3 lines + test 2 lines, in that order
    out = tmp_path / "de"
    assert main(["degrade", "entity", "--positions", str(pos), "--data", str(data), "--out", str(out)]) == 0
    assert (out / "text" / "train.en").read_text().splitlines() == [
        "a [U] in a red shirt",
        "a black dog runs",
        "[U] [U] sit",
    ]
    assert (out / "text" / "test.en").read_text().splitlines() == ["a blue [U]", "a [U]"]
    entry = json.loads((out / "manifest.json").read_text())["degrade"][0]
    assert entry["offsets"] == {"train": 0, "test": 3} and entry["method"] == "positions"
    capsys.readouterr()
    pos.write_text("1\n-1\n0 1\n2\n")
    assert main(["degrade", "entity", "--positions", str(pos), "--data", str(data), "--out", str(tmp_path / "x")]) == 1
    assert "has 4 lines but the data folder's splits add up to 5 (train 3 + test 2)" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_entities_on_a_prepared_folder(tmp_path: Path, capsys) -> None:
    data = _prepared(tmp_path)
    root = tmp_path / "ent" / "Sentences"
    root.mkdir(parents=True)
    (root / "1.txt").write_text("[/EN#1/people A man] in [/EN#2/clothing a red shirt] .\n")
    (root / "2.txt").write_text("[/EN#3/animals A black dog] runs .\n")
    (root / "3.txt").write_text("[/EN#4/people Two women] sit .\n")
    out = tmp_path / "de"
    args = ["degrade", "entity", "--entities", str(root.parent), "--data", str(data), "--out", str(out)]
    assert main(args) == 1  # the test split has no image list
    assert "split 'test' has no image list" in capsys.readouterr().err
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("1.jpg\n2.jpg\n3.jpg\n")
    (lists / "test.txt").write_text("8.jpg\n9.jpg\n")
    assert main([*args, "--image-list", str(lists)]) == 1
    assert "split 'test': 2 line(s) have no annotation file" in capsys.readouterr().err
    assert main([*args, "--image-list", str(lists), "--allow-unmatched"]) == 0
    assert (out / "text" / "train.en").read_text().splitlines() == [
        "[U] [U] in [U] [U] [U]",
        "[U] [U] [U] runs",
        "[U] [U] sit",
    ]
    assert (out / "text" / "test.en").read_text().splitlines() == ["a blue car", "a cat"]


def test_mask_survives_bpe_as_one_vocabulary_entry(tmp_path: Path) -> None:
    """The degraded folder goes through the data step's BPE: [U] stays one token and one vocabulary entry."""
    from ikd.data.bpe import learn_and_apply

    data = _prepared(tmp_path)
    out = tmp_path / "dc"
    assert main(["degrade", "color", "--data", str(data), "--out", str(out)]) == 0
    result = learn_and_apply(out, "en", "de", merges=30)
    bpe_train = (out / "en-de" / "train.bpe.en").read_text().splitlines()
    assert "[U]" in bpe_train[0].split() and bpe_train[1].split()[1] == "[U]"
    assert "[U]" in result.vocab
    vocab_text = (out / "en-de" / "vocab.txt").read_text().split()
    assert vocab_text.count("[U]") == 1
    assert not any(t.startswith("[U]@@") or t.startswith("[@@") for t in vocab_text)
    enc = result.vocab.encode(["[U]"], add_eos=False)
    assert len(enc) == 1 and enc[0] != result.vocab.unk


def test_positions_skip_dropped_lines(tmp_path: Path) -> None:
    """A split whose preparation dropped line 2 (missing image) keeps the positions of its other lines."""
    data = _prepared(tmp_path)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["splits"]["test"]["dropped_lines"] = [[2, "gone.jpg"]]  # originally 3 lines, 2 kept
    (data / "manifest.json").write_text(json.dumps(manifest))
    pos = tmp_path / "pos"
    pos.write_text("-1\n-1\n-1\n2\n0\n1\n")  # train 3 + test 3 (its line 2 was dropped)
    out = tmp_path / "de"
    assert main(["degrade", "entity", "--positions", str(pos), "--data", str(data), "--out", str(out)]) == 0
    assert (out / "text" / "test.en").read_text().splitlines() == ["a blue [U]", "a [U]"]
    assert json.loads((out / "manifest.json").read_text())["splits"]["test"]["dropped_lines"] == [[2, "gone.jpg"]]


def test_multi30k_folder(probing_data: Path, tmp_path: Path, capsys) -> None:
    """The prepared Multi30K folder (text only): colour and noun-position degradation of every split."""
    from ikd.data.multi30k import prepare_multi30k

    data = tmp_path / "m30k"
    prepare_multi30k(data, source=str(probing_data / "multi30k"), pairs="en-de")
    out = tmp_path / "dc"
    assert (
        main(
            ["degrade", "color", "--words", str(probing_data / COLOURS17), "--data", str(data)]
            + ["--out", str(out), "--json", "-"]
        )
        == 0
    )
    report = _json_tail(capsys.readouterr().out)
    assert {s: (r["masked"], r["tokens"]) for s, r in report.items()} == {
        split: listed_tokens(data / "text" / f"{split}.en", probing_data / COLOURS17)
        for split in ("train", "val", "test_2016_flickr", "test_2017_flickr", "test_2017_mscoco")
    }
    assert round(report["train"]["percent"], 2) == 3.26  # the probing README: 3.26% of train tokens
    assert (out / "text" / "train.de").read_bytes() == (data / "text" / "train.de").read_bytes()
    p = probing_data / POSITIONS
    out = tmp_path / "de"
    args = ["degrade", "entity", "--positions", str(p / "multi30k.noun.position")]
    args += ["--positions", str(p / "multi30k.nouns.position"), "--data", str(data), "--out", str(out), "--json", "-"]
    assert main(args) == 0
    report = _json_tail(capsys.readouterr().out)
    files = [p / "multi30k.noun.position", p / "multi30k.nouns.position"]
    offsets = {"train": 0, "val": 29000, "test_2016_flickr": 30014, "test_2017_flickr": 31014}
    for split, offset in offsets.items():
        expected = positioned_tokens(data / "text" / f"{split}.en", files, offset)
        assert (report[split]["masked"], report[split]["tokens"]) == expected, split
    # the probing README: train 28.9%, val 28.7%, test2016 29.0%, test2017 31.5%
    percents = {s: round(report[s]["percent"], 1) for s in offsets}
    assert percents == {"train": 28.9, "val": 28.7, "test_2016_flickr": 29.0, "test_2017_flickr": 31.5}
    entry = json.loads((out / "manifest.json").read_text())["degrade"][0]
    assert entry["offsets"] == {
        "train": 0,
        "val": 29000,
        "test_2016_flickr": 30014,
        "test_2017_flickr": 31014,
        "test_2017_mscoco": 32014,
    }
