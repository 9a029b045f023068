"""Parallel data of a prepared split, token-budget batching (fairseq semantics) and vectorised collation."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from ikd.data.prepared import PreparedData
from ikd.data.vocab import Vocabulary
from ikd.errors import IkdError
from ikd.fileio import read_lines


def _encode_file(path: Path, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """BPE'd text -> (flat int64 ids with EOS after every sentence, offsets [N+1])."""
    ids: list[int] = []
    offsets = [0]
    for line in read_lines(path):
        ids.extend(vocab.encode(line.split()))  # EOS appended; text spelling <pad> or </s> is <unk>
        offsets.append(len(ids))
    return np.asarray(ids, dtype=np.int64), np.asarray(offsets, dtype=np.int64)


class ParallelData:
    """A split of a prepared pair: source/target ids (EOS appended) and optionally its images.

    Ids are held in one flat array per side plus offsets (as fairseq's mmap datasets do), so collation is
    vectorised; `.src`/`.tgt` are per-sentence views of them.
    """

    def __init__(
        self,
        src_flat: np.ndarray,
        src_offsets: np.ndarray,
        tgt_flat: np.ndarray,
        tgt_offsets: np.ndarray,
        images: np.ndarray | None,
        eos: int = Vocabulary.eos,
        name: str = "",
    ):
        if len(src_offsets) != len(tgt_offsets):
            raise IkdError(f"{name}: {len(src_offsets) - 1} source but {len(tgt_offsets) - 1} target sentences")
        if images is not None and len(images) != len(src_offsets) - 1:
            raise IkdError(f"{name}: {len(images)} images but {len(src_offsets) - 1} sentences")
        self.src_flat, self.src_offsets = src_flat, src_offsets
        self.tgt_flat, self.tgt_offsets = tgt_flat, tgt_offsets
        self.images = images
        self.eos = eos
        self.name = name
        self.src_lens = np.diff(src_offsets)
        self.tgt_lens = np.diff(tgt_offsets)
        self.src = [src_flat[a:b] for a, b in zip(src_offsets[:-1], src_offsets[1:])]
        self.tgt = [tgt_flat[a:b] for a, b in zip(tgt_offsets[:-1], tgt_offsets[1:])]

    @classmethod
    def load(
        cls, data_dir: str | os.PathLike, src: str, tgt: str, split: str, vocab: Vocabulary, images: bool
    ) -> ParallelData:
        """DATA/SRC-TGT/SPLIT.bpe.{SRC,TGT} (+ DATA/images/SPLIT.npy memory-mapped when `images`)."""
        data = PreparedData.at(data_dir)
        pair = data.pair(src, tgt)
        src_path, tgt_path = pair.bpe(split, src), pair.bpe(split, tgt)
        for path in (src_path, tgt_path):
            if not path.is_file():
                raise IkdError(f"{path}: not found (split {split!r} of {src}-{tgt}; run `ikd bpe` on {data_dir})")
        src_flat, src_offsets = _encode_file(src_path, vocab)
        tgt_flat, tgt_offsets = _encode_file(tgt_path, vocab)
        array = None
        if images:
            npy = data.images(split)
            if npy is None or not npy.is_file():
                raise IkdError(
                    f"split {split!r} has no images in {data_dir} (manifest.json lists none, or "
                    f"{data.default_images(split)} is missing); prepare it with --images, or use this "
                    "split without images"
                )
            array = np.load(npy, mmap_mode="r")
            if array.ndim != 4 or array.shape[1] != 3 or array.dtype != np.uint8:
                raise IkdError(f"{npy}: expected uint8 [N,3,S,S], found {array.dtype} {list(array.shape)}")
        return cls(src_flat, src_offsets, tgt_flat, tgt_offsets, array, vocab.eos, f"{pair.root}/{split}")

    def __len__(self) -> int:
        return len(self.src_lens)


