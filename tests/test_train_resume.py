"""Resuming runs of older versions: a 0.1.0 run (checkpoint format 1, its recipe without the keys added since,
its optimiser state numbered in 0.1.0's parameter order) resumes as it was trained."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
from fixtures_train import TINY_MODEL, one_thread

import ikd
from ikd.checkpoint import load_checkpoint, save_checkpoint
from ikd.cli import main
from ikd.errors import IkdError
from ikd.recipe import load_recipe

pytestmark = pytest.mark.filterwarnings("ignore:images are .* resizing on the device")
REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "recipes" / "toy.yaml"  # has none of the keys added after 0.1.0, as a recipe of that time
# a short run (with train.max_updates=3), then resumed for 3 more
SHORT = [*TINY_MODEL, "train.lr=0.003", "train.warmup_updates=5", "train.valid_bleu=false",
         "train.average_last=0", "train.log_every=1"]  # fmt: skip
ADDED_SINCE_0_1_0 = {"model": ["text_feature"], "train": ["best_metric", "tensorboard"]}


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def _train(out: Path, toy_data: Path, *sets: str, resume: bool = False) -> None:
    args = ["train", str(TOY), "--out", str(out), "--device", "cpu", "-q"]
    for item in [f"data.dir={toy_data}", *sets]:
        args += ["--set", item]
    assert main([*args, "--resume"] if resume else args) == 0


def format_1_order(names: list[str]) -> list[str]:
    """0.1.0's IKDModel registered embed, encoder, decoder, generator, teacher (frozen), student, then
    pseudo_tokens (ikd/model/ikd_model.py of 0.1.0): its optimiser listed the student before the pseudo-tokens."""
    student = [n for n in names if n.startswith("distiller.student.")]
    pseudo = [n for n in names if n.startswith("translator.pseudo_tokens.")]
    return [n for n in names if n not in student and n not in pseudo] + student + pseudo


def as_written_by_0_1_0(payload: dict) -> dict:
    """A checkpoint of today's code as 0.1.0 wrote it: format 1, one state dict with the CNNs in it, no feature
    shape or version, a recipe without the keys added since, early stopping under best_loss, and a
    position-numbered optimiser state in 0.1.0's parameter order."""
    dropped = ("format", "ikd_version", "read_format", "distiller", "feature_shape")
    old = {k: v for k, v in payload.items() if k not in dropped}
    old["format"] = "ikd-checkpoint-1"
    old["model"] = {**payload["model"], **payload["distiller"]}
    recipe = copy.deepcopy(payload["recipe"])
    for section, keys in ADDED_SINCE_0_1_0.items():
        for key in keys:
            del recipe[section][key]
    old["recipe"] = recipe
    state = dict(payload["train_state"])
    assert state.pop("best_metric") == "loss"
    state["best_loss"] = state.pop("best")
    named = state["optimizer"]
    (group,) = named["param_groups"]
    order = format_1_order(group["params"])
    assert order != group["params"]  # the orders differ: a positional restore would mix the moments up
    state["optimizer"] = {
        "state": {i: named["state"][name] for i, name in enumerate(order)},
        "param_groups": [{**group, "params": list(range(len(order)))}],
    }
    old["train_state"] = state
    return old


