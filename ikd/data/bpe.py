"""Joint BPE with subword-nmt's Python API, following its learn-joint-bpe-and-vocab recipe.

Recipe (multi30k/dataset scripts/task1-bpe.sh): learn N merges on train SRC + TGT; segment each training
side with the codes and count its subword types (the per-language vocabulary); apply the codes to every
split of a language with that language's vocabulary as filter (no frequency threshold), so a merged unit
never seen in that language's training text is split back. Then fairseq's joined dictionary is built from
the BPE'd train SRC + TGT. With 10,000 merges this gives 9,712 entries for Multi30K EN-DE, 9,544 for EN-FR.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from subword_nmt import apply_bpe, learn_bpe

from ikd.data.manifest import load_manifest
from ikd.data.prepared import BPE_STATE, PairFolder, PreparedData
from ikd.data.vocab import Vocabulary
from ikd.errors import IkdError
from ikd.fileio import atomic_write_lines, atomic_write_text, read_lines, sha256_file

SEPARATOR = "@@"
DEFAULT_GLOSSARIES = ("[U]",)
STATE_FILE = BPE_STATE
CACHE_TYPES = 1_000_000  # segmented word types kept by BPE.apply (Multi30K train has about 20k per language)


def _words(line: str) -> list[str]:
    return line.split()


class BPE:
    """Apply learned subword-nmt codes to tokenised text (`"@@ "` continuation markers)."""

    def __init__(self, impl: apply_bpe.BPE, codes: str, vocab: set[str] | None, glossaries: tuple[str, ...]):
        self._impl = impl
        self.codes = codes
        self.vocab = vocab
        self.glossaries = glossaries
        self._words: dict[str, list[str]] = {}

    @classmethod
    def from_codes(
        cls,
        text: str,
        vocab: dict[str, int] | set[str] | None = None,
        glossaries: Sequence[str] = DEFAULT_GLOSSARIES,
    ) -> BPE:
        """Codes file content (+ optional per-language vocabulary filter) -> BPE.

        Glossary entries are literal strings (escaped here: subword-nmt treats them as regexes, and
        `[U]` as a regex would be the character class {U}); they are never split.
        """
        if not text.strip():
            raise IkdError("BPE codes are empty")
        words = set(vocab) if vocab is not None else None
        patterns = [re.escape(g) for g in glossaries]
        try:
            impl = apply_bpe.BPE(io.StringIO(text), separator=SEPARATOR, vocab=words, glossaries=patterns or None)
        except SystemExit:  # subword-nmt exits on malformed code lines
            raise IkdError("BPE codes are malformed (each line after the version must hold two symbols)") from None
        return cls(impl, text, words, tuple(glossaries))

    @classmethod
    def load(cls, pair_dir: str | Path, lang: str | None = None, glossaries: Sequence[str] = DEFAULT_GLOSSARIES) -> BPE:
        """Codes of a prepared pair folder (DATA/SRC-TGT), with `lang`'s vocabulary filter when given."""
        folder = PairFolder(Path(pair_dir), "", "")
        codes_path = folder.codes
        if not codes_path.is_file():
            raise IkdError(f"{codes_path}: not found (run `ikd bpe` first)")
        vocab = read_bpe_vocab(folder.bpe_vocab(lang)) if lang else None
        return cls.from_codes(codes_path.read_text(encoding="utf-8"), vocab, glossaries)

    def apply(self, tokens: list[str]) -> list[str]:
        """Tokens -> subword tokens; every non-final piece of a word ends in "@@"."""
        out: list[str] = []
        cache = self._words
        for token in tokens:
            pieces = cache.get(token)
            if pieces is None:  # subword-nmt runs its glossary regexes on every token; do it once per type
                if len(cache) >= CACHE_TYPES:  # bounded: a stream of new words must not grow it without end
                    cache.clear()
                pieces = cache[token] = self._impl.segment_tokens([token]) if token else []
            out.extend(pieces)
        return out

    def apply_line(self, line: str) -> str:
        return " ".join(self.apply(_words(line)))


