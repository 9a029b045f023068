"""Trained-model fixtures (owner: training work): tiny checkpoints for tests.

`toy_checkpoint`: recipes/toy.yaml's IKD model (random AlexNet teacher at 64 px, cosine KD) made tiny (d_model 32,
1+1 layers) and trained for 14 short epochs on the `toy_data` fixture; the path of its averaged, self-contained
checkpoint (RUN/checkpoint_average.pt, the last 4 epochs; RUN also holds checkpoint_last.pt with train_state,
checkpoint_best.pt, metrics.jsonl and recipe.yaml). Its text-generated m retrieves the test pictures far above
chance (tests/test_retrieve_toy.py). Session-scoped: do not modify the files.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
TOY_RECIPE = REPO / "recipes" / "toy.yaml"

# A model small enough for tests (a few seconds per epoch of the 300-sentence toy set on 2 cores).
TINY_MODEL = [
    "model.d_model=32",
    "model.heads=2",
    "model.ffn=64",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "model.dropout=0.1",
    "vision.backbone=resnet18",  # the tests were tuned with a small random ResNet at 32 px and l2 KD
    "vision.image_size=32",
    "kd.distance=l2",
]
# The training fixture: recipes/toy.yaml's teacher and KD (random AlexNet at 64 px, cosine, model grain, both
# losses) with the tiny model, shortened for 300 sentences (about 25 s on one core). Short batches (about 18
# sentences, 18 updates per epoch) and a high rate give the generator the few hundred updates it needs to learn the
# caption-specific part of m; averaging the last 4 epochs smooths the epoch-to-epoch wobble of the ranking.
# Measured (seed 1): test R@1 10% and R@5 52.5% of 40 (chance 2.5%, 12.5%), median rank 5; the same model
# untrained: 2.5%, 10%, 22.
FIXTURE_RUN = [
    "model.d_model=32",
    "model.heads=2",
    "model.ffn=64",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "model.dropout=0.1",
    "train.max_tokens=256",
    "train.lr=0.01",
    "train.warmup_updates=10",
    "train.max_epochs=14",
    "train.valid_bleu=false",
    "train.keep_last=4",
    "train.average_last=4",
]


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with `n` torch threads, restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def one_thread():
    """Train with one torch thread: on a shared 2-core machine OpenMP threads that spin-wait for a busy core
    make a step several times slower; one thread is steady (and makes runs bitwise comparable)."""
    return torch_threads(1)


def toy_recipe(data_dir: str | Path, *overrides: str, source: Path = TOY_RECIPE):
    """recipes/toy.yaml (or `source`) with data.dir=data_dir and `section.key=value` overrides applied."""
    from ikd.recipe import apply_overrides, recipe_from_dict

    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    apply_overrides(raw, [f"data.dir={data_dir}", *overrides])
    return recipe_from_dict(raw, str(source))


@pytest.fixture(scope="session")
def toy_checkpoint(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of RUN/checkpoint_average.pt of a short toy run (about 25 s on one core)."""
    from ikd.train.trainer import train

    out = tmp_path_factory.mktemp("toy_run") / "run"
    recipe = toy_recipe(toy_data, *FIXTURE_RUN)
    with one_thread():
        train(recipe, out=out, device="cpu", progress=False, report=lambda _msg: None)
    return out / "checkpoint_average.pt"


def untrained_copy(checkpoint: Path, out: Path) -> Path:
    """The same recipe, freshly initialised, with the trained checkpoint's teacher (so that the images'
    features are the same and only the text side differs)."""
    from ikd.checkpoint import load_checkpoint, save_checkpoint
    from ikd.inference.loading import load_for_inference
    from ikd.train.objective import build_training_model

    loaded = load_for_inference(checkpoint, "cpu")
    payload = load_checkpoint(checkpoint)
    payload.pop("train_state", None)
    torch.manual_seed(1234)
    model = build_training_model(loaded.recipe, len(loaded.vocab), loaded.vocab.pad, load_teacher_weights=False)
    states = model.checkpoint_states()
    for key, value in payload["distiller"].items():
        if key.startswith("teacher."):
            states["distiller"][key] = value
    save_checkpoint({**payload, **states, "epoch": 0, "updates": 0}, out)
    return out


def text_only_copy(checkpoint: Path, out: Path, seed: int = 1234) -> Path:
    """A freshly initialised text-only model with the checkpoint's vocabulary, BPE and recipe otherwise
    (no teacher, no student): for what a text-only model must refuse or do differently."""
    from ikd.checkpoint import load_checkpoint, save_checkpoint
    from ikd.recipe import recipe_from_dict
    from ikd.train.objective import build_training_model

    payload = load_checkpoint(checkpoint)
    raw = payload["recipe"]
    raw["model"]["text_only"] = True
    raw["vision"]["backbone"] = "resnet50"  # unused by a text-only model
    recipe = recipe_from_dict(raw)
    torch.manual_seed(seed)
    model = build_training_model(recipe, len(payload["vocab"]), load_teacher_weights=False)
    payload = {k: v for k, v in payload.items() if k not in ("distiller", "feature_shape", "train_state")}
    save_checkpoint({**payload, **model.checkpoint_states(), "recipe": recipe.to_dict()}, out)
    return out
