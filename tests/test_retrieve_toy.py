"""`ikd retrieve` end to end on the toy world: after training (the shared `toy_checkpoint` fixture, which uses
recipes/toy.yaml's teacher and distillation settings), the text-generated m finds its own image far above chance
and far above an untrained model built from the same recipe. The full recipe on the default toy world is checked
the same way in test_toy_recipe.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from fixtures_train import untrained_copy

from ikd.cli import main

SPLIT = "test"


def _retrieve(capsys, checkpoint: Path, data: Path, *extra: str) -> dict:
    split = [] if "--split" in extra else ["--split", SPLIT]
    args = ["retrieve", "--checkpoint", str(checkpoint), "--data", str(data), *split, "--device", "cpu"]
    assert main([*args, "--json", "-", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_trained_model_retrieves_its_images(toy_checkpoint: Path, toy_data: Path, tmp_path: Path, capsys) -> None:
    """The training fixture (recipes/toy.yaml's random AlexNet teacher and cosine KD, a tiny model, 14 short
    epochs): among the 40 test pictures, m generated from each sentence ranks the sentence's own picture first
    several times more often than chance, and far more often than the same recipe untrained."""
    trained = _retrieve(capsys, toy_checkpoint, toy_data)
    untrained = _retrieve(capsys, untrained_copy(toy_checkpoint, tmp_path / "untrained.pt"), toy_data)
    n = trained["n"]
    assert n == 40 and trained["chance"] == {"R@1": 2.5, "R@5": 12.5, "R@10": 25.0, "R@15": 37.5}
    assert trained["features"] == "teacher" and trained["pool"] == "none"
    r, u = trained["recall"], untrained["recall"]
    assert list(r.values()) == sorted(r.values())  # R@K never falls as K grows
    # measured (seed 1, t before dropout): R@1 10, R@5 52.5, R@10 67.5, median rank 5 of 40; untrained R@1 2.5,
    # R@5 10, median 22. One picture of 40 moves R@1 by 2.5 points, so R@5 carries most of the margin.
    assert r["R@1"] >= 3 * trained["chance"]["R@1"] and r["R@5"] >= 3 * trained["chance"]["R@5"], trained
    assert r["R@1"] >= u["R@1"] + 5 and r["R@5"] >= u["R@5"] + 25, (trained, untrained)
    t_med, u_med = trained["median_rank"], untrained["median_rank"]
    assert t_med <= n / 5 and 2 * t_med <= u_med, (trained, untrained)


def test_retrieval_on_the_training_split(toy_checkpoint: Path, toy_data: Path, capsys) -> None:
    """Among the 300 training pictures (chance R@1 0.33%) the fixture finds its own picture far more often than
    chance (measured: R@1 4.0, R@10 21.3, median rank 38; untrained 0.7, 4.0, 162.5)."""
    result = _retrieve(capsys, toy_checkpoint, toy_data, "--split", "train")
    assert result["n"] == 300
    assert result["recall"]["R@1"] >= 5 * result["chance"]["R@1"], result
    assert result["recall"]["R@10"] >= 3 * result["chance"]["R@10"], result


def test_precomputed_features_and_pooling(toy_checkpoint: Path, toy_data: Path, tmp_path: Path, capsys) -> None:
    """A .npy of the teacher's features gives the same ranking as computing them; avg pooling also runs."""
    from ikd.inference.loading import load_for_inference

    loaded = load_for_inference(toy_checkpoint, "cpu", with_distiller=True)
    images = torch.from_numpy(np.load(toy_data / "images" / f"{SPLIT}.npy"))
    with torch.no_grad():
        feats = loaded.distiller.teacher_features(images).float().numpy()
    path = tmp_path / "features.npy"
    np.save(path, feats)
    direct = _retrieve(capsys, toy_checkpoint, toy_data)
    from_file = _retrieve(capsys, toy_checkpoint, toy_data, "--features", str(path), "--batch-size", "7")
    assert from_file["recall"] == direct["recall"] and from_file["features"] == str(path)
    pooled = _retrieve(capsys, toy_checkpoint, toy_data, "--pool", "avg")
    assert feats.shape[2:] == (1, 1)  # the fixture's AlexNet map at 64 px: averaging over 1 position is the identity
    assert pooled["pool"] == "avg" and pooled["recall"] == direct["recall"]
    # already pooled [N, C] vectors (e.g. a published avgpool .npy) rank exactly as pooling the maps here
    np.save(path, feats.mean(axis=(2, 3)))
    pooled_file = _retrieve(capsys, toy_checkpoint, toy_data, "--pool", "avg", "--features", str(path))
    assert pooled_file["recall"] == pooled["recall"]


def test_retrieve_errors(toy_checkpoint: Path, toy_data: Path, tmp_path: Path, capsys) -> None:
    base = ["retrieve", "--checkpoint", str(toy_checkpoint), "--data", str(toy_data), "--device", "cpu"]
    assert main([*base, "--split", "nosuch"]) == 1
    assert "nosuch" in capsys.readouterr().err
    from ikd.inference.loading import load_for_inference

    c, h, w = load_for_inference(toy_checkpoint, "cpu").model.feature_shape
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, c, h, w), dtype=np.float32))
    assert main([*base, "--split", SPLIT, "--features", str(bad)]) == 1
    assert "3 rows but split 'test' has 40 sentences" in capsys.readouterr().err
    # channels-last maps have as many values as m, but in another order: refused, not silently compared
    np.save(bad, np.zeros((40, h, w, c) if h * w > 1 else (40, c * h * w), dtype=np.float32))
    assert main([*base, "--split", SPLIT, "--features", str(bad)]) == 1
    assert f"but m has shape ({c}, {h}, {w}): expected [N, {c}, {h}, {w}] (channels first)" in capsys.readouterr().err
    np.save(bad, np.zeros((40, c + 1), dtype=np.float32))
    assert main([*base, "--split", SPLIT, "--features", str(bad), "--pool", "avg"]) == 1
    assert f"or pooled [N, {c}]" in capsys.readouterr().err
    assert main([*base, "--split", SPLIT, "--pool", "max"]) == 1
    assert "expected none or avg" in capsys.readouterr().err
    data = tmp_path / "data"
    shutil.copytree(toy_data, data)
    (data / "images" / f"{SPLIT}.npy").unlink()
    assert main([*base[:3], "--data", str(data), "--split", SPLIT, "--device", "cpu"]) == 1
    assert "split 'test' of" in (err := capsys.readouterr().err) and "has no images" in err and "--features" in err
