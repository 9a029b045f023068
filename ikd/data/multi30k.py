"""`ikd prepare multi30k`: Multi30K task-1 text (and optionally Flickr30K images) -> prepared data folder.

Source: a folder laid out like multi30k/dataset's data/task1 (tok/, raw/, image_splits/), or that
repository's public files, downloaded when the source is a URL or omitted.

Order of work, so that nothing is half-written: (1) read and check every split's text and image list,
(2) check every image exists, (3) decode images and write every output to temporary files, renamed only when
all succeeded, (4) write manifest.json last. A re-run whose inputs and outputs match the manifest does not
decode images again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ikd.data import images as img
from ikd.data.manifest import Staging, file_matches, manifest_path, read_manifest_or_none, write_manifest
from ikd.data.multi30k_source import (
    KNOWN_ABSENT,
    LANGS,
    SPLITS,
    TOK_SUFFIX,
    TRAINING_SPLITS,
    locate_source,
)
from ikd.data.prepared import PreparedData
from ikd.data.text import preprocess
from ikd.errors import IkdError
from ikd.fileio import read_lines, sha256_file


def parse_pairs(spec: str) -> list[tuple[str, str]]:
    """'en-de,en-fr' -> [('en','de'), ('en','fr')]."""
    pairs = []
    for item in (p.strip() for p in spec.split(",")):
        parts = item.split("-")
        if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
            raise IkdError(f"--pairs: {item!r} is not a language pair like en-de")
        for lang in parts:
            if lang not in LANGS:
                raise IkdError(f"--pairs: unknown language {lang!r} in {item!r} (Multi30K has {', '.join(LANGS)})")
        pairs.append((parts[0], parts[1]))
    if not pairs:
        raise IkdError("--pairs: no language pair given")
    return pairs


def pair_languages(pairs: list[tuple[str, str]]) -> list[str]:
    return list(dict.fromkeys(lang for pair in pairs for lang in pair))


# -------------------------------------------------------------------------------------------------- text


@dataclass
class SplitInput:
    """One split as read from the source, checked but not yet written."""

    name: str
    langs: dict[str, list[str]]
    sources: dict[str, dict[str, str]]
    names: list[str] | None = None
    names_source: dict[str, str] | None = None
    dropped: list[tuple[int, str]] = field(default_factory=list)

    @property
    def lines(self) -> int:
        return len(next(iter(self.langs.values())))


def _read_language(src_dir: Path, split: str, lang: str) -> tuple[list[str], dict[str, str]] | None:
    tok = src_dir / "tok" / f"{split}.{TOK_SUFFIX}.{lang}"
    if tok.is_file():
        return read_lines(tok), {"source": f"tok/{tok.name}", "source_sha256": sha256_file(tok)}
    for raw in (src_dir / "raw" / f"{split}.{lang}.gz", src_dir / "raw" / f"{split}.{lang}"):
        if raw.is_file():
            lines = [preprocess(line, lang) for line in read_lines(raw)]
            return lines, {"source": f"raw/{raw.name}", "source_sha256": sha256_file(raw)}
    return None


def read_split(src_dir: Path, split: str, langs: list[str]) -> SplitInput | None:
    """Read and check one split: every language present (or known absent), equal line counts, image list.
    None for a split that, without its known-absent languages, has fewer than two (test 2017 for en-cs)."""
    texts: dict[str, list[str]] = {}
    sources: dict[str, dict[str, str]] = {}
    for lang in langs:
        got = _read_language(src_dir, split, lang)
        if got is None:
            if (split, lang) in KNOWN_ABSENT:
                continue
            raise IkdError(
                f"{src_dir / 'tok' / f'{split}.{TOK_SUFFIX}.{lang}'}: not found (nor raw/{split}.{lang}.gz): "
                f"split {split} has no {lang} text"
            )
        texts[lang], sources[lang] = got
    if len(texts) < 2 and any((split, lang) in KNOWN_ABSENT for lang in langs):
        return None
    if len(texts) < 2:
        raise IkdError(f"{src_dir}: split {split} has text in fewer than two of the languages {', '.join(langs)}")
    first = next(iter(texts))
    for lang, lines in texts.items():
        _check_count(
            src_dir / sources[first]["source"], len(texts[first]), src_dir / sources[lang]["source"], len(lines)
        )
    entry = SplitInput(split, texts, sources)
    list_dir = src_dir / "image_splits"
    if list_dir.is_dir():
        list_path = list_dir / f"{split}.txt"
        if not list_path.is_file():
            raise IkdError(f"{list_path}: image list of split {split} not found")
        entry.names = [img.strip_name(n) for n in read_lines(list_path)]
        entry.names_source = {"path": f"image_splits/{list_path.name}", "sha256": sha256_file(list_path)}
        _check_count(src_dir / sources[first]["source"], entry.lines, list_path, len(entry.names))
    return entry


def _check_count(path_a: Path, count_a: int, path_b: Path, count_b: int) -> None:
    if count_a != count_b:
        raise IkdError(
            f"{path_b}: {count_b} lines, but {path_a} has {count_a}; line {min(count_a, count_b) + 1} has no "
            "counterpart (the files of a split must align line by line)"
        )


# ------------------------------------------------------------------------------------------------ images


def _image_fingerprint(folder: Path, paths: list[Path], image_size: int, skip: bool) -> str:
    key = json.dumps([str(folder.resolve()), image_size, skip, img.files_fingerprint(paths)])
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class ImagePlan:
    """What to do for one split's images: reuse the previous outputs, decode, or nothing."""

    action: str  # "reuse" | "decode" | "none"
    paths: list[Path] = field(default_factory=list)
    missing: list[tuple[int, str, str]] = field(default_factory=list)
    fingerprint: str = ""
    note: str = ""
    old: dict[str, Any] | None = None


