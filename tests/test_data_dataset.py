"""ikd.data.dataset: loading, token-budget batching, vectorised collation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_data import make_prepared

from ikd.data.bpe import learn_and_apply
from ikd.data.dataset import BatchDataset, ParallelData, batch_indices, collate
from ikd.data.vocab import Vocabulary
from ikd.errors import IkdError

PAD, EOS = Vocabulary.pad, Vocabulary.eos


def make_data(src: list[list[int]], tgt: list[list[int]], images: np.ndarray | None = None) -> ParallelData:
    def flat(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        offsets = np.cumsum([0] + [len(s) for s in seqs])
        return np.array([t for s in seqs for t in s], dtype=np.int64), offsets.astype(np.int64)

    return ParallelData(*flat(src), *flat(tgt), images)


def test_collate_pads_and_shifts_the_target() -> None:
    images = np.arange(3, dtype=np.uint8).reshape(3, 1, 1, 1).repeat(3, 1).repeat(2, 2).repeat(2, 3)
    data = make_data([[5, 6, 2], [7, 2], [9, 9, 9, 2]], [[8, 9, 10, 2], [11, 2], [12, 2]], images)
    batch = collate(data, np.array([1, 0]), PAD)
    assert batch.indices.tolist() == [0, 1]  # rows in ascending sentence order
    assert batch.src.tolist() == [[5, 6, 2], [7, 2, PAD]]
    assert batch.tgt_out.tolist() == [[8, 9, 10, 2], [11, 2, PAD, PAD]]
    assert batch.tgt_in.tolist() == [[EOS, 8, 9, 10], [EOS, 11, PAD, PAD]]
    assert batch.ntokens == 6 and batch.src.dtype == torch.int64
    assert batch.images.shape == (2, 3, 2, 2) and batch.images.dtype == torch.uint8
    assert batch.images[:, 0, 0, 0].tolist() == [0, 1]  # each image stays with its sentence
    single = collate(data, np.array([2]), PAD)
    assert single.tgt_in.tolist() == [[EOS, 12]] and single.src.tolist() == [[9, 9, 9, 2]]
    assert single.images[0, 0, 0, 0].item() == 2
    moved = batch.to("cpu")
    assert torch.equal(moved.src, batch.src) and moved.ntokens == 6 and len(moved) == 2


def test_batches_cover_every_index_once_within_budget() -> None:
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(1, 40, 500), rng.integers(1, 40, 500)
    src[17] = 300  # longer than the budget: a batch of its own
    batches = batch_indices(src, tgt, max_tokens=200, multiple=8, seed=3, epoch=1)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500))
    for b in batches:
        cost = len(b) * max(src[b].max(), tgt[b].max())
        assert cost <= 200 or len(b) == 1
    assert [17] in [b.tolist() for b in batches]
    same = batch_indices(src, tgt, max_tokens=200, multiple=8, seed=3, epoch=1)
    other = batch_indices(src, tgt, max_tokens=200, multiple=8, seed=3, epoch=2)
    assert all(np.array_equal(a, b) for a, b in zip(batches, same))
    assert [b.tolist() for b in batches] != [b.tolist() for b in other]
    assert sorted(map(tuple, batches)) == sorted(map(tuple, other))  # same batches, another order


def test_unshuffled_batches_are_length_sorted_multiples_of_eight() -> None:
    rng = np.random.default_rng(1)
    src, tgt = rng.integers(1, 30, 300), rng.integers(1, 30, 300)
    batches = batch_indices(src, tgt, max_tokens=256, multiple=8, shuffle=False)
    order = np.concatenate(batches)
    assert np.all(np.diff(src[order]) >= 0)
    for b in batches[:-1]:
        assert len(b) % 8 == 0 or len(b) < 8
    # fairseq: the batch grows while (n + 1) * longest fits
    b = batches[0]
    longest = max(src[b].max(), tgt[b].max())
    assert len(b) * longest <= 256 < (len(b) + 8) * longest or len(batches) == 1


def test_load_toy_pair(toy_data: Path) -> None:
    vocab = Vocabulary.load(toy_data / "en-de" / "vocab.txt")
    data = ParallelData.load(toy_data, "en", "de", "val", vocab, images=True)
    assert len(data) == 40 and data.images.shape == (40, 3, 64, 64)
    lines = (toy_data / "en-de" / "val.bpe.de").read_text(encoding="utf-8").splitlines()
    for ids, line in zip(data.tgt, lines):
        assert ids[-1] == vocab.eos and vocab.decode(ids) == line.split()
    batches = batch_indices(data.src_lens, data.tgt_lens, max_tokens=128)
    total = sum(collate(data, b, vocab.pad).ntokens for b in batches)
    assert total == int(data.tgt_lens.sum())
    loader = torch.utils.data.DataLoader(BatchDataset(data, batches, vocab.pad), batch_size=None)
    first = next(iter(loader))
    assert first.images.shape[1:] == (3, 64, 64) and first.src.shape[0] == len(first.indices)
    assert np.array_equal(first.images.numpy(), data.images[first.indices])
    text_only = collate(data, first.indices, vocab.pad, with_images=False)  # what validation search reads
    assert text_only.images is None and torch.equal(text_only.src, first.src)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinning needs CUDA")
def test_pin_memory_and_transfer(toy_data: Path) -> None:
    vocab = Vocabulary.load(toy_data / "en-de" / "vocab.txt")
    data = ParallelData.load(toy_data, "en", "de", "val", vocab, images=True)
    batches = batch_indices(data.src_lens, data.tgt_lens, max_tokens=128)
    loader = torch.utils.data.DataLoader(BatchDataset(data, batches, vocab.pad), batch_size=None, pin_memory=True)
    batch = next(iter(loader))
    assert batch.src.is_pinned() and batch.images.is_pinned()
    on_gpu = batch.to("cuda")
    assert on_gpu.src.is_cuda and torch.equal(on_gpu.images.cpu(), batch.images)


def test_missing_images_or_split_are_errors(toy_data: Path, tmp_path: Path) -> None:
    data = make_prepared(tmp_path, {"train": {"en": ["ab ab", "abc"], "de": ["xy", "xyz xy"]}})
    learn_and_apply(data, "en", "de", merges=2)
    vocab = Vocabulary.load(data / "en-de" / "vocab.txt")
    assert len(ParallelData.load(data, "en", "de", "train", vocab, images=False)) == 2
    with pytest.raises(IkdError, match="split 'train' has no images"):
        ParallelData.load(data, "en", "de", "train", vocab, images=True)
    with pytest.raises(IkdError, match="test.bpe.en: not found"):
        ParallelData.load(data, "en", "de", "test", vocab, images=False)
