"""Source degradation probes (paper section 5.3, Table 6): selected source tokens become a mask token.

A masker maps (line index, tokens) to the token positions to mask: `ColourMasker` (a word list),
`PositionMasker` (a per-line positions file) and `ikd.probes.entities.EntityMasker` (Flickr30K Entities
phrases). `degrade_lines` applies a masker to the lines of one file; `degrade_folder` writes a complete new
prepared data folder whose every split has its source side masked, ready for `ikd bpe` and `ikd train`.

The authors' scripts (docs/differences.md) wrote fairseq's `<unk>` and matched the 147 CSS3 colour names,
and tagged entities by part of speech; here the mask token is configurable (default `[U]`, the paper's),
the colour list is a list of colour terms, and entities come from annotations or positions files.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ikd.data.manifest import write_manifest
from ikd.data.prepared import PreparedData
from ikd.errors import IkdError
from ikd.fileio import atomic_write_lines, read_lines, sha256_file

MASK = "[U]"

# The basic colour terms of English (Berlin and Kay's eleven, with both spellings of grey), the common
# named shades and hair colours, and the "-ish" forms. Like the authors' CSS3 list and the 17-word list of
# Li et al. (2022), a token is masked whatever its sense in context ("orange", "gold", "tan" included).
# Left out on purpose: names that in image captions mostly denote the object, not its colour (cream, olive,
# lime, peach, plum, salmon, coral, chocolate, copper, bronze), and lightness words (dark, light, pale, bright).
BUILTIN_COLOURS = frozenset(
    """
    black white red green yellow blue brown orange pink purple gray grey
    tan beige khaki gold golden silver maroon burgundy crimson scarlet navy turquoise teal aqua cyan
    indigo violet lavender magenta fuchsia mauve auburn blond blonde
    reddish bluish blueish greenish yellowish brownish pinkish purplish grayish greyish whitish blackish
    """.split()
)

# The order in which the splits of Multi30K are concatenated in the probing positions files of
# the fairseq-mmt-probing lists (train + val + test_2016 + test_2017 + mscoco); toy folders: train, val, test.
SPLIT_ORDER = ("train", "val", "valid", "test", "test_2016_flickr", "test_2017_flickr", "test_2017_mscoco")


class Masker(Protocol):
    def __call__(self, index: int, tokens: list[str]) -> Iterable[int]:
        """Positions (0-based) of the tokens of line `index` (0-based within the file or split) to mask."""
        ...


@dataclass
class MaskCount:
    """Masked tokens out of all tokens of a file or split."""

    masked: int = 0
    tokens: int = 0
    lines: int = 0
    lines_masked: int = 0  # lines with at least one masked token

    @property
    def percent(self) -> float:
        return 100.0 * self.masked / self.tokens if self.tokens else 0.0

    def add(self, other: MaskCount) -> MaskCount:
        return MaskCount(
            self.masked + other.masked,
            self.tokens + other.tokens,
            self.lines + other.lines,
            self.lines_masked + other.lines_masked,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "masked": self.masked,
            "tokens": self.tokens,
            "percent": round(self.percent, 4),
            "lines": self.lines,
            "lines_masked": self.lines_masked,
        }


def check_mask_token(mask: str) -> str:
    """The mask must be one whitespace-free token so that it stays one token through tokenisation and BPE."""
    if not mask or any(c.isspace() for c in mask):
        raise IkdError(f"--mask {mask!r}: the mask token must be one non-empty token without whitespace")
    return mask


def load_word_list(path: str | os.PathLike) -> frozenset[str]:
    """One word per line (blank lines and lines starting with '#' ignored), lowercased."""
    words = set()
    for number, line in enumerate(read_lines(path, allow_empty=True), start=1):
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        if len(word.split()) != 1:
            raise IkdError(f"{path}:{number}: expected one word per line, got {word!r}")
        words.add(word.lower())
    if not words:
        raise IkdError(f"{path}: the word list is empty")
    return frozenset(words)


class ColourMasker:
    """Masks whole tokens found in a word list (case-insensitive)."""

    def __init__(self, words: Iterable[str]) -> None:
        self.words = frozenset(w.lower() for w in words)

    def __call__(self, index: int, tokens: list[str]) -> list[int]:
        return [i for i, token in enumerate(tokens) if token.lower() in self.words]


def read_positions(paths: Sequence[str | os.PathLike]) -> list[frozenset[int]]:
    """Per-line token positions (space-separated 0-based indices, or -1 for none); several files of the same
    length are united line by line (e.g. the `noun` and `nouns` files)."""
    if not paths:
        raise IkdError("no positions file given")
    merged: list[set[int]] | None = None
    first = None
    for path in paths:
        rows = []
        for number, line in enumerate(read_lines(path, allow_empty=True), start=1):
            row = set()
            for item in line.split():
                try:
                    value = int(item)
                except ValueError:
                    raise IkdError(f"{path}:{number}: {item!r} is not a token position (an integer or -1)") from None
                if value < -1:
                    raise IkdError(f"{path}:{number}: negative token position {value} (only -1 means none)")
                if value >= 0:
                    row.add(value)
            rows.append(row)
        if merged is None:
            merged, first = rows, path
        elif len(rows) != len(merged):
            raise IkdError(f"{path} has {len(rows)} lines but {first} has {len(merged)}: positions files must align")
        else:
            for target, row in zip(merged, rows):
                target |= row
    return [frozenset(row) for row in merged or []]


class PositionMasker:
    """Masks the positions listed for line `offset + line_numbers[index]` of a positions file.

    `line_numbers` are the 0-based original line numbers of the lines being masked (range(n) for a whole
    file; a prepared split with dropped lines skips them)."""

    def __init__(
        self, positions: list[frozenset[int]], offset: int, source: str, line_numbers: Sequence[int], what: str
    ) -> None:
        if offset < 0:
            raise IkdError(f"--offset {offset}: must be >= 0")
        needed = offset + (max(line_numbers) + 1 if line_numbers else 0)
        if needed > len(positions):
            raise IkdError(
                f"{source}: has {len(positions)} lines, too few for the {len(line_numbers)} lines of {what} "
                f"starting at line offset {offset} (needs {needed})"
            )
        self.positions = positions
        self.offset = offset
        self.source = source
        self.line_numbers = line_numbers
        self.what = what

    def __call__(self, index: int, tokens: list[str]) -> list[int]:
        number = self.offset + self.line_numbers[index]
        row = self.positions[number]
        if row and max(row) >= len(tokens):
            raise IkdError(
                f"{self.source}:{number + 1}: token position {max(row)} is beyond line {index + 1} "
                f"of {self.what}, which has {len(tokens)} tokens (wrong --offset or positions file?)"
            )
        return sorted(row)


def degrade_lines(lines: Sequence[str], masker: Masker, mask: str = MASK) -> tuple[list[str], MaskCount]:
    """Mask the lines of one file. Tokens are whitespace-separated (the prepared text is Moses-tokenised)."""
    check_mask_token(mask)
    out = []
    count = MaskCount()
    for index, line in enumerate(lines):
        tokens = line.split()
        hits = set(masker(index, tokens))
        for i in hits:
            tokens[i] = mask
        out.append(" ".join(tokens))
        count = count.add(MaskCount(len(hits), len(tokens), 1, int(bool(hits))))
    return out, count


def degrade_file(
    input_path: str | os.PathLike, output_path: str | os.PathLike, masker: Masker, mask: str = MASK
) -> MaskCount:
    lines = read_lines(input_path)
    masked, count = degrade_lines(lines, masker, mask)
    if Path(output_path).resolve() == Path(input_path).resolve():
        raise IkdError(f"--output {output_path}: must differ from the input (degrading never overwrites data)")
    atomic_write_lines(output_path, masked)
    return count


# ---------------------------------------------------------------------------------------------------------
# Prepared data folders


def read_manifest(data_dir: str | os.PathLike) -> dict[str, Any]:
    from ikd.data.manifest import load_manifest

    manifest = load_manifest(data_dir)
    if not manifest["splits"]:
        raise IkdError(f"{Path(data_dir) / 'manifest.json'}: the manifest lists no splits")
    return manifest


def ordered_splits(manifest: dict[str, Any]) -> list[str]:
    """The manifest's splits, the known ones in the order of the probing positions files, then the others."""
    splits = list(manifest["splits"])
    known = [s for s in SPLIT_ORDER if s in splits]
    return known + [s for s in splits if s not in known]