def plan_images(
    data_dir: Path,
    split: SplitInput,
    images_dir: Path | None,
    image_size: int,
    skip_missing: bool,
    old_entry: dict[str, Any] | None,
) -> ImagePlan:
    old_images = (old_entry or {}).get("images")
    old_ok = bool(
        old_images
        and split.names_source
        and old_images.get("list_sha256") == split.names_source["sha256"]
        and (images_dir is None or old_images.get("size") == image_size)
        and file_matches(data_dir, old_images.get("path"), old_images.get("sha256"))
        and file_matches(data_dir, old_images.get("names"), old_images.get("names_sha256"))
    )
    if images_dir is None:
        if old_ok:  # a text-only re-run keeps earlier decoded images that still match their list
            return ImagePlan("reuse", old=old_entry, fingerprint=old_images.get("fingerprint", ""))
        return ImagePlan("none", note="no --images folder given")
    if split.names is None:
        raise IkdError(f"{split.name}: --images given, but the source has no image_splits/ folder")
    paths = [images_dir / n for n in split.names]
    exists = np.fromiter((p.is_file() for p in paths), dtype=bool, count=len(paths))
    if not exists.any():
        if split.name in TRAINING_SPLITS:  # a wrong --images folder must not give a folder without images
            raise IkdError(
                f"--images {images_dir}: none of the {len(paths)} images of split '{split.name}' is there "
                f"(the first is {split.names[0]}, listed in {split.names_source['path']}); is it the Flickr30K "
                "image folder?"
            )
        if old_ok:  # keep what an earlier run decoded (from another folder) rather than delete it
            return ImagePlan("reuse", old=old_entry, fingerprint=old_images.get("fingerprint", ""))
        return ImagePlan("none", note=f"none of the {len(paths)} images of this split is in {images_dir}")
    fingerprint = _image_fingerprint(images_dir, paths, image_size, skip_missing)
    if old_ok and old_images.get("fingerprint") == fingerprint:
        return ImagePlan("reuse", old=old_entry, fingerprint=fingerprint)
    missing = [(int(i) + 1, split.names[i], "missing") for i in np.flatnonzero(~exists)]
    if missing and not skip_missing:
        raise IkdError(img.format_failures(f"{images_dir} (list {split.names_source['path']})", missing))
    if missing and split.name not in TRAINING_SPLITS:
        return ImagePlan("none", note=_test_split_note(len(missing), len(paths)))
    return ImagePlan("decode", paths=paths, missing=missing, fingerprint=fingerprint)


def _test_split_note(failed: int, total: int) -> str:
    return (
        f"{failed} of {total} images missing or unreadable (--skip-missing-images): a test split keeps every line "
        "(its scores stay comparable), without images"
    )


def _decode_split(
    split: SplitInput, plan: ImagePlan, final_tmp: Path, image_size: int, skip_missing: bool, workers: int, listing: str
) -> str | None:
    """Decode a split's images into final_tmp; with skip, drop failing lines from a training split's text.
    -> None, or the note of a test split that keeps all its lines and gets no images."""
    missing_rows = {line - 1 for line, _, _ in plan.missing}
    rows = [i for i in range(len(plan.paths)) if i not in missing_rows]
    fd, raw_name = tempfile.mkstemp(prefix=f".{split.name}.decode.", suffix=".npy", dir=final_tmp.parent)
    os.close(fd)
    raw = Path(raw_name)
    try:
        failed = img.decode_images(raw, [plan.paths[i] for i in rows], image_size, workers, desc=split.name)
        failures = sorted(plan.missing + [(rows[r] + 1, split.names[rows[r]], why) for r, why in failed])
        if failures and not skip_missing:
            raise IkdError(img.format_failures(listing, failures))
        if failures and split.name not in TRAINING_SPLITS:
            return _test_split_note(len(failures), len(plan.paths))
        if failures:
            bad = {r for r, _ in failed}
            keep = np.array([r for r in range(len(rows)) if r not in bad], dtype=np.int64)
            img.compact_rows(raw, final_tmp, keep)
            drop_rows = {line - 1 for line, _, _ in failures}
            split.dropped = [(line, name) for line, name, _ in failures]
            split.langs = {
                lang: [t for i, t in enumerate(lines) if i not in drop_rows] for lang, lines in split.langs.items()
            }
            split.names = [n for i, n in enumerate(split.names) if i not in drop_rows]
        else:
            os.replace(raw, final_tmp)
    finally:
        raw.unlink(missing_ok=True)
    return None


