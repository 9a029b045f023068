"""`ikd retrieve`: image retrieval from text-generated multimodal features (paper Table 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ikd.errors import IkdError
from ikd.probes.retrieve import (
    RetrievalResult,
    flatten_features,
    load_feature_file,
    normalise_rows,
    ranks_against,
    ranks_from_similarity,
    recall_at_k,
)


def test_recall_on_a_hand_checked_3x3() -> None:
    # row = sentence, column = image; the right image of row i is column i
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.95],  # one image scores higher: rank 1
            [0.2, 0.5, 0.1],  # right image first: rank 0
            [0.3, 0.3, 0.3],  # all tied: ties count against, rank 2
        ]
    )
    assert ranks_from_similarity(sim).tolist() == [1, 0, 2]
    recall = recall_at_k(sim, ks=(1, 2, 3))
    assert recall == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 1.0})
    result = RetrievalResult(ranks_from_similarity(sim).numpy(), ks=(1, 2, 3))
    assert result.recall(1) == pytest.approx(1 / 3) and result.chance(1) == pytest.approx(1 / 3)
    assert result.chance(5) == 1.0  # K beyond N
    d = result.to_dict()
    assert d["recall"] == {"R@1": pytest.approx(33.3333), "R@2": pytest.approx(66.6667), "R@3": 100.0}
    assert d["median_rank"] == 2.0 and d["mean_rank"] == pytest.approx(2.0)


def test_collapsed_features_score_no_better_than_chance() -> None:
    """All-zero m (a dead generator): every similarity ties, and ties count against the sentence."""
    queries = normalise_rows(torch.zeros(5, 4))
    keys = normalise_rows(torch.randn(5, 4))
    assert recall_at_k(queries @ keys.T, ks=(1,))[1] == 0.0


def test_cosine_is_per_vector_not_a_global_norm() -> None:
    """The authors divided by global Frobenius norms, i.e. ranked by dot product: an image with a large feature
    norm then wins every query. Per-vector normalisation gets both right."""
    text = torch.tensor([[1.0, 0.0], [0.1, 0.1]])
    images = torch.tensor([[1.0, 0.0], [10.0, 10.0]])
    authors = (text @ images.T) / (text.norm() * images.norm())
    assert recall_at_k(authors, ks=(1,))[1] == 0.5
    assert recall_at_k(normalise_rows(text) @ normalise_rows(images).T, ks=(1,))[1] == 1.0


def test_ranks_against_in_batches_equals_the_full_matrix() -> None:
    g = torch.Generator().manual_seed(3)
    keys = normalise_rows(torch.randn(23, 6, generator=g))
    queries = normalise_rows(keys + 0.8 * torch.randn(23, 6, generator=g))
    order = torch.randperm(23, generator=g)

    def batches():
        for start in range(0, 23, 5):
            rows = order[start : start + 5]
            yield rows, queries[rows]

    ranks = ranks_against(batches, keys)
    assert ranks.tolist() == ranks_from_similarity(queries @ keys.T).tolist()
    result = RetrievalResult(ranks)
    recalls = [result.recall(k) for k in result.ks]
    assert recalls == sorted(recalls)  # R@K never falls as K grows


def test_pooling_and_feature_files(tmp_path) -> None:
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    assert flatten_features(x, "none").shape == (2, 12)
    assert torch.allclose(flatten_features(x, "avg"), x.mean(dim=(2, 3)))
    with pytest.raises(IkdError, match="expected none or avg"):
        flatten_features(x, "max")
    path = tmp_path / "f.npy"
    np.save(path, x.numpy())
    feats = load_feature_file(path, "avg")
    assert feats.shape == (2, 3) and torch.allclose(feats.norm(dim=1), torch.ones(2))
    with pytest.raises(IkdError, match="file not found"):
        load_feature_file(tmp_path / "missing.npy", "none")
    np.save(path, np.zeros(3))
    with pytest.raises(IkdError, match=r"expected \[N, ...\] features"):
        load_feature_file(path, "none")
    # maps must be m's shape, channels first: a channels-last array of as many values is refused
    maps = torch.arange(2 * 4 * 2 * 3, dtype=torch.float32).view(2, 4, 2, 3)
    np.save(path, maps.numpy())
    assert torch.allclose(load_feature_file(path, "none", (4, 2, 3)), normalise_rows(maps.flatten(1)))
    np.save(path, maps.permute(0, 2, 3, 1).numpy())
    with pytest.raises(IkdError, match=r"shape \(2, 2, 3, 4\), but m has shape \(4, 2, 3\): expected \[N, 4, 2, 3\]"):
        load_feature_file(path, "none", (4, 2, 3))
    np.save(path, maps.mean(dim=(2, 3)).numpy())  # already pooled [N, C]: only with --pool avg
    assert torch.allclose(load_feature_file(path, "avg", (4, 2, 3)), normalise_rows(maps.mean(dim=(2, 3))))
    with pytest.raises(IkdError, match="channels first"):
        load_feature_file(path, "none", (4, 2, 3))
