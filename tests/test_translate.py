"""`ikd translate` and checkpoint loading with a tiny random-weight checkpoint on the toy data's vocabulary and
BPE codes: stdin/stdout piping, order, empty lines, chunked streaming, n-best, input modes, truncation, errors."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch

from ikd.checkpoint import load_checkpoint, save_checkpoint
from ikd.cli import main
from ikd.data.text import detokenize
from ikd.data.vocab import Vocabulary
from ikd.errors import IkdError
from ikd.fileio import read_lines
from ikd.inference.loading import load_for_inference
from ikd.inference.translator import SearchOptions, Translator
from ikd.recipe import Recipe

MAX_POSITIONS = 24
SHORT = ["--max-len-a", "1", "--max-len-b", "2"]  # random weights never stop early: keep outputs short


def tiny_recipe() -> Recipe:
    r = Recipe()
    r.model.d_model, r.model.heads, r.model.ffn = 16, 2, 32
    r.model.encoder_layers = r.model.decoder_layers = 1
    r.model.dropout = 0.0
    r.model.text_only = True
    r.model.max_positions = MAX_POSITIONS
    return r


def write_checkpoint(path: Path, vocab: Vocabulary, codes: str, recipe: Recipe | None = None, seed: int = 0) -> Path:
    from ikd.train.objective import build_training_model

    torch.manual_seed(seed)
    recipe = recipe or tiny_recipe()
    model = build_training_model(recipe, len(vocab))
    payload = {
        **model.checkpoint_states(),
        "recipe": recipe.to_dict(),
        "vocab": vocab.tokens,
        "bpe_codes": codes,
        "src": "en",
        "tgt": "de",
        "epoch": 0,
        "updates": 0,
    }
    save_checkpoint(payload, path)
    return path


@pytest.fixture(scope="module")
def random_checkpoint(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pair = toy_data / "en-de"
    vocab = Vocabulary.load(pair / "vocab.txt")
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "random.pt", vocab, (pair / "bpe.codes").read_text())


@pytest.fixture(scope="module")
def toy_en(toy_data: Path) -> list[str]:
    return read_lines(toy_data / "text" / "test.en")[:12]


def raw(line: str) -> str:
    """A cased, untokenised sentence as a user would type it."""
    text = detokenize(line.split(), "en")
    return text[0].upper() + text[1:]


def run_stdin(monkeypatch, capsys, lines: list[str], args: list[str]) -> tuple[int, list[str], str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("".join(x + "\n" for x in lines).encode())))
    code = main(["translate", *args])
    captured = capsys.readouterr()
    return code, captured.out.split("\n")[:-1], captured.err


def test_stdin_one_line_per_line_in_order_with_empty_lines(random_checkpoint, toy_en, monkeypatch, capsys) -> None:
    lines = [raw(x) for x in toy_en]
    lines.insert(3, "")
    lines.insert(7, "   ")
    args = ["--checkpoint", str(random_checkpoint), "--beam", "2", "--batch-size", "4", "--device", "cpu", *SHORT]
    code, out, err = run_stdin(monkeypatch, capsys, lines, args)
    assert code == 0, err
    assert len(out) == len(lines)
    assert out[3] == "" and out[7] == ""
    assert all(o for i, o in enumerate(out) if i not in (3, 7))  # random weights: output, but never empty
    assert "translated 12 sentences (14 lines)" in err
    # each line alone gives the same output: batching and length sorting do not change results or order
    for i in (0, 5, 13):
        code, alone, _ = run_stdin(monkeypatch, capsys, [lines[i]], args)
        assert alone == [out[i]]


def test_files_chunks_and_input_modes_agree(random_checkpoint, toy_en, toy_data, tmp_path) -> None:
    src, tok, bpe = tmp_path / "in.en", tmp_path / "tok.en", tmp_path / "bpe.en"
    src.write_text("".join(raw(x) + "\n" for x in toy_en), encoding="utf-8")
    tok.write_text("".join(x + "\n" for x in toy_en), encoding="utf-8")
    bpe_lines = read_lines(toy_data / "en-de" / "test.bpe.en")[: len(toy_en)]
    bpe.write_text("".join(x + "\n" for x in bpe_lines), encoding="utf-8")
    common = ["--checkpoint", str(random_checkpoint), "--beam", "3", "--quiet", *SHORT]
    outputs = {}
    for name, extra in {
        "one_chunk": ["--input", str(src)],
        "chunks_of_5": ["--input", str(src), "--buffer-lines", "5", "--batch-size", "2"],
        "max_tokens": ["--input", str(src), "--max-tokens", "30"],
        "tokenized": ["--input", str(tok), "--tokenized"],
        "bpe": ["--input", str(bpe), "--bpe"],
    }.items():
        out = tmp_path / f"{name}.de"
        assert main(["translate", *common, *extra, "--output", str(out)]) == 0
        outputs[name] = read_lines(out)
    first = outputs["one_chunk"]
    assert all(v == first for v in outputs.values())
    assert not any("@@" in line for line in first)


def test_nbest_and_detok(random_checkpoint, toy_en, monkeypatch, capsys) -> None:
    lines = [raw(x) for x in toy_en[:3]] + [""]
    base = ["--checkpoint", str(random_checkpoint), "--beam", "4", "--quiet", *SHORT]
    code, out, err = run_stdin(monkeypatch, capsys, lines, [*base, "--nbest", "3"])
    assert code == 0, err
    assert len(out) == 3 * len(lines)
    fields = [line.split(" ||| ") for line in out]
    assert [int(f[0]) for f in fields] == [i for i in range(len(lines)) for _ in range(3)]
    for i in range(3):
        scores = [float(f[2]) for f in fields[3 * i : 3 * i + 3]]
        assert scores == sorted(scores, reverse=True) and all(s < 0 for s in scores)
    assert fields[9:] == [["3", "", "0.0000"]] * 3
    _, best, _ = run_stdin(monkeypatch, capsys, lines, base)
    assert [f[1] for f in fields[::3]][:3] == best[:3]
    _, detok, _ = run_stdin(monkeypatch, capsys, lines, [*base, "--detok"])
    assert detok[:3] == [detokenize(b.split(), "de") for b in best[:3]]
    code, _, err = run_stdin(monkeypatch, capsys, lines, [*base, "--nbest", "5"])
    assert code == 1 and "--nbest 5" in err


def test_overlong_input_is_truncated_with_a_warning(random_checkpoint, monkeypatch, capsys) -> None:
    long = " ".join(["a red circle"] * 20)
    code, out, err = run_stdin(
        monkeypatch, capsys, ["A circle.", long], ["--checkpoint", str(random_checkpoint), *SHORT]
    )
    assert code == 0 and len(out) == 2 and out[1]
    assert "warning: line 2: the source has" in err and f"limit of {MAX_POSITIONS}" in err
    assert "1 overlong sources truncated" in err


def test_source_ids_unknown_tokens_and_modes(random_checkpoint) -> None:
    loaded = load_for_inference(random_checkpoint, "cpu")
    vocab = loaded.vocab
    raw_t = Translator(loaded, SearchOptions(beam=1))
    tok_t = Translator(loaded, SearchOptions(beam=1), input_mode="tokenized")
    bpe_t = Translator(loaded, SearchOptions(beam=1), input_mode="bpe")
    assert raw_t.source_ids("A small red Circle.", 1) == tok_t.source_ids("a small red circle .", 1)
    ids = bpe_t.source_ids("a zzqx@@ circle", 1)
    assert ids[1] == vocab.unk and ids[-1] == vocab.eos and ids[0] == vocab.index["a"]
    assert raw_t.source_ids("  ", 1) is None
    assert loaded.model.training is False and loaded.amp_dtype is None
    # tokenised input is lowercased as the training text was, the mask token excepted
    assert tok_t.source_ids("A Small RED circle [U] .", 1) == tok_t.source_ids("a small red circle [U] .", 1)
    assert tok_t.source_ids("a [U] circle", 1) == [vocab.index["a"], vocab.unk, vocab.index["circle"], vocab.eos]
    # text that spells a control symbol is unknown text, not padding or an early end of the sentence
    ids = bpe_t.source_ids("a <pad> circle </s> <s> .", 1)
    assert ids[1] == ids[3] == ids[4] == vocab.unk and ids.count(vocab.eos) == 1 and vocab.pad not in ids


def test_a_custom_glossary_travels_in_the_checkpoint(random_checkpoint, tmp_path) -> None:
    """A mask token other than [U] (`ikd degrade --mask`, `ikd bpe --glossary`) stays one token at inference:
    the checkpoint carries the glossary, and raw-text preprocessing leaves it uncased and unescaped."""
    payload = load_checkpoint(random_checkpoint)
    assert "bpe_glossaries" not in payload  # an older checkpoint: the default glossary [U]
    plain = load_for_inference(random_checkpoint, "cpu")
    assert plain.keep_tokens == ("[U]",)
    assert len(Translator(plain, input_mode="raw").source_ids("a <MASK> circle", 1)) > 4  # escaped, split
    save_checkpoint({**payload, "bpe_glossaries": ["<MASK>"]}, tmp_path / "glossary.pt")
    loaded = load_for_inference(tmp_path / "glossary.pt", "cpu")
    assert loaded.keep_tokens == ("<MASK>",) and loaded.bpe.apply(["<MASK>"]) == ["<MASK>"]
    ids = Translator(loaded, input_mode="raw").source_ids("A <MASK> circle.", 1)
    assert ids == loaded.vocab.encode(loaded.bpe.apply(["a", "<MASK>", "circle", "."]))
    assert ids[1] == loaded.vocab.unk  # one token, unknown to this vocabulary: not split into pieces


def test_search_logits_are_fp32_under_autocast(random_checkpoint) -> None:
    """Incremental decoding (beam search) projects to the vocabulary in fp32 even under bf16 autocast; a
    training forward keeps the autocast dtype."""
    loaded = load_for_inference(random_checkpoint, "cpu")
    model = loaded.model
    src = torch.tensor([loaded.vocab.encode(["a", "circle"])])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        enc = model.encode(src)
        step = model.decode(torch.full((1, 1), loaded.vocab.eos), enc, model.new_decoder_state())
        full = model.decode(torch.full((1, 3), loaded.vocab.eos), enc)
    assert step.dtype == torch.float32 and full.dtype == torch.bfloat16


def test_raw_input_is_segmented_like_the_prepared_splits(random_checkpoint, toy_data) -> None:
    """Raw text -> Multi30K-style tokens -> the checkpoint's BPE gives the ids of the prepared BPE'd split."""
    loaded = load_for_inference(random_checkpoint, "cpu")
    translator = Translator(loaded, SearchOptions(beam=1))
    english = read_lines(toy_data / "text" / "test.en")
    segmented = read_lines(toy_data / "en-de" / "test.bpe.en")
    assert any("@@" in line for line in segmented)
    for number, (line, bpe_line) in enumerate(zip(english, segmented), start=1):
        assert translator.source_ids(raw(line), number) == loaded.vocab.encode(bpe_line.split())


def test_loading_errors(random_checkpoint, toy_data, tmp_path, monkeypatch, capsys) -> None:
    payload = load_checkpoint(random_checkpoint)
    payload.pop("format")
    other = dict(payload, vocab=payload["vocab"] + [f"extra{i}" for i in range(8)])
    save_checkpoint(other, tmp_path / "other_vocab.pt")
    with pytest.raises(IkdError, match="vocabulary has .* tokens but the weights .* were trained with"):
        load_for_inference(tmp_path / "other_vocab.pt", "cpu")
    state = dict(payload["model"])
    state.pop(next(iter(state)))
    save_checkpoint(dict(payload, model=state), tmp_path / "missing.pt")
    with pytest.raises(IkdError, match="missing"):
        load_for_inference(tmp_path / "missing.pt", "cpu")
    wrong = Vocabulary(payload["vocab"][:-1] + ["zzz"])
    with pytest.raises(IkdError, match="differs from the given one"):
        load_for_inference(random_checkpoint, "cpu", expected_vocab=wrong)
    wrong.save(tmp_path / "vocab.txt")
    code, _, err = run_stdin(
        monkeypatch, capsys, ["x"], ["-c", str(random_checkpoint), "--vocab", str(tmp_path / "vocab.txt")]
    )
    assert code == 1 and "differs from the given one" in err
    ok = ["-c", str(random_checkpoint), "--vocab", str(toy_data / "en-de" / "vocab.txt"), "-q", *SHORT]
    assert run_stdin(monkeypatch, capsys, ["A circle."], ok)[0] == 0
    code, _, err = run_stdin(monkeypatch, capsys, ["x"], ["--checkpoint", str(tmp_path / "none.pt")])
    assert code == 1 and "none.pt: checkpoint not found" in err
    code, _, err = run_stdin(monkeypatch, capsys, ["x"], ["-c", str(tmp_path)])
    assert code == 1 and "is a folder, not a checkpoint file" in err
    (tmp_path / "text.pt").write_text("a text file, not a checkpoint\n")
    code, _, err = run_stdin(monkeypatch, capsys, ["x"], ["-c", str(tmp_path / "text.pt")])
    assert code == 1 and "text.pt: not a checkpoint" in err
    code, _, err = run_stdin(monkeypatch, capsys, ["x"], ["-c", str(random_checkpoint), "-o", str(tmp_path)])
    assert code == 1 and err.strip() == f"error: {tmp_path}: is a folder; give a file name"
    code, _, err = run_stdin(
        monkeypatch, capsys, ["x"], ["--checkpoint", str(random_checkpoint), "--bpe", "--tokenized"]
    )
    assert code == 1 and "exclude each other" in err


def test_invalid_utf8_input_names_the_line(random_checkpoint, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.en"
    bad.write_bytes(b"a circle\n\xff\xfe\n")
    assert main(["translate", "--checkpoint", str(random_checkpoint), "--input", str(bad), "--quiet"]) == 1
    assert "bad.en:2: not valid UTF-8" in capsys.readouterr().err
