"""The toy world: seeded synthetic [image, EN, DE, FR] triplets in the prepared layout.

A scene is one group of 1-3 identical shapes, or two groups (at most three shapes in all) in a spatial
relation. Each group has a count, size, colour and shape; the caption names all of them and the relation,
so the text determines the picture up to exact positions. German and French agree in gender, number and
case: "ein kleiner roter Kreis über einem großen blauen Quadrat" / "un petit cercle rouge au-dessus d'un
grand carré bleu".
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ikd.data.images import check_image_size
from ikd.data.manifest import Staging, manifest_path, write_manifest
from ikd.data.prepared import PreparedData
from ikd.data.text import preprocess
from ikd.errors import IkdError

LANGS = ("en", "de", "fr")
BACKGROUND = (128, 128, 128)
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Noun:
    en: str
    en_pl: str
    de: str
    de_pl: str
    de_dat_pl: str
    de_gender: str  # m, f, n
    fr: str
    fr_pl: str
    fr_gender: str  # m, f


SHAPES = {
    "circle": Noun("circle", "circles", "Kreis", "Kreise", "Kreisen", "m", "cercle", "cercles", "m"),
    "square": Noun("square", "squares", "Quadrat", "Quadrate", "Quadraten", "n", "carré", "carrés", "m"),
    "triangle": Noun("triangle", "triangles", "Dreieck", "Dreiecke", "Dreiecken", "n", "triangle", "triangles", "m"),
    "star": Noun("star", "stars", "Stern", "Sterne", "Sternen", "m", "étoile", "étoiles", "f"),
    "diamond": Noun("diamond", "diamonds", "Raute", "Rauten", "Rauten", "f", "losange", "losanges", "m"),
    "cross": Noun("cross", "crosses", "Kreuz", "Kreuze", "Kreuzen", "n", "croix", "croix", "f"),
}
# English -> (German stem, French m sg, f sg, m pl, f pl, RGB)
COLOURS = {
    "red": ("rot", "rouge", "rouge", "rouges", "rouges", (215, 40, 40)),
    "green": ("grün", "vert", "verte", "verts", "vertes", (40, 165, 60)),
    "blue": ("blau", "bleu", "bleue", "bleus", "bleues", (40, 80, 225)),
    "yellow": ("gelb", "jaune", "jaune", "jaunes", "jaunes", (240, 215, 40)),
    "black": ("schwarz", "noir", "noire", "noirs", "noires", (20, 20, 20)),
    "white": ("weiß", "blanc", "blanche", "blancs", "blanches", (245, 245, 245)),
}
# English -> (German stem, French m sg stem (regular: +e, +s, +es), radius as a share of the image side)
SIZES = {"small": ("klein", "petit", 0.08), "big": ("groß", "grand", 0.14)}
# English phrase, German preposition (+ dative), French preposition (elides before un/une)
RELATIONS = {
    "above": ("above", "über", "au-dessus de"),
    "below": ("below", "unter", "au-dessous de"),
    "left": ("to the left of", "links von", "à gauche de"),
    "right": ("to the right of", "rechts von", "à droite de"),
}
NUMBERS = {2: ("two", "zwei", "deux"), 3: ("three", "drei", "trois")}


@dataclass(frozen=True)
class Group:
    count: int
    size: str
    colour: str
    shape: str


@dataclass(frozen=True)
class Scene:
    """`head`, optionally in `relation` to `other` (head above/below/left of/right of other)."""

    head: Group
    relation: str | None = None
    other: Group | None = None


# ---------------------------------------------------------------------------------------------- captions


def _en(g: Group) -> str:
    noun = SHAPES[g.shape]
    det = "a" if g.count == 1 else NUMBERS[g.count][0]
    return f"{det} {g.size} {g.colour} {noun.en if g.count == 1 else noun.en_pl}"


def _de(g: Group, dative: bool) -> str:
    noun = SHAPES[g.shape]
    size, colour = SIZES[g.size][0], COLOURS[g.colour][0]
    if g.count == 1:
        if dative:  # einem/einer + weak -en
            det = {"m": "einem", "f": "einer", "n": "einem"}[noun.de_gender]
            ending = "en"
        else:  # ein/eine/ein + mixed declension
            det = {"m": "ein", "f": "eine", "n": "ein"}[noun.de_gender]
            ending = {"m": "er", "f": "e", "n": "es"}[noun.de_gender]
        return f"{det} {size}{ending} {colour}{ending} {noun.de}"
    # numeral without article: strong plural endings (-e nominative, -en dative)
    ending = "en" if dative else "e"
    return f"{NUMBERS[g.count][1]} {size}{ending} {colour}{ending} {noun.de_dat_pl if dative else noun.de_pl}"


def _fr(g: Group) -> str:
    noun = SHAPES[g.shape]
    fem, plural = noun.fr_gender == "f", g.count > 1
    size = SIZES[g.size][1] + ("e" if fem else "") + ("s" if plural else "")
    colour = COLOURS[g.colour][1 + (1 if fem else 0) + (2 if plural else 0)]
    det = NUMBERS[g.count][2] if plural else ("une" if fem else "un")
    return f"{det} {size} {noun.fr_pl if plural else noun.fr} {colour}"


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def captions(scene: Scene) -> dict[str, str]:
    """Raw (cased, untokenised) captions of a scene in en, de, fr."""
    en, de, fr = _en(scene.head), _de(scene.head, False), _fr(scene.head)
    if scene.relation is not None and scene.other is not None:
        rel_en, rel_de, rel_fr = RELATIONS[scene.relation]
        other_fr = _fr(scene.other)
        if other_fr.startswith(("un ", "une ")):
            fr_tail = f"{rel_fr[:-2]}d'{other_fr}"  # "au-dessus de" + "un ..." -> "au-dessus d'un ..."
        else:
            fr_tail = f"{rel_fr} {other_fr}"
        en = f"{en} {rel_en} {_en(scene.other)}"
        de = f"{de} {rel_de} {_de(scene.other, True)}"
        fr = f"{fr} {fr_tail}"
    return {"en": _sentence(en), "de": _sentence(de), "fr": _sentence(fr)}


# ------------------------------------------------------------------------------------------------ scenes


def sample_scene(rng: random.Random) -> Scene:
    def group(count: int) -> Group:
        return Group(count, rng.choice(list(SIZES)), rng.choice(list(COLOURS)), rng.choice(list(SHAPES)))

    if rng.random() < 0.3:
        return Scene(group(rng.choices((1, 2, 3), weights=(5, 3, 2))[0]))
    c1, c2 = rng.choices(((1, 1), (2, 1), (1, 2)), weights=(6, 2, 2))[0]
    return Scene(group(c1), rng.choice(list(RELATIONS)), group(c2))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        h = 0.85 * r
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + 0.95 * r, cy + 0.75 * r), (cx - 0.95 * r, cy + 0.75 * r)], fill=fill)
    elif shape == "star":
        points = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.45 * r
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + rad * math.cos(angle), cy + rad * math.sin(angle)))
        draw.polygon(points, fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r), (cx - 0.7 * r, cy)], fill=fill)
    elif shape == "cross":
        a = 0.32 * r
        draw.rectangle((cx - r, cy - a, cx + r, cy + a), fill=fill)
        draw.rectangle((cx - a, cy - r, cx + a, cy + r), fill=fill)
    else:
        raise ValueError(shape)


def _place_group(
    rng: random.Random, g: Group, box: tuple[float, float, float, float], vertical: bool, side: float
) -> list[tuple[float, float, float]]:
    """Centres and radius of a group's shapes laid out in a row (or column) at a random spot inside box."""
    r = SIZES[g.size][2] * side
    gap = 0.05 * side
    length = g.count * 2 * r + (g.count - 1) * gap
    w, h = (2 * r, length) if vertical else (length, 2 * r)
    x0, y0, x1, y1 = box
    left = x0 + rng.random() * max(0.0, (x1 - x0) - w)
    top = y0 + rng.random() * max(0.0, (y1 - y0) - h)
    out = []
    for k in range(g.count):
        step = r + k * (2 * r + gap)
        out.append((left + r, top + step, r) if vertical else (left + step, top + r, r))
    return out