# -------------------------------------------------------------------------------------------------- main


def prepare_multi30k(
    out_dir: str | Path,
    source: str | None = None,
    pairs: str = "en-de,en-fr",
    images_dir: str | Path | None = None,
    image_size: int = 224,
    skip_missing_images: bool = False,
    workers: int = 0,
    log: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """Prepare Multi30K into out_dir (layout in docs/architecture.md); returns the manifest."""
    out_dir = Path(out_dir)
    img.check_image_size(image_size)
    langs = pair_languages(parse_pairs(pairs))
    images_path = Path(images_dir).expanduser() if images_dir is not None else None
    if images_path is not None and not images_path.is_dir():
        raise IkdError(f"--images {images_dir}: no such folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise IkdError(f"--out {out_dir}: exists and is not a folder")
    src_dir, source_desc = locate_source(source, out_dir, langs)

    splits = [s for s in (read_split(src_dir, name, langs) for name in SPLITS) if s is not None]
    old = read_manifest_or_none(out_dir)
    old_splits = (old or {}).get("splits", {}) if old and old.get("kind") == "multi30k" else {}
    plans = {
        s.name: plan_images(out_dir, s, images_path, image_size, skip_missing_images, old_splits.get(s.name))
        for s in splits
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    entries: dict[str, dict[str, Any]] = {}
    with Staging() as stage:
        for split in splits:
            plan = plans[split.name]
            images_entry = None
            if plan.action == "reuse":
                images_entry = plan.old["images"]
                split.dropped = [tuple(x) for x in plan.old.get("dropped_lines", [])]
                drop_rows = {line - 1 for line, _ in split.dropped}
                split.langs = {k: [t for i, t in enumerate(v) if i not in drop_rows] for k, v in split.langs.items()}
                log(f"{split.name}: images unchanged, reusing {images_entry['path']}")
            elif plan.action == "decode":
                npy = PreparedData.at(out_dir).default_images(split.name)
                tmp = stage.path(npy)
                listing = f"{images_path} (list {split.names_source['path']})"
                note = _decode_split(split, plan, tmp, image_size, skip_missing_images, workers, listing)
                if note is not None:  # the staged array goes with the other stale images below
                    plan.note = note
                    log(f"{split.name}: {note}")
                else:
                    names_rel = f"images/{split.name}.names"
                    images_entry = {
                        "path": f"images/{split.name}.npy",
                        "names": names_rel,
                        "count": len(split.names),
                        "size": image_size,
                        "sha256": sha256_file(tmp),
                        "names_sha256": stage.lines(out_dir / names_rel, split.names),
                        "list_sha256": split.names_source["sha256"],
                        "fingerprint": plan.fingerprint,
                        "folder": str(images_path.resolve()),
                    }
                    log(f"{split.name}: {len(split.names)} images decoded, {len(split.dropped)} lines dropped")
            langs_entry = {}
            for lang, lines in split.langs.items():
                rel = f"text/{split.name}.{lang}"
                digest = stage.lines(out_dir / rel, lines)
                langs_entry[lang] = {"path": rel, "sha256": digest, **split.sources[lang]}
            entries[split.name] = {
                "lines": split.lines,
                "langs": langs_entry,
                "images": images_entry,
                "image_list": split.names_source,
                "dropped_lines": [list(x) for x in split.dropped],
            }
            if images_entry is None:
                entries[split.name]["images_note"] = plan.note
        # All outputs are staged; an error before here left the previous folder untouched. The staged files
        # are renamed when this block exits; the folder counts as incomplete until the new manifest exists.
        if stage.changed:
            manifest_path(out_dir).unlink(missing_ok=True)
    # every staged file is in place now; remove images a previous run left for splits that have none now
    for name, entry in entries.items():
        if entry["images"] is None:
            for path in (PreparedData.at(out_dir).default_images(name), PreparedData.at(out_dir).default_names(name)):
                path.unlink(missing_ok=True)
    sizes = {e["images"]["size"] for e in entries.values() if e["images"]}
    manifest = {
        "kind": "multi30k",
        "source": source_desc,
        "langs": langs,
        "image_size": sizes.pop() if sizes else None,
        "skip_missing_images": skip_missing_images,
        "splits": entries,
    }
    write_manifest(out_dir, manifest)
    return manifest