def batch_indices(
    src_lens: np.ndarray,
    tgt_lens: np.ndarray,
    max_tokens: int,
    multiple: int = 8,
    shuffle: bool = True,
    seed: int = 1,
    epoch: int = 1,
) -> list[np.ndarray]:
    """Token-budget batches of sentence indices (fairseq 0.9 semantics).

    Order: a seeded permutation (when shuffling), stable-sorted by target then source length; cut into
    batches whose cost n_sentences * max(max src len, max tgt len) <= max_tokens, each size a multiple of
    `multiple` where possible; a sentence longer than max_tokens is a batch of its own. With `shuffle` the
    batch order is permuted with seed + epoch.
    """
    src_lens, tgt_lens = np.asarray(src_lens), np.asarray(tgt_lens)
    n = len(src_lens)
    if len(tgt_lens) != n:
        raise ValueError("src_lens and tgt_lens differ in length")
    if max_tokens < 1:
        raise IkdError(f"max_tokens {max_tokens}: must be positive")
    order = np.random.RandomState(seed).permutation(n) if shuffle else np.arange(n)
    order = order[np.argsort(tgt_lens[order], kind="mergesort")]
    order = order[np.argsort(src_lens[order], kind="mergesort")]
    sizes = np.maximum(src_lens, tgt_lens)[order].tolist()

    batches: list[np.ndarray] = []
    start, longest = 0, 0
    for i, size in enumerate(sizes):
        longest = max(longest, size)
        count = i - start + 1
        while count > 1 and count * longest > max_tokens:
            # close a batch of the largest multiple of `multiple` sentences before i (all of them if fewer)
            pending = i - start
            cut = multiple * (pending // multiple) if pending >= multiple else pending
            batches.append(order[start : start + cut])
            start += cut
            longest = max(sizes[start : i + 1])
            count = i - start + 1
    if start < n:
        batches.append(order[start:])
    if shuffle:
        np.random.RandomState(seed + epoch).shuffle(batches)
    return [b.astype(np.int64) for b in batches]


@dataclass
class Batch:
    """A padded batch. src [B,T], tgt_in/tgt_out [B,U] int64 (right-padded); images uint8 [B,3,S,S] | None.

    tgt_in = EOS followed by the target without its EOS (teacher forcing); tgt_out = target with EOS.
    Rows follow `indices` (sentence ids of the split, ascending). ntokens = target tokens including EOS.
    """

    src: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    images: torch.Tensor | None
    ntokens: int
    indices: np.ndarray

    def _map(self, fn) -> Batch:
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            values[f.name] = fn(value) if isinstance(value, torch.Tensor) else value
        return Batch(**values)

    def to(self, device: torch.device | str, non_blocking: bool = True) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Called by torch's DataLoader(pin_memory=True) on custom batch types."""
        return self._map(lambda t: t.pin_memory())

    def __len__(self) -> int:
        return int(self.src.shape[0])


def _pad(flat: np.ndarray, offsets: np.ndarray, idx: np.ndarray, pad: int, shift_eos: int | None = None) -> np.ndarray:
    """Gather sentences idx into a right-padded [B, maxlen] array with one fancy index.

    With `shift_eos`, each row is EOS followed by the sentence without its last token (decoder input).
    """
    starts = offsets[idx]
    lens = offsets[idx + 1] - starts
    cols = np.arange(int(lens.max()) if len(lens) else 0)
    mask = cols[None, :] < lens[:, None]
    source = starts[:, None] + cols[None, :]
    out = np.full(mask.shape, pad, dtype=np.int64)
    if shift_eos is None:
        out[mask] = flat[source[mask]]
    else:
        inner = mask & (cols[None, :] > 0)
        out[inner] = flat[(source - 1)[inner]]
        out[:, 0] = shift_eos
    return out


def collate(data: ParallelData, indices: np.ndarray, pad: int, with_images: bool = True) -> Batch:
    """Sentences `indices` of `data` -> Batch (rows in ascending index order, so the memmap reads in order);
    `with_images=False` leaves the pictures out (search never reads them)."""
    idx = np.sort(np.asarray(indices, dtype=np.int64))
    if len(idx) == 0:
        raise ValueError("empty batch")
    src = _pad(data.src_flat, data.src_offsets, idx, pad)
    tgt_out = _pad(data.tgt_flat, data.tgt_offsets, idx, pad)
    tgt_in = _pad(data.tgt_flat, data.tgt_offsets, idx, pad, shift_eos=data.eos)
    images = None
    if with_images and data.images is not None:
        images = torch.from_numpy(np.ascontiguousarray(data.images[idx]))
    return Batch(
        src=torch.from_numpy(src),
        tgt_in=torch.from_numpy(tgt_in),
        tgt_out=torch.from_numpy(tgt_out),
        images=images,
        ntokens=int(data.tgt_lens[idx].sum()),
        indices=idx,
    )


class BatchDataset(torch.utils.data.Dataset):
    """Precomputed batches as a map-style dataset: `DataLoader(BatchDataset(data, batches), batch_size=None,
    num_workers=k, pin_memory=True)` collates in workers (forked workers share the image memmap)."""

    def __init__(self, data: ParallelData, batches: list[np.ndarray], pad: int):
        self.data, self.batches, self.pad = data, batches, pad

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Batch:
        return collate(self.data, self.batches[i], self.pad)
