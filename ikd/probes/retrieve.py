"""Image retrieval probe (paper section 5.1, Table 4): does the multimodal feature m, generated from a
sentence alone, point to the sentence's own image?

For every sentence of a split, m = model.generate_m(source) [C, H, W]; for every image of the split, the
teacher's last feature map of the real image (the map m is distilled towards), or a precomputed feature.
Both are flattened (or average-pooled to [C]), L2-normalised per vector, and compared by cosine similarity;
R@K is the share of sentences whose own image is among the K most similar images, next to chance K/N.

The authors' `scripts/visual_grounding.py` (docs/differences.md) divided the product matrix S O^T by the two
matrices' global Frobenius norms: one constant for all pairs, so their "cosine" ranking is the raw dot product
and favours images with large feature norms. Here every vector is normalised on its own. Ties count against
the sentence (an image scoring exactly as high as the right one ranks before it), so a collapsed m (all zeros)
scores chance level or below, never 100%.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ikd.data.prepared import PreparedData
from ikd.errors import IkdError
from ikd.inference.loading import load_for_inference
from ikd.inference.source import SourceEncoder, pad_batch

KS = (1, 5, 10, 15)


@dataclass
class RetrievalResult:
    """ranks[i]: 0-based rank of sentence i's own image among all N images (0 = retrieved first)."""

    ranks: np.ndarray
    ks: tuple[int, ...] = KS
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.ranks)

    def recall(self, k: int) -> float:
        """Share (0..1) of sentences whose image is in the top k."""
        return float(np.mean(self.ranks < k)) if self.n else 0.0

    def chance(self, k: int) -> float:
        """Expected R@k of a random ranking: k/N."""
        return min(k, self.n) / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.info,
            "n": self.n,
            "recall": {f"R@{k}": round(100 * self.recall(k), 4) for k in self.ks},
            "chance": {f"R@{k}": round(100 * self.chance(k), 4) for k in self.ks},
            "median_rank": float(np.median(self.ranks + 1)) if self.n else None,
            "mean_rank": float(np.mean(self.ranks + 1)) if self.n else None,
        }


def normalise_rows(x: Tensor, eps: float = 1e-12) -> Tensor:
    """[N, D] -> float32 rows of unit L2 norm (all-zero rows stay zero)."""
    x = x.float()
    return x / x.norm(dim=1, keepdim=True).clamp_min(eps)


def flatten_features(x: Tensor, pool: str) -> Tensor:
    """[B, C, H, W] (or any [B, ...]) -> [B, D]: flattened ("none") or spatially averaged ("avg": [B, C])."""
    if pool == "avg":
        if x.dim() < 3:
            raise IkdError(f"--pool avg needs spatial features [N, C, H, W], got shape {tuple(x.shape)}")
        return x.float().flatten(2).mean(dim=2)
    if pool != "none":
        raise IkdError(f"--pool {pool!r}: expected none or avg")
    return x.float().flatten(1)


def ranks_from_similarity(sim: Tensor, targets: Tensor | None = None) -> Tensor:
    """sim [B, N] (row b scores every candidate), targets [B] (the right column of each row; default b)
    -> 0-based ranks [B]: how many other candidates score at least as high as the right one."""
    if targets is None:
        targets = torch.arange(sim.size(0), device=sim.device)
    right = sim.gather(1, targets.view(-1, 1))
    return (sim >= right).sum(dim=1) - 1


def recall_at_k(sim: Tensor, ks: Sequence[int] = KS) -> dict[int, float]:
    """Square similarity [N, N] (row i = sentence i, column j = image j) -> {k: R@k as a share 0..1}."""
    ranks = ranks_from_similarity(sim)
    return {k: float((ranks < k).float().mean()) for k in ks}


