"""Entity masking from Flickr30K Entities annotations (Plummer et al., 2015), as the paper describes
(section 5.3) and the authors' script does not (it masks stanza NOUN tags, docs/differences.md).

An annotation file `Sentences/<image id>.txt` holds the image's captions, one per line, with phrases written
`[/EN#<entity id>/<type>[/<type>...] words ...]`. A Multi30K sentence is matched to the caption of its image
(through the split's image list) that shares the most tokens after the same preprocessing (lowercase,
punctuation normalisation, Moses tokenisation); the caption's phrase tokens are transferred to the sentence
through a token alignment (difflib), so small edits between caption and sentence do not break masking.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ikd.data.prepared import PreparedData
from ikd.errors import IkdError
from ikd.fileio import read_lines
from ikd.probes.degrade import kept_line_numbers, original_lines

ENTITY_TYPES = ("people", "clothing", "bodyparts", "animals", "vehicles", "instruments", "scene", "other", "notvisual")
DEFAULT_TYPES = tuple(t for t in ENTITY_TYPES if t != "notvisual")

# A matched caption must share at least this share of the sentence's tokens, else the line counts as unmatched.
MIN_OVERLAP = 0.5

_PHRASE = re.compile(r"\[/EN#(\d+)((?:/[^/\s\]]+)+)\s+([^\]]*)\]")


@dataclass
class Caption:
    tokens: list[str]
    masked: list[bool]  # per token: inside a phrase of a selected type


def parse_types(text: str | Iterable[str] | None) -> frozenset[str]:
    """`people,clothing` (or a list) -> a set of Flickr30K Entities types; unknown names are errors."""
    if text is None:
        return frozenset(DEFAULT_TYPES)
    items = text.split(",") if isinstance(text, str) else [t for part in text for t in part.split(",")]
    types = {t.strip().lower() for t in items if t.strip()}
    unknown = sorted(types - set(ENTITY_TYPES))
    if unknown:
        raise IkdError(f"--types: unknown entity type(s) {', '.join(unknown)} (known: {', '.join(ENTITY_TYPES)})")
    if not types:
        raise IkdError("--types: no entity type given")
    return frozenset(types)


def parse_caption(line: str, types: frozenset[str], tokenize: Callable[[str], list[str]], span: str = "all") -> Caption:
    """Split an annotated caption into tokens, flagging those of phrases with a selected type.

    Each piece (phrase or text between phrases) is tokenised on its own; phrases end and start at spaces, so
    this equals tokenising the whole caption. span="last" flags only a phrase's last token (its head noun,
    for English noun phrases), span="all" every token of the phrase."""
    tokens: list[str] = []
    masked: list[bool] = []
    pos = 0
    for match in _PHRASE.finditer(line):
        before = tokenize(line[pos : match.start()])
        tokens += before
        masked += [False] * len(before)
        phrase_types = {t.lower() for t in match.group(2).split("/") if t}
        words = tokenize(match.group(3))
        hit = bool(phrase_types & types)
        if span == "last":
            flags = [hit and i == len(words) - 1 for i in range(len(words))]
        else:
            flags = [hit] * len(words)
        tokens += words
        masked += flags
        pos = match.end()
    rest = tokenize(line[pos:])
    tokens += rest
    masked += [False] * len(rest)
    return Caption(tokens, masked)


def image_id(name: str) -> str:
    """`1000092795.jpg` -> `1000092795` (the Entities file stem); COCO names (`X.jpg#123`) lose the `#` part."""
    base = Path(name.split("#", 1)[0]).name
    return base.rsplit(".", 1)[0] if "." in base else base


def overlap(a: Sequence[str], b: Sequence[str]) -> int:
    return sum(block.size for block in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks())


def transfer(sentence: Sequence[str], caption: Caption) -> list[int]:
    """Positions of `sentence` aligned to flagged caption tokens. Equal runs copy the flags; a replaced run of
    equal length copies them one to one; an unequal replaced run is masked when all its caption tokens are;
    sentence tokens missing from the caption are masked when the caption tokens on both sides are (inside a
    phrase)."""
    flags = caption.masked
    out: list[int] = []
    matcher = difflib.SequenceMatcher(None, list(sentence), caption.tokens, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal" or (op == "replace" and i2 - i1 == j2 - j1):
            out += [i1 + k for k in range(i2 - i1) if flags[j1 + k]]
        elif op == "replace":
            if all(flags[j1:j2]):
                out += range(i1, i2)
        elif op == "delete":  # sentence tokens the caption lacks
            if 0 < j1 < len(flags) and flags[j1 - 1] and flags[j1]:
                out += range(i1, i2)
    return out


@dataclass
class EntityMasker:
    """Masker for one split or file: line i belongs to image `image_names[i]`."""

    sentences_dir: Path
    image_names: Sequence[str]
    types: frozenset[str]
    tokenize: Callable[[str], list[str]]
    span: str = "all"
    what: str = "input"
    unmatched: list[int] = field(default_factory=list)  # 1-based lines with no annotation or no good caption
    _cache: dict[str, list[Caption]] = field(default_factory=dict)

    def captions(self, image: str) -> list[Caption] | None:
        if image not in self._cache:
            path = self.sentences_dir / f"{image}.txt"
            if not path.is_file():
                return None
            self._cache[image] = [
                parse_caption(line, self.types, self.tokenize, self.span)
                for line in read_lines(path, allow_empty=True)
                if line.strip()
            ]
        return self._cache[image]

    def __call__(self, index: int, tokens: list[str]) -> list[int]:
        if index >= len(self.image_names):
            raise IkdError(
                f"{self.what}: line {index + 1} has no image in the image list ({len(self.image_names)} names)"
            )
        captions = self.captions(image_id(self.image_names[index]))
        if not captions or not tokens:
            self.unmatched.append(index + 1)
            return []
        scored = [(overlap(tokens, c.tokens), -abs(len(c.tokens) - len(tokens)), k) for k, c in enumerate(captions)]
        best_overlap, _, best = max(scored)
        if best_overlap < MIN_OVERLAP * len(tokens):
            self.unmatched.append(index + 1)
            return []
        return transfer(tokens, captions[best])


def find_sentences_dir(entities: str | os.PathLike) -> Path:
    """The folder of `<image id>.txt` files: ENTITIES/Sentences, or ENTITIES itself if it holds .txt files."""
    root = Path(entities)
    if (root / "Sentences").is_dir():
        return root / "Sentences"
    if root.is_dir() and any(root.glob("*.txt")):
        return root
    raise IkdError(f"--entities {root}: expected a Flickr30K Entities folder with Sentences/<image id>.txt files")


def default_tokenizer(lang: str = "en") -> Callable[[str], list[str]]:
    """The data preparation's own preprocessing (lowercase, normalise, Moses-tokenise), split into tokens."""
    from ikd.data.text import preprocess

    @functools.lru_cache(maxsize=1 << 18)  # caption pieces repeat a lot ("in", "a", ".")
    def cached(text: str) -> tuple[str, ...]:
        return tuple(preprocess(text, lang).split())

    def tokenize(text: str) -> list[str]:
        text = text.strip()
        return list(cached(text)) if text else []

    return tokenize


