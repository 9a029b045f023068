"""The prepared-data schema: every path of a folder that `ikd prepare`, `ikd bpe` and `ikd degrade` write and
that training, evaluation and the probes read, in one typed place.

    DATA/manifest.json          what the folder holds (ikd.data.manifest); written last
    DATA/text/SPLIT.LANG        lowercased, normalised, Moses-tokenised text
    DATA/images/SPLIT.npy       uint8 [N, 3, S, S] (where the manifest says; images/SPLIT.npy by default)
    DATA/images/SPLIT.names     the image file of each line
    DATA/SRC-TGT/               bpe.codes, bpe.vocab.LANG, vocab.txt, bpe.json, SPLIT.bpe.LANG
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ikd.data.manifest import MANIFEST, load_manifest, read_manifest_or_none

BPE_STATE = "bpe.json"


@dataclass(frozen=True)
class PairFolder:
    """DATA/SRC-TGT: the joint BPE of one language pair."""

    root: Path
    src: str
    tgt: str

    @property
    def codes(self) -> Path:
        return self.root / "bpe.codes"

    @property
    def vocab(self) -> Path:
        return self.root / "vocab.txt"

    @property
    def state(self) -> Path:
        """bpe.json: what the BPE step read and wrote (its staleness check, the glossary)."""
        return self.root / BPE_STATE

    def bpe_vocab(self, lang: str) -> Path:
        return self.root / f"bpe.vocab.{lang}"

    def bpe(self, split: str, lang: str) -> Path:
        return self.root / f"{split}.bpe.{lang}"


@dataclass(frozen=True)
class PreparedData:
    """A prepared data folder. Paths only: nothing is read until a method that says so is called."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike) -> PreparedData:
        return cls(Path(root))

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def manifest(self) -> dict[str, Any]:
        """The manifest (IkdError when the folder was never completely prepared)."""
        return load_manifest(self.root)

    def text(self, split: str, lang: str) -> Path:
        return self.root / "text" / f"{split}.{lang}"

    def default_images(self, split: str) -> Path:
        return self.root / "images" / f"{split}.npy"

    def default_names(self, split: str) -> Path:
        return self.root / "images" / f"{split}.names"

    def images(self, split: str) -> Path | None:
        """The split's image array where the manifest says (relative to DATA or absolute); images/SPLIT.npy
        when there is no manifest; None when the manifest lists no images for the split."""
        manifest = read_manifest_or_none(self.root)
        if manifest is None:
            return self.default_images(split)
        entry = (manifest["splits"].get(split) or {}).get("images")
        if not entry or not entry.get("path"):
            return None
        return self.resolve(entry["path"])

    def has_images(self, split: str) -> bool:
        path = self.images(split)
        return path is not None and path.is_file()

    def dropped_lines(self, split: str) -> list:
        """[line, image] pairs `--skip-missing-images` removed from the split (empty when none)."""
        manifest = read_manifest_or_none(self.root) or {"splits": {}}
        return list((manifest["splits"].get(split) or {}).get("dropped_lines") or [])

    def resolve(self, path: str | os.PathLike) -> Path:
        """A path the manifest records: relative to DATA unless absolute."""
        path = Path(path)
        return path if path.is_absolute() else self.root / path

    def pair(self, src: str, tgt: str) -> PairFolder:
        return PairFolder(self.root / f"{src}-{tgt}", src, tgt)
