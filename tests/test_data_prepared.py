"""PreparedData: the one description of a prepared folder's paths, as the writers lay it out."""

from __future__ import annotations

import json
from pathlib import Path

from ikd.data.prepared import PreparedData


def test_paths_of_the_toy_folder_exist_where_the_schema_says(toy_data: Path) -> None:
    data = PreparedData.at(toy_data)
    pair = data.pair("en", "de")
    assert data.manifest_path.is_file() and data.manifest()["splits"]["train"]["lines"] == 300
    for split in ("train", "val", "test"):
        assert data.text(split, "en").is_file() and data.text(split, "de").is_file()
        assert data.images(split) == toy_data / "images" / f"{split}.npy" and data.has_images(split)
        assert data.default_names(split).is_file()
        assert pair.bpe(split, "en").is_file() and pair.bpe(split, "de").is_file()
    for path in (pair.codes, pair.vocab, pair.state, pair.bpe_vocab("en"), pair.bpe_vocab("de")):
        assert path.is_file(), path
    assert data.dropped_lines("train") == []


def test_images_and_dropped_lines_follow_the_manifest(tmp_path: Path) -> None:
    data = PreparedData.at(tmp_path)
    assert data.images("train") == tmp_path / "images" / "train.npy"  # no manifest: the default place
    manifest = {
        "splits": {
            "train": {"images": {"path": "/elsewhere/train.npy"}, "dropped_lines": [[3, "a.jpg"]]},
            "test": {"images": None},
            "val": {"images": {"path": "pics/val.npy"}},
        }
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert data.images("train") == Path("/elsewhere/train.npy")
    assert data.images("val") == tmp_path / "pics" / "val.npy" and not data.has_images("val")
    assert data.images("test") is None and not data.has_images("test")
    assert data.dropped_lines("train") == [[3, "a.jpg"]] and data.dropped_lines("val") == []