def render(scene: Scene, image_size: int, rng: random.Random) -> np.ndarray:
    """Scene -> uint8 [3, S, S] (drawn 4x larger, box-downsampled for smooth edges)."""
    side = image_size * SUPERSAMPLE
    m = 0.03 * side
    canvas = Image.new("RGB", (side, side), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if scene.relation is None:
        boxes = [(scene.head, (m, m, side - m, side - m), False)]
    else:
        half = side / 2
        top, bottom = (m, m, side - m, half - m / 2), (m, half + m / 2, side - m, side - m)
        left, right = (m, m, half - m / 2, side - m), (half + m / 2, m, side - m, side - m)
        first, second, vertical = {
            "above": (top, bottom, False),
            "below": (bottom, top, False),
            "left": (left, right, True),
            "right": (right, left, True),
        }[scene.relation]
        boxes = [(scene.head, first, vertical), (scene.other, second, vertical)]
    for g, box, vertical in boxes:
        for cx, cy, r in _place_group(rng, g, box, vertical, side):
            _draw_shape(draw, g.shape, cx, cy, r, COLOURS[g.colour][5])
    small = canvas.resize((image_size, image_size), Image.BOX)
    return np.asarray(small, dtype=np.uint8).transpose(2, 0, 1)


# -------------------------------------------------------------------------------------------------- main


def generate_split(
    split: str, n: int, seed: int, image_size: int
) -> tuple[dict[str, list[str]], np.ndarray, list[Scene]]:
    """n triplets of one split: preprocessed text per language, images [n,3,S,S], scenes."""
    rng = random.Random(f"ikd-toy-{seed}-{split}")
    texts: dict[str, list[str]] = {lang: [] for lang in LANGS}
    images = np.empty((n, 3, image_size, image_size), dtype=np.uint8)
    scenes = []
    cache: dict[tuple[str, str], str] = {}
    for i in range(n):
        scene = sample_scene(rng)
        scenes.append(scene)
        for lang, raw in captions(scene).items():
            key = (raw, lang)
            if key not in cache:
                cache[key] = preprocess(raw, lang)
            texts[lang].append(cache[key])
        images[i] = render(scene, image_size, rng)
    return texts, images, scenes


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def prepare_toy(
    out_dir: str | Path, seed: int = 1, n_train: int = 3000, n_val: int = 200, n_test: int = 200, image_size: int = 64
) -> dict[str, Any]:
    """Write the toy data set (train/val/test, all with images) into out_dir; returns the manifest.

    Byte-for-byte reproducible for a seed; files already holding the right bytes are left untouched.
    """
    out_dir = Path(out_dir)
    prepared = PreparedData.at(out_dir)
    check_image_size(image_size)
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    for split, n in sizes.items():
        if n < 1:
            raise IkdError(f"--{split} {n}: every split needs at least one triplet")
    if out_dir.exists() and not out_dir.is_dir():
        raise IkdError(f"--out {out_dir}: exists and is not a folder")
    entries: dict[str, Any] = {}
    with Staging() as stage:
        for split, n in sizes.items():
            texts, images, _ = generate_split(split, n, seed, image_size)
            langs = {}
            for lang in LANGS:
                rel = f"text/{split}.{lang}"
                langs[lang] = {"path": rel, "sha256": stage.lines(out_dir / rel, texts[lang])}
            names = [f"toy-{split}-{i + 1:06d}.png" for i in range(n)]
            entries[split] = {
                "lines": n,
                "langs": langs,
                "images": {
                    "path": f"images/{split}.npy",
                    "names": f"images/{split}.names",
                    "count": n,
                    "size": image_size,
                    "sha256": stage.bytes(prepared.default_images(split), _npy_bytes(images)),
                    "names_sha256": stage.lines(prepared.default_names(split), names),
                },
                "dropped_lines": [],
            }
        if stage.changed:  # incomplete from the first rename until the new manifest is written
            manifest_path(out_dir).unlink(missing_ok=True)
    manifest = {
        "kind": "toy",
        "source": f"ikd toy world (seed {seed})",
        "seed": seed,
        "langs": list(LANGS),
        "image_size": image_size,
        "splits": entries,
    }
    write_manifest(out_dir, manifest)
    return manifest