def ranks_against(queries: Callable[[], Any], keys: Tensor) -> np.ndarray:
    """queries yields (rows [B] int64, features [B, D] unit vectors) batches; keys [N, D] unit vectors.
    -> ranks [N] of key rows[b] for query b (no [N, N] matrix is kept)."""
    ranks = np.full(keys.size(0), -1, dtype=np.int64)
    for rows, feats in queries():
        sim = feats.to(keys.device, keys.dtype) @ keys.T
        ranks[rows.cpu().numpy()] = ranks_from_similarity(sim, rows.to(keys.device)).cpu().numpy()
    if (ranks < 0).any():
        raise IkdError(f"internal error: {int((ranks < 0).sum())} sentences were not scored")
    return ranks


def read_source(data_dir: Path, split: str, loaded: Any, warn: Callable[[str], None] | None = None) -> list[list[int]]:
    """Token ids (EOS appended) of a split's source: DATA/SRC-TGT/SPLIT.bpe.SRC when present (its folder's
    vocabulary must be the checkpoint's), else DATA/text/SPLIT.SRC segmented with the checkpoint's BPE."""
    from ikd.data.vocab import Vocabulary
    from ikd.fileio import read_lines

    src, tgt, vocab = loaded.src, loaded.tgt, loaded.vocab
    data = PreparedData.at(data_dir)
    pair = data.pair(src, tgt)
    bpe_path = pair.bpe(split, src)
    if bpe_path.is_file():
        if pair.vocab.is_file():
            folder_vocab = Vocabulary.load(pair.vocab)
            if folder_vocab.fingerprint() != vocab.fingerprint():
                raise IkdError(
                    f"{pair.vocab}: not the checkpoint's vocabulary ({len(folder_vocab)} vs {len(vocab)} "
                    "tokens): this data was segmented with other BPE codes than the model was trained on"
                )
        mode, read_from = "bpe", bpe_path
    else:
        text_path = data.text(split, src)
        if not text_path.is_file():
            raise IkdError(f"{bpe_path}: not found (nor {text_path}); is '{split}' a split of {data_dir}?")
        mode, read_from = "tokenized", text_path
    encoder = SourceEncoder(loaded, mode, warn)
    lines = read_lines(read_from)
    # an empty line still has its picture: it is queried with EOS alone
    return [encoder.ids(line, f"{read_from}:{n}") or [vocab.eos] for n, line in enumerate(lines, start=1)]


def _text_batches(model: Any, sentences: list[list[int]], pad: int, batch_size: int, device, pool, autocast):
    """Length-sorted batches of m (normalised, pooled) with their sentence rows."""
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))

    def gen():
        from ikd.console import progress

        for start in progress(range(0, len(order), batch_size), desc="sentences", unit="batch"):
            rows = order[start : start + batch_size]
            src = pad_batch([sentences[i] for i in rows], pad, device)
            with torch.no_grad(), autocast():
                m = model.generate_m(src)
            yield torch.tensor(rows), normalise_rows(flatten_features(m, pool))

    return gen


def teacher_image_features(distiller: Any, images: np.ndarray, batch_size: int, device, pool: str, autocast) -> Tensor:
    """uint8 [N, 3, S, S] (memmap ok) -> the teacher's last feature maps, pooled and normalised [N, D]."""
    from ikd.console import progress

    chunks = []
    for start in progress(range(0, len(images), batch_size), desc="image features", unit="batch"):
        batch = torch.from_numpy(np.array(images[start : start + batch_size])).to(device)
        with torch.no_grad(), autocast():
            feats = distiller.teacher_features(batch)
        chunks.append(normalise_rows(flatten_features(feats, pool)))
    return torch.cat(chunks)


