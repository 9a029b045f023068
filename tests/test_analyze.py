"""`ikd analyze attention|imagine` on the toy checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ikd.cli import main

SENTENCE = "a small red circle is above a big blue square ."


@pytest.fixture(scope="module")
def loaded(toy_checkpoint: Path):
    from ikd.inference.loading import load_for_inference

    return load_for_inference(toy_checkpoint, "cpu")


def test_pseudo_token_rows_sum_to_one(loaded) -> None:
    from ikd.probes.attention import pseudo_token_attention
    from ikd.probes.sentences import batch_ids, source_pieces

    pieces = source_pieces(loaded, "A small red circle is above a big blue square.")
    assert "".join(pieces).replace("@@", "") == "asmallredcircleisaboveabigbluesquare."  # lowercased, tokenised
    src = batch_ids(loaded, [pieces])
    probs = pseudo_token_attention(loaded.model, src)
    c, h, w = loaded.model.feature_shape
    assert probs.shape == (loaded.recipe.model.heads, h * w, len(pieces) + 1)
    assert np.allclose(probs.sum(axis=2), 1.0, atol=1e-5)
    assert (probs >= 0).all()
    # the rows are the pseudo-token queries: the last P rows of the [T + P, T] matrix
    with torch.no_grad():
        full = loaded.model.encode(src, return_attention=True).attention[0]
    assert full.shape[1] == src.size(1) + h * w
    assert np.allclose(probs, full[:, src.size(1) :, :].numpy())


def test_attention_png(toy_checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "attention.png"
    args = ["analyze", "attention", "--checkpoint", str(toy_checkpoint), "--device", "cpu", "-o", str(out)]
    assert main([*args, "--sentence", SENTENCE, "--sentence", "two green triangles ."]) == 0
    assert "2 sentence(s)" in capsys.readouterr().err
    with Image.open(out) as im:
        assert im.format == "PNG"
        width, height = im.size
    assert 800 <= width <= 6000 and 300 <= height <= 3000
    assert main([*args, "--sentence", "two green triangles .", "--tokenized", "--no-eos"]) == 0


def test_imagine_png(toy_checkpoint: Path, loaded, tmp_path: Path, capsys) -> None:
    one = tmp_path / "one.png"
    base = ["analyze", "imagine", "--checkpoint", str(toy_checkpoint), "--device", "cpu"]
    assert main([*base, "--sentence", SENTENCE, "-o", str(one)]) == 0
    size = loaded.recipe.vision.image_size
    with Image.open(one) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (size, size)
        pixels = np.asarray(im)
    assert pixels.std() > 0  # not a blank picture
    grid = tmp_path / "grid.png"
    file = tmp_path / "sentences.txt"
    file.write_text("two green triangles .\na big yellow star .\n")
    assert main([*base, "--sentence", SENTENCE, "--file", str(file), "-o", str(grid)]) == 0
    assert "3 imagined image(s)" in capsys.readouterr().err
    with Image.open(grid) as im:
        assert im.size[0] > im.size[1] > 200


def test_imagined_pixels_are_denormalised() -> None:
    from ikd.model.vision import IMAGENET_MEAN, IMAGENET_STD
    from ikd.probes.imagine import imagined_images

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    target = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    x = (target - mean) / std
    x[..., 0, 0] = 50.0  # far out of range: clipped to white

    class Translator:
        text_only = False

        def generate_m(self, src):
            return src

    class Distiller:
        def imagine(self, m):
            return x

    pictures = imagined_images(Translator(), Distiller(), torch.zeros(1, 3, dtype=torch.long))
    assert pictures.shape == (1, 2, 2, 3) and pictures.dtype == np.uint8
    assert pictures[0, 1, 1].tolist() == [0, 128, 255]
    assert pictures[0, 0, 0].tolist() == [255, 255, 255]


def test_text_only_checkpoint_is_a_clear_error(toy_checkpoint: Path, tmp_path: Path, capsys) -> None:
    from fixtures_train import text_only_copy

    path = text_only_copy(toy_checkpoint, tmp_path / "text.pt")
    for command in ("attention", "imagine"):
        args = ["analyze", command, "--checkpoint", str(path), "--sentence", "a cat", "-o", str(tmp_path / "x.png")]
        assert main(args) == 1
        assert "text-only model" in capsys.readouterr().err