def split_offsets(manifest: dict[str, Any], n_positions: int, source: str) -> dict[str, int]:
    """Start line of each split in a positions file that concatenates all splits in `ordered_splits` order.
    Splits with dropped lines count their original lines (the dropped ones included)."""
    offsets, total = {}, 0
    for split in ordered_splits(manifest):
        offsets[split] = total
        total += original_lines(manifest["splits"][split])
    if total != n_positions:
        parts = " + ".join(f"{s} {original_lines(manifest['splits'][s])}" for s in ordered_splits(manifest))
        raise IkdError(
            f"{source} has {n_positions} lines but the data folder's splits add up to {total} ({parts}); "
            "a positions file for a whole folder must concatenate every split in this order "
            "(or degrade single files with --input/--output and --offset)"
        )
    return offsets


def _dropped(info: dict[str, Any]) -> list[int]:
    """0-based original line numbers of a split's dropped lines (the manifest lists [line, name] pairs or
    plain numbers, 1-based)."""
    out = []
    for item in info.get("dropped_lines") or []:
        number = item[0] if isinstance(item, list | tuple) else item
        out.append(int(number) - 1)
    return sorted(out)


def original_lines(info: dict[str, Any]) -> int:
    """Lines of the split before the preparation dropped any (e.g. for missing images)."""
    return int(info["lines"]) + len(_dropped(info))