def load_feature_file(path: str | os.PathLike, pool: str, out_shape: Sequence[int] | None = None) -> Tensor:
    """A precomputed .npy of visual features -> [N, D] normalised. `out_shape` (C, H, W) is m's shape: maps
    must be [N, C, H, W] (channels first, as the teacher gives them); with --pool avg, already pooled [N, C]
    vectors are accepted too. A flat or channels-last array is refused: compared value by value with m it
    would rank in another order, silently."""
    path = Path(path)
    if not path.is_file():
        raise IkdError(f"--features {path}: file not found")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise IkdError(f"--features {path}: not a .npy array ({e})") from None
    if array.ndim < 2:
        raise IkdError(f"--features {path}: expected [N, ...] features, got shape {array.shape}")
    if out_shape is not None:
        c = int(out_shape[0])
        pooled = pool == "avg" and array.ndim == 2 and array.shape[1] == c
        if not pooled and tuple(array.shape[1:]) != tuple(out_shape):
            accepted = f"[N, {', '.join(map(str, out_shape))}]" + (f" or pooled [N, {c}]" if pool == "avg" else "")
            raise IkdError(
                f"--features {path}: shape {tuple(array.shape)}, but m has shape {tuple(out_shape)}: expected "
                f"{accepted} (channels first)"
            )
        if pooled:
            return normalise_rows(torch.from_numpy(np.array(array, dtype=np.float32)))
    return normalise_rows(flatten_features(torch.from_numpy(np.array(array, dtype=np.float32)), pool))


def retrieve(
    checkpoint: str | os.PathLike,
    data_dir: str | os.PathLike,
    split: str,
    features: str | os.PathLike | None = None,
    pool: str = "none",
    batch_size: int = 64,
    device: str = "auto",
) -> RetrievalResult:
    """The probe end to end: checkpoint + prepared split (+ optional precomputed visual features)."""
    if batch_size < 1:
        raise IkdError(f"--batch-size {batch_size}: must be positive")
    flatten_features(torch.zeros(1, 1, 1, 1), pool)  # validates pool before anything slow
    data_dir = Path(data_dir)
    loaded = load_for_inference(checkpoint, device, with_distiller=features is None)
    model = loaded.model.eval()
    if loaded.recipe.model.text_only:
        raise IkdError(f"{checkpoint}: a text-only model has no multimodal feature m to retrieve images with")
    sentences = read_source(data_dir, split, loaded, lambda message: print(f"warning: {message}", file=sys.stderr))
    n = len(sentences)
    if features is not None:
        keys = load_feature_file(features, pool, model.feature_shape)
        source = str(features)
    else:
        npy = PreparedData.at(data_dir).images(split) or PreparedData.at(data_dir).default_images(split)
        if not npy.is_file():
            raise IkdError(
                f"split '{split}' of {data_dir} has no images ({npy} not found): prepare it with --images, "
                "or give --features FILE.npy"
            )
        images = np.load(npy, mmap_mode="r")
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
            raise IkdError(f"{npy}: expected uint8 [N, 3, S, S] images, got {images.dtype} {images.shape}")
        if len(images) != n:
            raise IkdError(f"{npy}: {len(images)} images but split '{split}' has {n} sentences")
        keys = teacher_image_features(loaded.distiller, images, batch_size, loaded.device, pool, loaded.autocast)
        source = "teacher"
    if keys.size(0) != n:
        raise IkdError(f"--features {features}: {keys.size(0)} rows but split '{split}' has {n} sentences")
    keys = keys.to(loaded.device)
    expected = int(np.prod(model.feature_shape)) if pool == "none" else int(model.feature_shape[0])
    if keys.size(1) != expected:
        raise IkdError(
            f"--features {features}: {keys.size(1)} values per image, but m has {expected} "
            f"(shape {tuple(model.feature_shape)}, pool {pool})"
        )
    queries = _text_batches(model, sentences, loaded.vocab.pad, batch_size, loaded.device, pool, loaded.autocast)
    ranks = ranks_against(queries, keys)
    info = {"checkpoint": str(checkpoint), "data": str(data_dir), "split": split, "pool": pool, "features": source}
    return RetrievalResult(ranks, KS, info)
