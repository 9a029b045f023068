"""The toy world: grammar (agreement), text determines picture, byte-for-byte reproducibility, layout."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from ikd.cli import main
from ikd.data.toy import COLOURS, Group, Scene, captions, generate_split, render, sample_scene
from ikd.fileio import sha256_file


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "scene, en, de, fr",
    [
        (
            Scene(Group(1, "small", "red", "circle"), "above", Group(1, "big", "blue", "square")),
            "A small red circle above a big blue square.",
            "Ein kleiner roter Kreis über einem großen blauen Quadrat.",
            "Un petit cercle rouge au-dessus d'un grand carré bleu.",
        ),
        (
            Scene(Group(1, "big", "white", "diamond"), "left", Group(1, "small", "green", "star")),
            "A big white diamond to the left of a small green star.",
            "Eine große weiße Raute links von einem kleinen grünen Stern.",
            "Un grand losange blanc à gauche d'une petite étoile verte.",
        ),
        (
            Scene(Group(2, "small", "black", "cross"), "below", Group(1, "small", "yellow", "diamond")),
            "Two small black crosses below a small yellow diamond.",
            "Zwei kleine schwarze Kreuze unter einer kleinen gelben Raute.",
            "Deux petites croix noires au-dessous d'un petit losange jaune.",
        ),
        (
            Scene(Group(1, "big", "green", "triangle"), "right", Group(2, "big", "white", "star")),
            "A big green triangle to the right of two big white stars.",
            "Ein großes grünes Dreieck rechts von zwei großen weißen Sternen.",
            "Un grand triangle vert à droite de deux grandes étoiles blanches.",
        ),
        (
            Scene(Group(3, "small", "blue", "square")),
            "Three small blue squares.",
            "Drei kleine blaue Quadrate.",
            "Trois petits carrés bleus.",
        ),
    ],
)
def test_captions_agree_in_gender_number_and_case(scene: Scene, en: str, de: str, fr: str) -> None:
    assert captions(scene) == {"en": en, "de": de, "fr": fr}


def _mask(image: np.ndarray, colour: str) -> np.ndarray:
    rgb = np.array(COLOURS[colour][5]).reshape(3, 1, 1)
    return np.abs(image.astype(int) - rgb).max(0) < 30


def test_the_text_determines_the_picture() -> None:
    rng = random.Random(0)
    checked = 0
    for _ in range(300):
        scene = sample_scene(rng)
        image = render(scene, 64, rng)
        named = {scene.head.colour} | ({scene.other.colour} if scene.other else set())
        for colour in COLOURS:  # exactly the named colours are visible
            visible = _mask(image, colour).sum()
            assert visible > 8 if colour in named else visible == 0
        if scene.other is None or scene.other.colour == scene.head.colour:
            continue
        ys, xs = np.nonzero(_mask(image, scene.head.colour))
        yo, xo = np.nonzero(_mask(image, scene.other.colour))
        relation = {"above": ys.mean() < yo.mean(), "below": ys.mean() > yo.mean(),
                    "left": xs.mean() < xo.mean(), "right": xs.mean() > xo.mean()}  # fmt: skip
        assert relation[scene.relation], scene
        checked += 1
    assert checked > 100
    # size and count are visible as area: big > small, two > one
    area = {}
    for size in ("small", "big"):
        for count in (1, 2):
            image = render(Scene(Group(count, size, "red", "circle")), 64, random.Random(1))
            area[size, count] = _mask(image, "red").sum()
    assert area["big", 1] > 2 * area["small", 1] and abs(area["small", 2] / area["small", 1] - 2) < 0.3


def test_text_looks_like_multi30k() -> None:
    texts, images, scenes = generate_split("val", 50, 3, 32)
    assert images.shape == (50, 3, 32, 32) and images.dtype == np.uint8 and len(scenes) == 50
    for lines in texts.values():
        assert all(line == line.lower() and line.endswith(" .") for line in lines)
    assert any("d&apos; un" in line for line in texts["fr"])


def test_prepare_toy_is_reproducible_byte_for_byte(tmp_path: Path, capsys) -> None:
    args = ["--train", "60", "--val", "10", "--test", "10", "--image-size", "32"]
    assert main(["prepare", "toy", "--out", str(tmp_path / "a"), *args]) == 0
    assert main(["prepare", "toy", "--out", str(tmp_path / "b"), *args]) == 0
    assert main(["prepare", "toy", "--out", str(tmp_path / "c"), "--seed", "2", *args]) == 0
    a, b, c = (digests(tmp_path / x) for x in "abc")
    assert a == b and len(a) == 1 + 3 * 3 + 3 * 2
    assert a["text/train.en"] != c["text/train.en"] and a["images/train.npy"] != c["images/train.npy"]
    # layout and manifest as for Multi30K
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert m["kind"] == "toy" and m["image_size"] == 32 and list(m["splits"]) == ["train", "val", "test"]
    for split, n in (("train", 60), ("val", 10), ("test", 10)):
        entry = m["splits"][split]
        assert entry["lines"] == n and entry["images"]["count"] == n and entry["dropped_lines"] == []
        assert np.load(tmp_path / "a" / entry["images"]["path"], mmap_mode="r").shape == (n, 3, 32, 32)
        for lang in ("en", "de", "fr"):
            assert len((tmp_path / "a" / entry["langs"][lang]["path"]).read_text().splitlines()) == n
    # a re-run rewrites nothing
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*") if p.is_file()}
    assert main(["prepare", "toy", "--out", str(tmp_path / "a"), *args]) == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*") if p.is_file()} == mtimes
    assert "wrote" in capsys.readouterr().out


def test_bad_toy_options(tmp_path: Path, capsys) -> None:
    assert main(["prepare", "toy", "--out", str(tmp_path / "x"), "--val", "0"]) == 1
    assert "--val 0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
