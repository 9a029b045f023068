"""End to end with trained toy checkpoints: raw English on stdin -> German that matches the toy references;
`ikd evaluate --checkpoint` on prepared toy splits.

`toy_mmt_checkpoint` (this module): the multimodal model (generator, pseudo-tokens, multimodal encoder) trained
with the KD weights at 0 for 25 quick epochs (seconds): it translates the toy test set perfectly, so the
whole raw-text path is checked against exact references. `toy_checkpoint` (the training fixture, trained
with distillation) checks that evaluation reads what training writes."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch
from fixtures_train import toy_recipe

from ikd.cli import main
from ikd.data.text import detokenize
from ikd.evaluation.metrics import bleu
from ikd.fileio import read_lines

MIN_BLEU = 90.0  # the trained model below reaches 100; random weights score below 1


@pytest.fixture(scope="module")
def toy_mmt_checkpoint(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ikd.train.trainer import train

    out = tmp_path_factory.mktemp("toy_mmt") / "run"
    recipe = toy_recipe(
        toy_data,
        *("model.d_model=64", "model.heads=4", "model.ffn=128", "model.encoder_layers=2", "model.decoder_layers=2"),
        *(
            "model.dropout=0.1",
            "vision.backbone=resnet18",
            "vision.image_size=32",
            "kd.lambda_irm=0",
            "kd.lambda_iam=0",
        ),
        *("train.max_epochs=25", "train.max_tokens=512", "train.lr=0.005", "train.warmup_updates=20"),
        *("train.valid_bleu=false", "train.keep_last=2", "train.average_last=2"),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops: one thread is as fast, and far faster when the cores are shared
    try:
        train(recipe, out=out, device="cpu", progress=False, report=lambda _msg: None)
    finally:
        torch.set_num_threads(threads)
    return out / "checkpoint_average.pt"


def raw(line: str) -> str:
    text = detokenize(line.split(), "en")
    return text[0].upper() + text[1:]


def test_raw_english_on_stdin_translates_to_the_toy_references(
    toy_mmt_checkpoint: Path, toy_data: Path, monkeypatch, capsys
):
    english = read_lines(toy_data / "text" / "test.en")
    german = read_lines(toy_data / "text" / "test.de")
    lines = [raw(x) for x in english]
    assert lines[0] != english[0]  # cased, detokenised: the translate command does the preprocessing
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("".join(x + "\n" for x in lines).encode())))
    assert main(["translate", "--checkpoint", str(toy_mmt_checkpoint), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    out = captured.out.split("\n")[:-1]
    assert len(out) == len(german)
    score = bleu(out, german).score
    exact = sum(o == g for o, g in zip(out, german))
    assert score > MIN_BLEU and exact >= 0.9 * len(german), (score, exact, out[:3], german[:3])


def test_evaluate_checkpoint_on_prepared_splits(toy_mmt_checkpoint: Path, toy_data: Path, tmp_path: Path, capsys):
    out_json, hyp_dir = tmp_path / "eval.json", tmp_path / "hyps"
    args = ["evaluate", "--checkpoint", str(toy_mmt_checkpoint), "--data", str(toy_data), "--split", "test"]
    args += ["--split", "val", "--save-hyps", str(hyp_dir), "--json", str(out_json), "--beam", "3", "--device", "cpu"]
    assert main(args) == 0
    text = capsys.readouterr().out
    report = json.loads(out_json.read_text())
    assert set(report["splits"]) == {"test", "val"}
    assert report["search"]["beam"] == 3
    for split in ("test", "val"):
        hyps = read_lines(hyp_dir / f"{split}.de", allow_empty=True)
        refs = read_lines(toy_data / "text" / f"{split}.de")
        assert len(hyps) == len(refs)
        result = report["splits"][split]
        assert result["systems"][0]["bleu"] == bleu(hyps, refs).score > MIN_BLEU
        assert result["meta"]["lang"] == "de" and "meteor" in result["systems"][0]
        assert f"{split} ({len(refs)} sentences)" in text
    assert "BLEU signature" in text and "METEOR" in text


def test_evaluate_the_training_fixture_against_itself(toy_checkpoint: Path, toy_data: Path, tmp_path: Path):
    """The distillation-trained fixture: evaluation reads what training writes (quality is not checked: the
    fixture is trained for a few updates only)."""
    out_json = tmp_path / "eval.json"
    args = ["evaluate", "--checkpoint", str(toy_checkpoint), "--baseline-checkpoint", str(toy_checkpoint)]
    args += ["--data", str(toy_data), "--split", "test", "--beam", "1", "--metrics", "bleu", "--json", str(out_json)]
    assert main(args) == 0
    report = json.loads(out_json.read_text())["splits"]["test"]
    assert report["significance"][0]["p_value"] == 1.0  # the same model: identical output
    assert report["baselines"][0]["bleu"] == report["systems"][0]["bleu"]
    assert report["meta"]["sentences"] == 40
    # the same checkpoint twice, with its translations saved: distinct display names and safe folder names
    hyps = tmp_path / "hyps"
    assert main([*args[:-2], "--json", str(out_json), "--save-hyps", str(hyps)]) == 0
    names = [s["name"] for s in json.loads(out_json.read_text())["splits"]["test"]["systems"]]
    names += [s["name"] for s in json.loads(out_json.read_text())["splits"]["test"]["baselines"]]
    assert names == ["checkpoint_average.pt (1)", "checkpoint_average.pt (2)"], names
    assert sorted(p.name for p in hyps.iterdir()) == ["checkpoint_average.pt_1", "checkpoint_average.pt_2"]


def test_evaluate_checkpoint_errors(toy_mmt_checkpoint: Path, toy_data: Path, tmp_path: Path, capsys):
    base = ["evaluate", "--checkpoint", str(toy_mmt_checkpoint)]
    assert main([*base, "--data", str(toy_data), "--split", "nosuch"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "nosuch.bpe.en: not found (split 'nosuch' not prepared; the prepared splits are test, train, val)" in err
    assert main([*base, "--split", "test"]) == 1
    assert "--data" in capsys.readouterr().err
    hyp = tmp_path / "hyp.de"  # an existing file: paths are checked before the combination of options
    hyp.write_text("ein kreis .\n")
    assert main([*base, "--data", str(toy_data), "--split", "test", "--hyp", str(hyp)]) == 1
    assert "does not take --hyp" in capsys.readouterr().err
    other = tmp_path / "data"
    (other / "en-de").mkdir(parents=True)
    (other / "en-de" / "vocab.txt").write_text("<s>\n<pad>\n</s>\n<unk>\nx\n", encoding="utf-8")
    assert main([*base, "--data", str(other), "--split", "test"]) == 1
    assert "vocabulary differs from" in capsys.readouterr().err