def kept_line_numbers(info: dict[str, Any]) -> list[int]:
    """0-based original line numbers of the lines kept in a split."""
    skip = set(_dropped(info))
    return [i for i in range(original_lines(info)) if i not in skip]


def _relocate(data_dir: Path, out_dir: Path, path: str) -> tuple[str, Path]:
    """(the path string to store in the new manifest, where to write it now). Relative paths stay relative;
    absolute ones inside the old folder move to the new one."""
    p = Path(path)
    if not p.is_absolute():
        return path, out_dir / p
    try:
        rel = p.relative_to(data_dir.resolve())
    except ValueError:
        rel = Path(p.name)
    return str(out_dir.resolve() / rel), out_dir / rel


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # image arrays can be gigabytes; a hard link costs nothing and survives a moved source
    except OSError:
        shutil.copy2(src, dst)


def degrade_folder(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    lang: str,
    masker_for: Callable[[str, dict[str, Any], list[str]], Masker],
    mask: str,
    settings: dict[str, Any],
) -> dict[str, MaskCount]:
    """Write a new prepared data folder whose every split has its `lang` text masked.

    `masker_for(split, split_info, lines)` gives the masker of a split. Other languages are copied, images
    hard-linked (copied across file systems), the manifest updated (checksums, a `degrade` entry with the
    settings and counts). BPE files are not copied: the source changed, so `ikd bpe` must run on the result.
    The folder appears complete or not at all (written under a temporary name, then renamed).
    """
    check_mask_token(mask)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    manifest = read_manifest(data_dir)
    if out_dir.resolve() == data_dir.resolve():
        raise IkdError(f"--out {out_dir}: must differ from --data (degrading never overwrites data)")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise IkdError(f"--out {out_dir}: already exists and is not empty; choose another folder or remove it")
    for split, info in manifest["splits"].items():
        if lang not in (info.get("langs") or {}):
            have = ", ".join(info.get("langs") or {}) or "none"
            raise IkdError(f"{data_dir}/manifest.json: split '{split}' has no '{lang}' text (languages: {have})")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the data folder gets the usual permissions
    counts: dict[str, MaskCount] = {}
    try:
        from ikd.console import progress

        new = copy.deepcopy(manifest)
        for split in progress(ordered_splits(manifest), desc="splits", unit="split"):
            info = manifest["splits"][split]
            new_info = new["splits"][split]
            for text_lang, entry in info["langs"].items():
                src_path = PreparedData.at(data_dir).resolve(entry["path"])
                stored, _ = _relocate(data_dir, out_dir, entry["path"])
                _, dst = _relocate(data_dir, tmp, entry["path"])
                if text_lang == lang:
                    lines = read_lines(src_path)
                    if len(lines) != int(info["lines"]):
                        raise IkdError(
                            f"{src_path}: {len(lines)} lines, but the manifest says {info['lines']} for '{split}'"
                        )
                    masked, counts[split] = degrade_lines(lines, masker_for(split, info, lines), mask)
                    atomic_write_lines(dst, masked)
                else:
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src_path, dst)
                new_info["langs"][text_lang] = {**entry, "path": stored, "sha256": sha256_file(dst)}
            images = info.get("images")
            if images:
                for key in ("path", "names"):
                    if images.get(key):
                        stored, _ = _relocate(data_dir, out_dir, images[key])
                        _, dst = _relocate(data_dir, tmp, images[key])
                        _link_or_copy(PreparedData.at(data_dir).resolve(images[key]), dst)
                        new_info["images"][key] = stored
        total = MaskCount()
        for count in counts.values():
            total = total.add(count)
        entry = {
            **settings,
            "lang": lang,
            "mask": mask,
            "from": str(data_dir.resolve()),
            "from_manifest_sha256": sha256_file(data_dir / "manifest.json"),
            "counts": {split: count.to_dict() for split, count in counts.items()},
            "total": total.to_dict(),
        }
        previous = manifest.get("degrade") or []
        new["degrade"] = [*(previous if isinstance(previous, list) else [previous]), entry]
        write_manifest(tmp, new)
        if out_dir.exists():
            out_dir.rmdir()
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts
