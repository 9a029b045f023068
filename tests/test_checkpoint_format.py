"""Checkpoint format 2: the translator's weights apart from the Distiller's; 0.1.0 (format 1) checkpoints still
load; translation builds no CNN."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ikd.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from ikd.cli import main
from ikd.data.vocab import Vocabulary
from ikd.errors import IkdError
from ikd.inference.loading import load_for_inference
from ikd.inference.translator import Translator
from ikd.recipe import Recipe
from ikd.train.objective import build_training_model

WORDS = "a man dog runs in the park . ein mann hund läuft im".split()
SENTENCES = ["a man runs in the park .", "a dog ."]


def tiny_ikd_recipe(backbone: str = "resnet18", size: int = 32) -> Recipe:
    r = Recipe()
    r.model.d_model, r.model.heads, r.model.ffn = 16, 2, 32
    r.model.encoder_layers = r.model.decoder_layers = 1
    r.vision.backbone, r.vision.image_size = backbone, size
    r.train.channels_last = False
    return r


def write(path: Path, recipe: Recipe, format_1: bool = False) -> Path:
    vocab = Vocabulary.build([WORDS])
    torch.manual_seed(0)
    states = build_training_model(recipe, len(vocab), vocab.pad).checkpoint_states()
    payload = {"recipe": recipe.to_dict(), "vocab": vocab.tokens, "bpe_codes": "", "src": "en", "tgt": "de"}
    payload.update(epoch=1, updates=1)
    if format_1:  # the 0.1.0 layout: one state dict with the CNNs in it, no feature_shape
        payload["model"] = {**states["model"], **states["distiller"]}
        payload["format"] = "ikd-checkpoint-1"
        torch.save(payload, path)
    else:
        save_checkpoint({**payload, **states}, path)
    return path


def test_format_1_checkpoints_load_and_translate_as_format_2(tmp_path: Path) -> None:
    recipe = tiny_ikd_recipe()
    old = load_for_inference(write(tmp_path / "old.pt", recipe, format_1=True), "cpu", with_distiller=True)
    new = load_for_inference(write(tmp_path / "new.pt", recipe), "cpu", with_distiller=True)
    assert load_checkpoint(tmp_path / "old.pt")["format"] == FORMAT
    assert old.model.feature_shape == new.model.feature_shape == (512, 1, 1)
    assert Translator(old).translate_lines(SENTENCES) == Translator(new).translate_lines(SENTENCES)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(old.distiller.teacher_features(images), new.distiller.teacher_features(images))


def test_an_unknown_format_version_is_named(tmp_path: Path) -> None:
    path = tmp_path / "future.pt"
    torch.save({"format": "ikd-checkpoint-9", "model": {}}, path)
    with pytest.raises(IkdError, match=r"future\.pt: checkpoint format 'ikd-checkpoint-9' is not one"):
        load_checkpoint(path)


def test_translation_of_a_resnet50_ikd_checkpoint_builds_no_cnn(tmp_path: Path, monkeypatch, capsys) -> None:
    """`ikd translate` reads the translator only: building any teacher or student fails the test, and the
    loaded model holds no convolution. A subprocess shows torchvision is never imported."""
    path = write(tmp_path / "r50.pt", tiny_ikd_recipe("resnet50", 64))
    import ikd.model.vision.student as student
    import ikd.model.vision.teacher as teacher

    def refuse(*args, **kwargs):
        raise AssertionError("a CNN was built for translation")

    monkeypatch.setattr(teacher, "_trunk", refuse)
    monkeypatch.setattr(student, "build_student", refuse)
    loaded = load_for_inference(path, "cpu")
    assert loaded.model.feature_shape == (2048, 2, 2) and loaded.distiller is None
    assert not any(isinstance(m, torch.nn.Conv2d) for m in loaded.model.modules())
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("a man runs .\n"))
    assert main(["translate", "-c", str(path), "--device", "cpu"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    code = (
        "import sys; from ikd.inference.loading import load_for_inference; "
        f"load_for_inference({str(path)!r}, 'cpu'); print('torchvision' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_retrieve_needs_the_distiller_and_says_so(tmp_path: Path) -> None:
    path = write(tmp_path / "ckpt.pt", tiny_ikd_recipe())
    payload = load_checkpoint(path)
    del payload["distiller"]
    save_checkpoint({k: v for k, v in payload.items() if k != "format"}, tmp_path / "bare.pt")
    with pytest.raises(IkdError, match=r"bare\.pt: holds no teacher or student weights"):
        load_for_inference(tmp_path / "bare.pt", "cpu", with_distiller=True)
