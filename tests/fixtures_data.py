"""Data fixtures (owner: data work): prepared toy data sets for tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from ikd.data.manifest import write_manifest
from ikd.fileio import atomic_write_lines, sha256_file


def make_prepared(root: Path, splits: dict[str, dict[str, list[str]]]) -> Path:
    """A minimal prepared folder (text + manifest) from in-memory lines."""
    entries = {}
    for split, langs in splits.items():
        lang_entries = {}
        for lang, lines in langs.items():
            rel = f"text/{split}.{lang}"
            atomic_write_lines(root / rel, lines)
            lang_entries[lang] = {"path": rel, "sha256": sha256_file(root / rel)}
        n = len(next(iter(langs.values())))
        entries[split] = {"lines": n, "langs": lang_entries, "images": None, "dropped_lines": []}
    write_manifest(root, {"kind": "test", "source": "test", "image_size": None, "splits": entries})
    return root


__all__ = ["toy_data"]  # what conftest star-imports; make_prepared is imported by name

TOY_SIZES = {"n_train": 300, "n_val": 40, "n_test": 40}
TOY_IMAGE_SIZE = 64
TOY_MERGES = 150


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small toy world (300 train / 40 val / 40 test triplets, 64 px images, seed 1), prepared and BPE'd
    for en-de (150 merges, so some words are split): DATA/manifest.json, DATA/text, DATA/images, DATA/en-de/.
    Shared by the whole session: copy it (shutil.copytree) before changing anything."""
    from ikd.data.bpe import learn_and_apply
    from ikd.data.toy import prepare_toy

    out = tmp_path_factory.mktemp("toy_data") / "data"
    prepare_toy(out, seed=1, image_size=TOY_IMAGE_SIZE, **TOY_SIZES)
    learn_and_apply(out, "en", "de", merges=TOY_MERGES)
    return out
