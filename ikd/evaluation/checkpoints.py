"""Translate prepared splits with checkpoints and score them: what `ikd evaluate --checkpoint` does."""

from __future__ import annotations

import re
from pathlib import Path

from ikd.console import info, progress, progress_enabled, warn
from ikd.data.prepared import PreparedData
from ikd.data.vocab import Vocabulary
from ikd.errors import IkdError
from ikd.evaluation.runs import Scoring, score_runs
from ikd.fileio import atomic_write_lines, read_lines
from ikd.inference.loading import decoding_threads, load_for_inference
from ikd.inference.translator import SearchOptions, Translator

# Lines per chunk while a progress bar is shown: the bar moves once per chunk.
PROGRESS_CHUNK = 256


def unique_names(paths: list[Path]) -> list[str]:
    """Short display names: the file (or checkpoint folder/file) name, widened until unique."""
    names = [p.name for p in paths]
    depth = 1
    while len(set(names)) < len(names) and depth < 6:
        depth += 1
        names = [Path(*p.parts[-depth:]).as_posix() for p in paths]
    if len(set(names)) < len(names):  # the same file given twice: its name, numbered
        names = [f"{p.name} ({i + 1})" for i, p in enumerate(paths)]
    return names


def folder_name(name: str) -> str:
    """A system's display name as one safe folder name (letters, digits, '.', '_', '-')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "system"



def evaluate_checkpoints(
    checkpoints: list[Path],
    baselines: list[Path],
    data: Path | None,
    splits: list[str],
    save_hyps: Path | None,
    lang: str | None,
    scoring: Scoring,
    search: dict,
    batch_size: int,
    device: str,
    threads: int,
) -> dict:
    """Translate the BPE'd `splits` of the prepared folder `data` with every checkpoint (and baseline
    checkpoint), optionally save the hypotheses under `save_hyps`, and score them against the references:
    the report `ikd evaluate --checkpoint` prints."""

    if data is None or not splits:
        raise IkdError("--checkpoint needs --data DATA and at least one --split")
    if not data.is_dir():
        raise IkdError(f"{data}: prepared data folder not found")
    options = SearchOptions(nbest=1, **search)
    options.check()
    all_paths = [*checkpoints, *baselines]
    names = unique_names(all_paths)
    hyps: dict[tuple[int, str], list[str]] = {}
    pair = None
    for k, path in enumerate(all_paths):
        loaded = load_for_inference(path, device)
        this_pair = (loaded.src, loaded.tgt)
        if pair is not None and this_pair != pair:
            raise IkdError(
                f"{path}: translates {loaded.src}-{loaded.tgt}, but {all_paths[0]} translates {pair[0]}-{pair[1]}"
            )
        pair = this_pair
        prepared = PreparedData.at(data)
        pair_dir = prepared.pair(loaded.src, loaded.tgt).root
        vocab_file = prepared.pair(loaded.src, loaded.tgt).vocab
        if vocab_file.is_file() and Vocabulary.load(vocab_file).fingerprint() != loaded.vocab.fingerprint():
            raise IkdError(
                f"{path}: its vocabulary differs from {vocab_file}: the checkpoint was trained on other BPE "
                f"codes than {data}'s, so its BPE'd splits do not fit it"
            )
        translator = Translator(
            loaded,
            options,
            input_mode="bpe",
            batch_size=batch_size,
            warn=warn,
        )
        for split in splits:
            source = prepared.pair(loaded.src, loaded.tgt).bpe(split, loaded.src)
            if not source.is_file():
                found = sorted(f.name[: -len(f".bpe.{loaded.src}")] for f in pair_dir.glob(f"*.bpe.{loaded.src}"))
                known = f"; the prepared splits are {', '.join(found)}" if found else "; run `ikd bpe` first"
                raise IkdError(f"{source}: not found (split '{split}' not prepared{known})")
            lines = read_lines(source, allow_empty=True)
            before = translator.stats.seconds
            chunk = PROGRESS_CHUNK if progress_enabled() else max(len(lines), 1)
            found: list[str] = []
            with decoding_threads(threads, loaded.device), progress(
                total=len(lines), desc=f"{split} ({names[k]})", unit="line"
            ) as bar:

                def keep(text: str, found: list[str] = found, bar=bar) -> None:
                    found.extend(text.split("\n")[:-1])
                    bar.update(text.count("\n"))

                translator.stream(lines, keep, chunk)
            hyps[k, split] = found
            took = translator.stats.seconds - before
            info(f"translated {split} ({len(lines)} sentences) with {names[k]} in {took:.1f} s on {loaded.device}")
            if save_hyps is not None:
                folder = save_hyps if len(all_paths) == 1 else save_hyps / folder_name(names[k])
                atomic_write_lines(folder / f"{split}.{loaded.tgt}", hyps[k, split])
    src, tgt = pair
    scoring.meteor.lang = lang or tgt
    report: dict = {
        "checkpoints": [str(p) for p in checkpoints],
        "baseline_checkpoints": [str(p) for p in baselines],
        "search": {
            "beam": options.beam,
            "lenpen": options.lenpen,
            "max_len_a": options.max_len_a,
            "max_len_b": options.max_len_b,
        },
        "splits": {},
    }
    for split in splits:
        ref = PreparedData.at(data).text(split, tgt)
        refs = read_lines(ref, allow_empty=True)
        systems = [(names[k], hyps[k, split]) for k in range(len(checkpoints))]
        base = [(names[k], hyps[k, split]) for k in range(len(checkpoints), len(all_paths))]
        report["splits"][split] = score_runs(systems, refs, str(ref), scoring, base)
    return report
