"""The training run's data: vocabulary, BPE codes, train and valid splits, length filtering, and a torch
DataLoader over token-bucketed batches (reshuffled every epoch from seed + epoch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ikd.data.bpe import DEFAULT_GLOSSARIES, check_current, read_bpe_vocab
from ikd.data.dataset import BatchDataset, ParallelData, batch_indices
from ikd.data.prepared import PreparedData
from ikd.data.vocab import Vocabulary
from ikd.errors import IkdError
from ikd.fileio import read_lines
from ikd.recipe import Recipe
from ikd.train.distributed import DistInfo, shard
from ikd.train.signals import ignore_sigterm


def needs_images(recipe: Recipe) -> bool:
    """IKD needs the images of the training split unless text-only or both KD weights are zero."""
    return not recipe.model.text_only and (recipe.kd.lambda_irm > 0 or recipe.kd.lambda_iam > 0)


@dataclass
class SplitData:
    """A split and the line indices (0-based) that take part (over-long pairs dropped)."""

    name: str
    data: ParallelData
    keep: np.ndarray  # int64 line indices
    src_lens: np.ndarray  # lengths of the kept lines, EOS included
    tgt_lens: np.ndarray

    def batches(self, max_tokens: int, multiple: int, shuffle: bool, seed: int, epoch: int) -> list[np.ndarray]:
        """Token-bucketed batches of line indices into `data`."""
        if len(self.keep) == 0:
            return []
        found = batch_indices(
            self.src_lens, self.tgt_lens, max_tokens, multiple=multiple, shuffle=shuffle, seed=seed, epoch=epoch
        )
        return [self.keep[np.asarray(b, dtype=np.int64)] for b in found]


@dataclass
class RunData:
    vocab: Vocabulary
    bpe_codes: str
    bpe_vocab: dict[str, dict[str, int]]  # per-language BPE vocabulary filter {lang: {unit: count}}
    train: SplitData
    valid: SplitData
    valid_refs: list[str]  # tokenised references of the kept valid lines (for BLEU)
    images: bool  # whether the training batches carry images
    bpe_glossaries: tuple[str, ...] = DEFAULT_GLOSSARIES  # tokens `ikd bpe` never split (the mask token)



def _filter(name: str, data: ParallelData, max_len: int, skip: bool, path: Path) -> tuple[SplitData, int]:
    src_lens, tgt_lens = np.asarray(data.src_lens), np.asarray(data.tgt_lens)
    over = np.flatnonzero((src_lens > max_len) | (tgt_lens > max_len))
    if len(over) and not skip:
        line = int(over[0]) + 1
        raise IkdError(
            f"{path}: split '{name}' line {line}: {max(src_lens[line - 1], tgt_lens[line - 1])} tokens "
            f"(EOS included) is more than data.max_len={max_len} ({len(over)} such lines); raise data.max_len "
            "or set data.skip_overlong=true to drop them"
        )
    keep = np.setdiff1d(np.arange(len(src_lens), dtype=np.int64), over)
    return SplitData(name, data, keep, src_lens[keep], tgt_lens[keep]), len(over)


def load_run_data(recipe: Recipe, recipe_source: str, report=print) -> RunData:
    """Load vocabulary, codes and the train/valid splits named by `recipe.data`; IkdErrors name what is
    missing and which recipe keys change the requirement."""
    cfg = recipe.data
    data_dir = Path(cfg.dir)
    data = PreparedData.at(data_dir)
    pair = data.pair(cfg.src, cfg.tgt)
    if not data_dir.is_dir():
        raise IkdError(f"{recipe_source}: data.dir {data_dir} is not a folder (run `ikd prepare` and `ikd bpe`)")
    vocab_path = pair.vocab
    if not vocab_path.is_file():
        raise IkdError(f"{vocab_path}: vocabulary not found (run `ikd bpe` on {data_dir} for {cfg.src}-{cfg.tgt})")
    codes_path = pair.codes
    bpe_state = check_current(data_dir, cfg.src, cfg.tgt) if codes_path.is_file() else {}
    vocab = Vocabulary.load(vocab_path)
    bpe_codes = codes_path.read_text(encoding="utf-8") if codes_path.is_file() else ""
    bpe_vocab = {
        lang: read_bpe_vocab(pair.bpe_vocab(lang))
        for lang in (cfg.src, cfg.tgt)
        if pair.bpe_vocab(lang).is_file()
    }

    images = needs_images(recipe)
    if images and not data.has_images(cfg.train_split):
        raise IkdError(
            f"{data_dir}: split '{cfg.train_split}' has no images (images/{cfg.train_split}.npy), but recipe "
            f"{recipe_source} distils from images; for a text-only run set model.text_only=true "
            "(or kd.lambda_irm=0 and kd.lambda_iam=0), or prepare the data with its images"
        )
    train = ParallelData.load(data_dir, cfg.src, cfg.tgt, cfg.train_split, vocab, images=images)
    valid_images = images and data.has_images(cfg.valid_split)
    valid = ParallelData.load(data_dir, cfg.src, cfg.tgt, cfg.valid_split, vocab, images=valid_images)
    train_split, dropped = _filter(cfg.train_split, train, cfg.max_len, cfg.skip_overlong, pair.root)
    if dropped:
        report(f"dropped {dropped} over-long pairs (> data.max_len={cfg.max_len}) from '{cfg.train_split}'")
    valid_split, vdropped = _filter(cfg.valid_split, valid, cfg.max_len, cfg.skip_overlong, pair.root)
    if vdropped:
        report(f"dropped {vdropped} over-long pairs (> data.max_len={cfg.max_len}) from '{cfg.valid_split}'")
    if recipe.train.valid_max_sentences > 0:
        keep = valid_split.keep[: recipe.train.valid_max_sentences]
        n = len(keep)
        valid_split = SplitData(valid_split.name, valid, keep, valid_split.src_lens[:n], valid_split.tgt_lens[:n])
    if len(train_split.keep) == 0:
        raise IkdError(f"{data_dir}: split '{cfg.train_split}' has no usable sentence pairs")

    ref_path = data.text(cfg.valid_split, cfg.tgt)
    if ref_path.is_file():
        lines = read_lines(ref_path, allow_empty=True)
        refs = [lines[i] for i in valid_split.keep] if len(lines) == len(valid) else None
    else:
        refs = None
    if refs is None:  # no tokenised text beside the BPE'd split: de-BPE the target ids
        from ikd.data.text import remove_bpe

        refs = [remove_bpe(" ".join(vocab.decode(valid.tgt[i]))) for i in valid_split.keep]
    glossaries = tuple(bpe_state.get("glossaries", DEFAULT_GLOSSARIES))
    return RunData(vocab, bpe_codes, bpe_vocab, train_split, valid_split, refs, images, glossaries)


def make_loader(
    split: SplitData,
    batches: list[np.ndarray],
    pad: int,
    num_workers: int,
    pin_memory: bool,
    seed: int,
) -> DataLoader:
    """A DataLoader yielding collated Batches in the given order. Its own generator keeps the global torch
    RNG (dropout) untouched, so a resumed run sees the same random numbers."""
    return DataLoader(
        BatchDataset(split.data, batches, pad),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=ignore_sigterm if num_workers > 0 else None,
    )


def epoch_batches(split: SplitData, recipe: Recipe, epoch: int, info: DistInfo) -> list[np.ndarray]:
    """This rank's shuffled training batches for `epoch`."""
    t = recipe.train
    batches = split.batches(t.max_tokens, t.batch_multiple, shuffle=True, seed=t.seed, epoch=epoch)
    return shard(batches, info)