def test_a_0_1_0_run_resumes_as_it_was_trained(toy_data: Path, tmp_path: Path) -> None:
    """Run A (today's code, with 0.1.0's behaviour set: t after dropout, best checkpoint on CE + KD) trains 3
    updates; its checkpoint rewritten in 0.1.0's format is run B. Resumed with the recipe file of that time
    (no model.text_feature, no train.best_metric), B takes 0.1.0's behaviour from its checkpoint, every
    parameter gets its own Adam moments back, and B ends bit for bit where A ends."""
    as_0_1_0 = ["model.text_feature=dropout", "train.best_metric=loss"]
    a, b = tmp_path / "a", tmp_path / "b"
    _train(a, toy_data, *SHORT, *as_0_1_0, "train.max_updates=3")
    first = load_checkpoint(a / "checkpoint_last.pt")
    assert first["ikd_version"] == ikd.__version__ and first["updates"] == 3
    b.mkdir()
    torch.save(as_written_by_0_1_0(first), b / "checkpoint1.pt")
    shutil.copyfile(b / "checkpoint1.pt", b / "checkpoint_last.pt")
    shutil.copyfile(a / "metrics.jsonl", b / "metrics.jsonl")

    old = load_checkpoint(b / "checkpoint_last.pt")  # read as 0.1.0 ran
    assert old["ikd_version"] == "0.1.0" and old["read_format"] == "ikd-checkpoint-1"
    assert old["recipe"]["model"]["text_feature"] == "dropout" and old["recipe"]["train"]["best_metric"] == "loss"

    from ikd.train.trainer import Trainer

    recipe = load_recipe(TOY, [f"data.dir={toy_data}", *SHORT, "train.max_updates=3"])
    assert recipe.model.text_feature == "embedding"  # today's default: not what the run used
    trainer = Trainer(recipe, b, device="cpu", resume=True, progress=False, report=lambda _m: None)
    trainer.setup()
    assert trainer.recipe.model.text_feature == "dropout" and trainer.recipe.train.best_metric == "loss"
    optimizer, saved = trainer.stepper.optimizer, first["train_state"]["optimizer"]["state"]
    for name, param in zip(trainer.stepper.param_names, trainer.stepper.params):
        assert torch.equal(optimizer.state[param]["exp_avg"], saved[name]["exp_avg"]), name
        assert torch.equal(optimizer.state[param]["exp_avg_sq"], saved[name]["exp_avg_sq"]), name
    assert trainer.best == first["train_state"]["best"]
    trainer.release_lock()
    del trainer

    _train(a, toy_data, *SHORT, *as_0_1_0, "train.max_updates=6", resume=True)
    _train(b, toy_data, *SHORT, "train.max_updates=6", resume=True)
    want, got = load_checkpoint(a / "checkpoint_last.pt"), load_checkpoint(b / "checkpoint_last.pt")
    assert got["updates"] == want["updates"] == 6 and got["epoch"] == 2
    for key in ("model", "distiller"):
        for name, value in want[key].items():
            assert torch.equal(got[key][name], value), name
    assert got["train_state"]["best_metric"] == "loss" and got["recipe"]["model"]["text_feature"] == "dropout"
    assert got["ikd_version"] == ikd.__version__ and got["read_format"] == "ikd-checkpoint-2"


def test_a_given_key_still_may_not_change_the_model(toy_data: Path, tmp_path: Path) -> None:
    """The run's values fill only the keys the recipe leaves open: a recipe that sets another t changes the
    model, which --resume refuses, naming the key and both values."""
    run = tmp_path / "run"
    _train(run, toy_data, *SHORT, "model.text_feature=dropout", "train.max_updates=1")
    from ikd.train.trainer import train

    recipe = load_recipe(TOY, [f"data.dir={toy_data}", *SHORT, "train.max_updates=2", "model.text_feature=embedding"])
    message = r"changes model\.text_feature \(the run's 'dropout', now 'embedding'\); only train\.\* settings"
    with pytest.raises(IkdError, match=message):
        train(recipe, out=run, device="cpu", resume=True, progress=False, report=lambda _m: None)


def test_every_checkpoint_records_the_version_that_wrote_it(tmp_path: Path) -> None:
    save_checkpoint({"model": {}, "recipe": {}}, tmp_path / "c.pt")
    raw = torch.load(tmp_path / "c.pt", weights_only=True)
    assert raw["ikd_version"] == ikd.__version__ and raw["format"] == "ikd-checkpoint-2"
    torch.save({"format": "ikd-checkpoint-1", "model": {}, "recipe": {"model": {"d_model": 64}}}, tmp_path / "old.pt")
    old = load_checkpoint(tmp_path / "old.pt")
    assert old["ikd_version"] == "0.1.0"
    # the keys 0.1.0 lacked mean 0.1.0's behaviour, the keys it had are kept
    assert old["recipe"]["model"] == {"d_model": 64, "text_feature": "dropout"}
    assert old["recipe"]["train"] == {"best_metric": "loss", "tensorboard": False}
    save_checkpoint(old, tmp_path / "again.pt")  # rewritten by this version: its version, no read_format
    again = torch.load(tmp_path / "again.pt", weights_only=True)
    assert again["ikd_version"] == ikd.__version__ and "read_format" not in again