def read_image_list(path: str | os.PathLike) -> list[str]:
    return [line.strip() for line in read_lines(path)]


class CheckedMasker:
    """Runs `check` after the last line, so unmatched lines fail before anything is renamed into place."""

    def __init__(self, masker, n_lines: int, check) -> None:
        self.masker, self.n_lines, self.check = masker, n_lines, check

    def __call__(self, index: int, tokens: list[str]) -> list[int]:
        hits = self.masker(index, tokens)
        if index == self.n_lines - 1:
            self.check()
        return hits


def split_image_names(data: Path, split: str, info: dict, image_list: Path | None, source: str | None) -> list[str]:
    """Image name per kept line of a split: --image-list DIR/SPLIT.{names,txt}, else DATA/images/SPLIT.names,
    else the Multi30K image list the preparation read (manifest image_list, under a local source folder)."""
    candidates = []
    if image_list is not None:
        candidates = [image_list / f"{split}.names", image_list / f"{split}.txt"]
    else:
        images = info.get("images") or {}
        prepared = PreparedData.at(data)
        candidates.append(prepared.resolve(images["names"]) if images.get("names") else prepared.default_names(split))
        listed = (info.get("image_list") or {}).get("path")
        if listed and source and Path(source).is_dir():
            candidates.append(Path(source) / listed)
    for path in candidates:
        if path.is_file():
            names = read_image_list(path)
            if len(names) == original_lines(info) != int(info["lines"]):  # a full list; skip the dropped lines
                names = [names[i] for i in kept_line_numbers(info)]
            return names
    where = f"--image-list {image_list}: no {split}.names or {split}.txt" if image_list else f"no {candidates[0]}"
    raise IkdError(
        f"split '{split}' has no image list ({where}); give --image-list DIR with {split}.txt "
        "(e.g. Multi30K's image_splits folder)"
    )