def learn_codes(sentences: Iterable[str], merges: int, glossaries: Sequence[str] = DEFAULT_GLOSSARIES) -> str:
    """Learn `merges` BPE merge operations (subword-nmt, min frequency 2) -> codes file content.

    Glossary tokens are left out of the counts: they are never segmented, so they must not shape merges.
    """
    counts: Counter[str] = Counter()
    for line in sentences:
        counts.update(_words(line))
    for g in glossaries:
        counts.pop(g, None)
    if not any(len(w) > 1 for w in counts):
        raise IkdError("the training text has no word of two or more characters: nothing to learn BPE from")
    out = io.StringIO()
    # subword-nmt draws a progress bar and notes an early stop on stderr; the command reports what was learned
    with contextlib.redirect_stderr(io.StringIO()):
        learn_bpe.learn_bpe([f"{w} {c}" for w, c in counts.items()], out, merges, min_frequency=2, is_dict=True)
    return out.getvalue()


def count_merges(codes: str) -> int:
    """Merge operations in a codes file's content (its first line is the version header)."""
    return sum(1 for line in codes.splitlines() if line and not line.startswith("#version"))


def write_bpe_vocab(path: Path, counts: Counter[str]) -> None:
    """subword-nmt vocabulary format: "TOKEN COUNT" lines, most frequent first."""
    atomic_write_lines(path, [f"{w} {c}" for w, c in sorted(counts.items(), key=lambda x: (-x[1], x[0]))])


def read_bpe_vocab(path: Path) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for number, line in enumerate(read_lines(path), start=1):
        parts = line.split(" ")
        if len(parts) != 2 or not parts[1].isdigit():
            raise IkdError(f"{path}:{number}: expected 'TOKEN COUNT', got {line!r}")
        vocab[parts[0]] = int(parts[1])
    return vocab


@dataclass
class BpeResult:
    """What `learn_and_apply` produced: the joint vocabulary and tokens (including EOS) per split/lang."""

    pair_dir: Path
    vocab: Vocabulary
    tokens: dict[str, dict[str, int]] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    reused: bool = False


def _pair_splits(data_dir: Path, src: str, tgt: str) -> list[str]:
    manifest = load_manifest(data_dir)
    splits = [s for s, e in manifest["splits"].items() if src in e["langs"] and tgt in e["langs"]]
    if "train" not in splits:
        raise IkdError(f"{data_dir / 'manifest.json'}: no train split with both {src} and {tgt}")
    return splits


def _text_path(data_dir: Path, path: str) -> Path:
    """A manifest path: relative to DATA, or absolute."""
    p = Path(path)
    return p if p.is_absolute() else data_dir / p


def _inputs_fingerprint(data_dir: Path, splits: list[str], src: str, tgt: str) -> dict[str, str]:
    manifest = load_manifest(data_dir)
    return {f"{s}.{lang}": manifest["splits"][s]["langs"][lang]["sha256"] for s in splits for lang in (src, tgt)}


def check_current(data_dir: str | Path, src: str, tgt: str) -> dict:
    """Refuse a pair folder that `ikd bpe` did not finish (no bpe.json, written last) or that was made from
    other text than the data folder holds now (`ikd prepare` or `ikd degrade` rerun since). -> its bpe.json."""
    data_dir = Path(data_dir)
    pair = PreparedData.at(data_dir).pair(src, tgt)
    pair_dir, path = pair.root, pair.state
    again = f"run `ikd bpe --data {data_dir} --pair {src}-{tgt}` again"
    if not path.is_file():
        raise IkdError(f"{path}: not found: {pair_dir} is incomplete (an interrupted `ikd bpe`?); {again}")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        inputs = state["inputs"]
        splits = sorted({key.rsplit(".", 1)[0] for key in inputs})
        current = _inputs_fingerprint(data_dir, splits, src, tgt)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        current, inputs = None, True
    if current != inputs:
        raise IkdError(f"{pair_dir}: segmented from other text than {data_dir / 'text'} holds now; {again}")
    glossaries = state.get("glossaries", list(DEFAULT_GLOSSARIES))
    if not isinstance(glossaries, list) or not all(isinstance(g, str) and g for g in glossaries):
        raise IkdError(f"{path}: 'glossaries' must be a list of tokens; {again}")
    return state


