"""The Python API (`from ikd import Translator`) against the CLI, interactive `ikd translate`, evaluate -c's
stderr, refused checkpoints, and the TensorBoard mirror of metrics.jsonl."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch
from test_translate import SHORT, raw, write_checkpoint

from ikd import Translator
from ikd.cli import main
from ikd.data.vocab import Vocabulary
from ikd.errors import IkdError
from ikd.fileio import read_lines


@pytest.fixture(scope="module")
def checkpoint(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pair = toy_data / "en-de"
    vocab = Vocabulary.load(pair / "vocab.txt")
    return write_checkpoint(tmp_path_factory.mktemp("api") / "random.pt", vocab, (pair / "bpe.codes").read_text())


@pytest.fixture(scope="module")
def sentences(toy_data: Path) -> list[str]:
    return [raw(x) for x in read_lines(toy_data / "text" / "test.en")[:5]]


def translator(path: Path, **kwargs) -> Translator:
    return Translator.from_checkpoint(path, device="cpu", beam=2, max_len_a=1, max_len_b=2, **kwargs)


def cli_translate(monkeypatch, capsys, path: Path, lines: list[str], *args: str) -> list[str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("".join(x + "\n" for x in lines).encode())))
    assert main(["translate", "-c", str(path), "--beam", "2", "--device", "cpu", *SHORT, "-q", *args]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # -q: no summary
    return captured.out.split("\n")[:-1]


def test_translate_equals_the_cli(checkpoint, sentences, monkeypatch, capsys) -> None:
    api = translator(checkpoint)
    out = api.translate(sentences + [""])
    assert len(out) == len(sentences) + 1 and out[-1] == "" and all(out[:-1])
    assert out[:-1] == cli_translate(monkeypatch, capsys, checkpoint, sentences)
    detok = translator(checkpoint, detok=True).translate(sentences)
    assert detok == cli_translate(monkeypatch, capsys, checkpoint, sentences, "--detok")


def test_input_modes_agree(checkpoint, toy_data) -> None:
    tokenized = read_lines(toy_data / "text" / "test.en")[:3]
    bpe = read_lines(toy_data / "en-de" / "test.bpe.en")[:3]
    expected = translator(checkpoint, input_mode="tokenized").translate(tokenized)
    assert translator(checkpoint, input_mode="bpe").translate(bpe) == expected
    assert translator(checkpoint).translate([raw(x) for x in tokenized]) == expected


def test_translate_nbest(checkpoint, sentences) -> None:
    api = translator(checkpoint)
    best = api.translate(sentences)
    nbest = api.translate_nbest(sentences, 2)
    assert [len(n) for n in nbest] == [2] * len(sentences)
    assert [n[0][0] for n in nbest] == best
    assert all(n[0][1] >= n[1][1] for n in nbest)  # best first
    assert api.translate(sentences) == best  # translate_nbest leaves the translator's settings as they were
    with pytest.raises(IkdError, match="--nbest 3: must be between 1 and the beam size"):
        api.translate_nbest(sentences, 3)
    with pytest.raises(TypeError, match="list of sentences"):
        api.translate("a red circle")


def test_greedy_nbest_scores_are_the_beam_search_scores(checkpoint, sentences) -> None:
    greedy = Translator.from_checkpoint(checkpoint, device="cpu", beam=1, max_len_a=1, max_len_b=2)
    got = greedy.translate_nbest(sentences, 1)
    assert all(len(n) == 1 and n[0][1] == n[0][1] and n[0][1] < 0 for n in got)  # no NaN: a log-probability
    ids = [greedy.source_ids(s, i + 1) for i, s in enumerate(sentences)]
    src = torch.full((len(ids), max(map(len, ids))), greedy.loaded.vocab.pad, dtype=torch.long)
    for row, x in enumerate(ids):
        src[row, : len(x)] = torch.tensor(x)
    from ikd.inference.search import beam_search

    beam1 = beam_search(greedy.loaded.model, src, beam=1, max_len_a=1, max_len_b=2)
    assert [n[0][0] for n in got] == [greedy.target_text(h[0].tokens) for h in beam1]
    assert [n[0][1] for n in got] == pytest.approx([h[0].score for h in beam1], abs=1e-5)


def test_a_beam_wider_than_the_vocabulary_allows_is_narrowed_with_a_warning(checkpoint, sentences) -> None:
    warnings: list[str] = []
    api = translator(checkpoint, warn=warnings.append)
    usable = len(api.loaded.vocab) - 3
    wide = Translator.from_checkpoint(
        checkpoint, device="cpu", beam=usable + 7, nbest=usable + 7, max_len_a=0, max_len_b=1, warn=warnings.append
    )
    assert warnings == [
        f"--beam {usable + 7}: only {usable} tokens of the vocabulary can start a translation; searching with "
        f"beam {usable} and --nbest {usable}"
    ]
    assert (wide.options.beam, wide.options.nbest) == (usable, usable)
    assert [len(n) for n in wide.translate_nbest(sentences[:2], usable)] == [usable, usable]


def test_bad_arguments_are_clear(checkpoint, tmp_path) -> None:
    with pytest.raises(IkdError, match="input mode 'words'"):
        translator(checkpoint, input_mode="words")
    with pytest.raises(IkdError, match="checkpoint not found"):
        Translator.from_checkpoint(tmp_path / "none.pt")
    with pytest.raises(IkdError, match="amp 'fast'"):
        Translator.from_checkpoint(checkpoint, amp="fast")


class TypedLines:
    """A terminal on stdin: each line is handed out only after the answer to the previous one is on stdout."""

    def __init__(self, lines: list[str], stdout: io.StringIO) -> None:
        self.lines, self.stdout, self.seen = lines, stdout, []

    def isatty(self) -> bool:
        return True

    @property
    def buffer(self):
        return self

    def __iter__(self):
        for i, line in enumerate(self.lines):
            self.seen.append(self.stdout.getvalue().count("\n"))
            yield (line + "\n").encode()
            assert i >= 0


def test_typed_lines_are_answered_one_by_one(checkpoint, sentences, monkeypatch) -> None:
    stdout = io.StringIO()
    typed = TypedLines(sentences[:3], stdout)
    monkeypatch.setattr(sys, "stdin", typed)
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["translate", "-c", str(checkpoint), "--device", "cpu", "--beam", "2", *SHORT, "-q"]) == 0
    assert typed.seen == [0, 1, 2]  # line k was read once k answers had been written
    assert stdout.getvalue().split("\n")[:-1] == translator(checkpoint).translate(sentences[:3])


def test_translate_files_and_dashes(checkpoint, sentences, tmp_path, monkeypatch, capsys) -> None:
    src = tmp_path / "in.en"
    src.write_text("".join(x + "\n" for x in sentences))
    out = tmp_path / "out.de"
    args = ["translate", "-c", str(checkpoint), "--device", "cpu", "--beam", "2", *SHORT]
    assert main([*args, "-i", str(src), "-o", str(out)]) == 0
    assert "translated 5 sentences" in capsys.readouterr().err
    assert main([*args, "-i", str(src), "-o", "-", "-q"]) == 0
    assert capsys.readouterr().out == out.read_text()
    assert out.read_text().split("\n")[:-1] == translator(checkpoint).translate(sentences)


def test_evaluate_checkpoint_prints_results_alone_on_stdout(checkpoint, toy_data, capsys) -> None:
    args = ["evaluate", "-c", str(checkpoint), "--data", str(toy_data), "--split", "test", "--metrics", "bleu"]
    assert main([*args, "--beam", "1", "--max-len-a", "1", "--max-len-b", "2", "--device", "cpu", "--json", "-"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["splits"]["test"]["meta"]["sentences"] == 40
    assert "translated test (40 sentences)" in captured.err


class Pickled:
    """An object torch.load(weights_only=True) refuses to unpickle."""


def test_a_checkpoint_with_pickled_objects_is_refused_without_torch_advice(tmp_path, capsys) -> None:
    path = tmp_path / "pickled.pt"
    torch.save({"format": "ikd-checkpoint-1", "thing": Pickled()}, path)
    assert main(["translate", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{path}: not a readable ikd checkpoint" in err
    assert "weights_only" not in err and "pickled Python objects" in err


def test_tensorboard_scalars_of_the_metrics_records() -> None:
    from ikd.train.tensorboard import scalars

    step, values = scalars({"kind": "train", "epoch": 1, "updates": 50, "loss": 3.5, "irm": "nan", "ok": True})
    assert step == 50 and values == {"train/epoch": 1.0, "train/loss": 3.5}
    step, values = scalars({"kind": "epoch", "epoch": 2, "updates": 90, "valid_bleu": 12.5, "train_loss": 3.0})
    assert step == 90 and values == {"epoch/epoch": 2.0, "valid/bleu": 12.5, "epoch_train/loss": 3.0}
    assert scalars({"kind": "resume", "epoch": 1, "updates": 10}) == (10, {})


def test_tensorboard_mirror_writes_events_and_keeps_the_jsonl(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ikd.train.metrics import MetricsLog, read_metrics
    from ikd.train.tensorboard import mirror_to_tensorboard

    log = MetricsLog(tmp_path / "metrics.jsonl")
    writer = mirror_to_tensorboard(log, tmp_path / "tensorboard")
    log.write("train", epoch=1, updates=10, loss=4.0)
    log.write("epoch", epoch=1, updates=20, valid_loss=3.5, valid_bleu=7.0)
    writer.close()
    assert [r["kind"] for r in read_metrics(tmp_path / "metrics.jsonl")] == ["train", "epoch"]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train/loss", "valid/loss", "valid/bleu"} <= set(events.Tags()["scalars"])
    assert [(e.step, e.value) for e in events.Scalars("valid/bleu")] == [(20, 7.0)]


def test_tensorboard_missing_is_a_clear_error(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    recipe = tmp_path / "toy.yaml"
    assert main(["recipes", "toy", "-o", str(recipe), "-q"]) == 0
    assert main(["train", str(recipe), "--tensorboard", "--out", str(tmp_path / "run"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "needs the tensorboard package" in err and "pip install 'ikd[tensorboard]'" in err
    assert not (tmp_path / "run").exists()