def _state_matches(pair_dir: Path, state: dict) -> dict | None:
    path = pair_dir / STATE_FILE
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if {k: old.get(k) for k in state} != state:
        return None
    for name, digest in old.get("outputs", {}).items():
        out = pair_dir / name
        if not out.is_file() or sha256_file(out) != digest:
            return None
    return old


def learn_and_apply(
    data_dir: str | Path,
    src: str,
    tgt: str,
    merges: int = 10000,
    glossaries: Sequence[str] = DEFAULT_GLOSSARIES,
    padding_factor: int = 8,
) -> BpeResult:
    """Learn joint BPE on the train text of src + tgt (where the manifest says, normally DATA/text/train.LANG),
    apply it to every split of the pair and build the joint vocabulary.

    Writes DATA/SRC-TGT/{bpe.codes, bpe.vocab.SRC, bpe.vocab.TGT, SPLIT.bpe.LANG, vocab.txt, bpe.json}
    (bpe.json last). A re-run with the same inputs and options whose outputs are intact does nothing.
    """
    data_dir = Path(data_dir)
    if src == tgt:
        raise IkdError(f"--pair {src}-{tgt}: source and target languages must differ")
    if merges < 1:
        raise IkdError(f"--merges {merges}: must be positive")
    splits = _pair_splits(data_dir, src, tgt)
    pair = PreparedData.at(data_dir).pair(src, tgt)
    pair_dir = pair.root
    state = {
        "merges": merges,
        "glossaries": list(glossaries),
        "padding_factor": padding_factor,
        "inputs": _inputs_fingerprint(data_dir, splits, src, tgt),
    }
    old = _state_matches(pair_dir, state)
    if old is not None:
        return BpeResult(pair_dir, Vocabulary.load(pair.vocab), old["tokens"], old["lines"], reused=True)

    manifest = load_manifest(data_dir)
    text = {
        (s, lang): read_lines(_text_path(data_dir, manifest["splits"][s]["langs"][lang]["path"]))
        for s in splits
        for lang in (src, tgt)
    }
    codes = learn_codes(text["train", src] + text["train", tgt], merges, glossaries)
    plain = BPE.from_codes(codes, None, glossaries)
    lang_vocab = {
        lang: Counter(t for line in text["train", lang] for t in plain.apply_line(line).split()) for lang in (src, tgt)
    }

    pair_dir.mkdir(parents=True, exist_ok=True)
    pair.state.unlink(missing_ok=True)  # the folder is incomplete until bpe.json is rewritten
    atomic_write_text(pair.codes, codes)
    outputs = [pair.codes.name]
    for lang in (src, tgt):
        write_bpe_vocab(pair.bpe_vocab(lang), lang_vocab[lang])
        outputs.append(pair.bpe_vocab(lang).name)

    tokens: dict[str, dict[str, int]] = {}
    lines: dict[str, int] = {}
    segmented: dict[tuple[str, str], list[str]] = {}
    for lang in (src, tgt):
        bpe = BPE.from_codes(codes, lang_vocab[lang], glossaries)
        for s in splits:
            out_lines = [bpe.apply_line(line) for line in text[s, lang]]
            segmented[s, lang] = out_lines
            atomic_write_lines(pair.bpe(s, lang), out_lines)
            outputs.append(pair.bpe(s, lang).name)
            tokens.setdefault(s, {})[lang] = sum(len(x.split()) + 1 for x in out_lines)  # +1: EOS
            lines[s] = len(out_lines)

    vocab = Vocabulary.build(
        (line.split() for lang in (src, tgt) for line in segmented["train", lang]), padding_factor=padding_factor
    )
    vocab.save(pair.vocab)
    outputs.append(pair.vocab.name)
    state["outputs"] = {name: sha256_file(pair_dir / name) for name in outputs}
    state["tokens"] = tokens
    state["lines"] = lines
    state["vocab_size"] = len(vocab)
    atomic_write_text(pair.state, json.dumps(state, indent=2, ensure_ascii=False) + "\n")
    return BpeResult(pair_dir, vocab, tokens, lines)
