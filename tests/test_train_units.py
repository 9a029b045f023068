"""Training parts without a training run: recipe errors, schedule, loss, checkpoint management, averaging."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from ikd.checkpoint import load_checkpoint, save_checkpoint
from ikd.cli import main
from ikd.errors import IkdError
from ikd.train.checkpoints import CheckpointManager, average_checkpoints, check_finite, epoch_checkpoints
from ikd.train.loss import label_smoothed_ce
from ikd.train.schedule import InverseSqrtSchedule

REPO = Path(__file__).resolve().parents[1]


# ---- recipes and the command line --------------------------------------------------------------------
def test_train_unknown_key_names_key_and_file(tmp_path, capfd):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("train:\n  lr: 0.001\n  learning_rate: 0.1\n")
    assert main(["train", str(recipe)]) == 1
    err = capfd.readouterr().err
    assert "train.learning_rate" in err and "bad.yaml" in err


def test_train_wrong_type_names_key_and_file(tmp_path, capfd):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("train:\n  max_tokens: lots\n")
    assert main(["train", str(recipe)]) == 1
    err = capfd.readouterr().err
    assert "train.max_tokens" in err and "typo.yaml" in err and "integer" in err


def test_train_bad_set_override(capfd):
    assert main(["train", str(REPO / "recipes" / "en-de.yaml"), "--set", "kd.distance=l3"]) == 1
    err = capfd.readouterr().err
    assert "kd.distance" in err and "l3" in err
    assert main(["train", str(REPO / "recipes" / "en-de.yaml"), "--set", "nodot=1"]) == 1
    assert "section.key=value" in capfd.readouterr().err
    # a misspelt key of --set is the override's fault, not the recipe file's
    assert main(["train", str(REPO / "recipes" / "en-de.yaml"), "--set", "kd.distanse=l1"]) == 1
    err = capfd.readouterr().err
    assert "--set 'kd.distanse=l1': unknown key 'kd.distanse' (known keys of 'kd':" in " ".join(err.split())
    assert main(["train", str(REPO / "recipes" / "en-de.yaml"), "--set", "kd.grain=cube"]) == 1
    err = capfd.readouterr().err
    assert "--set kd.grain" in err and "cube" in err and "en-de.yaml" not in err
    assert main(["train", str(REPO / "recipes" / "en-de.yaml"), "--set", "kd.grain=block", "kd.grain=model"]) == 1
    assert "--set kd.grain: given more than once" in capfd.readouterr().err
    assert main(["train", str(REPO / "recipes")]) == 1
    assert "recipes: is a folder, not a recipe file" in capfd.readouterr().err


def test_set_can_correct_a_value_of_the_file(tmp_path):
    """The recipe is validated once, after the overrides: --set may fix what the file got wrong."""
    from ikd.recipe import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("kd:\n  grain: cube\n")
    assert load_recipe(recipe, ["kd.grain=block"]).kd.grain == "block"
    with pytest.raises(IkdError, match=r"r\.yaml: kd\.grain: 'cube' is not one of"):
        load_recipe(recipe)


def test_set_takes_several_overrides_as_the_recipes_document(capfd):
    """`--set a=1 b=2` (the recipes' comment lines) applies both; so do overrides after the recipe."""
    from ikd.commands.train import _split_arguments

    recipe = str(REPO / "recipes" / "en-de.yaml")
    assert main(["train", recipe, "--set", "kd.distance=l1", "kd.grain=nonsense"]) == 1
    err = capfd.readouterr().err
    assert "kd.grain" in err and "nonsense" in err
    assert _split_arguments(["kd.a=1", recipe, "train.b=x.yaml"]) == (Path(recipe), ["kd.a=1", "train.b=x.yaml"])
    assert main(["train", recipe, recipe]) == 1
    assert "one RECIPE.yaml expected, got 2" in capfd.readouterr().err


def test_recipes_load_and_ablation_lines_parse():
    from ikd.recipe import load_recipe

    main_row = load_recipe(REPO / "recipes" / "en-de.yaml")
    assert main_row.vision.backbone == "resnet50" and main_row.vision.teacher_weights == "IMAGENET1K_V1"
    assert (main_row.kd.grain, main_row.kd.distance, main_row.kd.lambda_irm, main_row.kd.lambda_iam) == (
        "model",
        "l2",
        1.0,
        1.0,
    )
    t = main_row.train
    assert (t.lr, t.warmup_updates, t.warmup_init_lr, t.max_tokens, t.max_updates, t.patience, t.seed) == (
        0.004,
        2000,
        1e-7,
        1024,
        70000,
        10,
        1,
    )
    assert t.average_last == 10 and main_row.model.norm == "pre" and main_row.model.dropout == 0.3
    assert load_recipe(REPO / "recipes" / "en-fr.yaml").data.tgt == "fr"
    assert load_recipe(REPO / "recipes" / "en-de-text.yaml").model.text_only
    # every documented --set line of the ablation block is a valid override
    sets = []
    for line in (REPO / "recipes" / "en-de.yaml").read_text().splitlines():
        if line.startswith("#") and "--set" in line:
            for chunk in line.split("--set")[1:]:
                sets.append([w for w in chunk.replace("|", " ").split() if "=" in w and "." in w.split("=")[0]])
    assert len(sets) >= 10
    for group in sets:
        for item in group:
            load_recipe(REPO / "recipes" / "en-de.yaml", [item])


# ---- schedule and loss -------------------------------------------------------------------------------
def test_inverse_sqrt_schedule_matches_hand_computation():
    s = InverseSqrtSchedule(lr=0.004, warmup_updates=2000, warmup_init_lr=1e-7)
    assert s.lr_at(0) == pytest.approx(1e-7)
    assert s.lr_at(1) == pytest.approx(1e-7 + (0.004 - 1e-7) / 2000)
    assert s.lr_at(1000) == pytest.approx((1e-7 + 0.004) / 2)
    assert s.lr_at(2000) == pytest.approx(0.004)
    assert s.lr_at(8000) == pytest.approx(0.002)
    assert s.lr_at(40000) == pytest.approx(0.000894, abs=5e-7)  # the authors' log (docs/differences.md)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s.apply(opt)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-7)
    for _ in range(3):
        s.step(opt)
    assert opt.param_groups[0]["lr"] == pytest.approx(s.lr_at(3))
    restored = InverseSqrtSchedule(0.004, 2000, 1e-7)
    restored.load_state_dict(s.state_dict())
    assert restored.updates == 3


def test_ddp_normalises_the_ce_by_the_tokens_of_all_ranks():
    """Under DDP the CE is divided by the step's token count over all ranks (times the world size, which
    DDP's gradient average divides out again): with another rank holding 30 more tokens, this rank's CE is
    its summed CE over (n + 30) / 2, not its own per-token mean."""
    import numpy as np

    from ikd.data.dataset import Batch
    from ikd.recipe import Recipe
    from ikd.train.objective import build_training_model, objective

    r = Recipe()
    r.model.d_model, r.model.heads, r.model.ffn, r.model.encoder_layers, r.model.decoder_layers = 16, 2, 32, 1, 1
    r.model.text_only, r.model.dropout = True, 0.0
    torch.manual_seed(0)
    model = build_training_model(r, 20).eval()
    src = torch.tensor([[5, 6, 7, 2], [8, 9, 2, 1]])
    tgt_out = torch.tensor([[10, 11, 2], [12, 2, 1]])
    tgt_in = torch.tensor([[2, 10, 11], [2, 12, 1]])
    batch = Batch(src, tgt_in, tgt_out, None, 5, np.arange(2))
    alone = objective(model, batch, r, 1, None)
    same = objective(model, batch, r, 1, None, reduce_sum=lambda t: t * 2, world=2)
    bigger = objective(model, batch, r, 1, None, reduce_sum=lambda t: t + 30, world=2)
    assert torch.allclose(same.ce, alone.ce)  # both ranks with 5 tokens: the global mean is the local one
    assert torch.allclose(bigger.ce, alone.ce * 5 / ((5 + 30) / 2))


def test_label_smoothed_ce_matches_hand_computation():
    torch.manual_seed(3)
    eps, pad, vocab = 0.1, 1, 6
    logits = torch.randn(2, 3, vocab)
    target = torch.tensor([[4, 2, pad], [5, 0, 3]])
    loss, nll = label_smoothed_ce(logits, target, eps, pad)
    want_loss = want_nll = 0.0
    for b in range(2):
        for u in range(3):
            y = int(target[b, u])
            if y == pad:
                continue
            logp = [float(v) - math.log(sum(math.exp(float(w)) for w in logits[b, u])) for v in logits[b, u]]
            want_nll += -logp[y]
            want_loss += (1 - eps) * -logp[y] + eps / vocab * sum(-v for v in logp)
    assert float(loss) == pytest.approx(want_loss, rel=1e-5)
    assert float(nll) == pytest.approx(want_nll, rel=1e-5)
    ref = torch.nn.functional.cross_entropy(
        logits.reshape(-1, vocab), target.reshape(-1), ignore_index=pad, label_smoothing=eps, reduction="sum"
    )
    assert float(loss) == pytest.approx(float(ref), rel=1e-5)
    plain, plain_nll = label_smoothed_ce(logits, target, 0.0, pad)
    assert float(plain) == pytest.approx(want_nll, rel=1e-5) == float(plain_nll)


# ---- checkpoints -------------------------------------------------------------------------------------
def _payload(epoch: int, w: torch.Tensor, tracked: int) -> dict:
    return {
        "model": {"w": w, "bn.num_batches_tracked": torch.tensor(tracked)},
        "recipe": {"train": {"seed": 1}},
        "vocab": ["<s>", "<pad>", "</s>", "<unk>", "a"],
        "bpe_codes": "#version: 0.2\na b\n",
        "src": "en",
        "tgt": "de",
        "epoch": epoch,
        "updates": 10 * epoch,
        "train_state": {"best_loss": 1.0},
    }


def test_checkpoint_manager_keeps_last_n_and_links_best_last(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for epoch in range(1, 5):
        manager.save_epoch(_payload(epoch, torch.full((2,), float(epoch)), epoch), epoch, best=epoch == 2)
    assert [e for e, _ in epoch_checkpoints(tmp_path)] == [3, 4]
    assert load_checkpoint(tmp_path / "checkpoint_last.pt")["epoch"] == 4
    assert load_checkpoint(tmp_path / "checkpoint_best.pt")["epoch"] == 2  # survives pruning of checkpoint2.pt
    # keep at least what the averaging needs
    assert CheckpointManager(tmp_path, keep_last=2, average_last=5).keep == 5


def test_nan_weights_are_never_saved(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    manager.save_epoch(_payload(1, torch.ones(2), 1), 1, best=True)
    with pytest.raises(IkdError, match="not finite"):
        manager.save_epoch(_payload(2, torch.tensor([1.0, float("nan")]), 2), 2, best=True)
    assert load_checkpoint(tmp_path / "checkpoint_last.pt")["epoch"] == 1
    assert not (tmp_path / "checkpoint2.pt").exists()
    with pytest.raises(IkdError, match="w"):
        check_finite({"w": torch.tensor([float("inf")])}, "test")


def test_average_is_the_parameter_mean(tmp_path, capfd):
    weights = [torch.tensor([1.0, 2.0, 4.0]), torch.tensor([3.0, 6.0, 0.0]), torch.tensor([5.0, 1.0, 2.0])]
    for epoch, w in enumerate(weights, start=1):
        save_checkpoint(_payload(epoch, w, 100 * epoch), tmp_path / f"checkpoint{epoch}.pt")
    path = average_checkpoints(tmp_path, last=2)
    avg = load_checkpoint(path)
    assert torch.allclose(avg["model"]["w"], torch.tensor([4.0, 3.5, 1.0]))  # (w2 + w3) / 2 by hand
    assert int(avg["model"]["bn.num_batches_tracked"]) == 300  # integer buffers: the newest
    assert "train_state" not in avg and avg["averaged_epochs"] == [2, 3]
    assert avg["vocab"][-1] == "a" and avg["bpe_codes"].startswith("#version") and avg["epoch"] == 3
    # the CLI helper: all three
    out = tmp_path / "cli"
    shutil.copytree(tmp_path, out, ignore=shutil.ignore_patterns("cli", "checkpoint_average.pt"))
    assert main(["train", "--average-only", str(out), "--average-last", "3"]) == 0
    assert "the average of epochs 1, 2, 3)" in capfd.readouterr().err
    avg3 = load_checkpoint(out / "checkpoint_average.pt")["model"]["w"]
    assert torch.allclose(avg3, torch.tensor([3.0, 3.0, 2.0]))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        main(["train", "--average-only", str(out), "--average-last", "5", "--average-out", str(tmp_path / "5.pt")]) == 0
    )
    assert "only 3 of the 5 asked were there" in capfd.readouterr().err
    assert main(["train", "--average-only", str(empty)]) == 1
    assert "no epoch checkpoints" in capfd.readouterr().err
    # an upper bound, as fairseq's --checkpoint-upper-bound (the authors' ablations averaged epochs 30-39)
    chosen = tmp_path / "upto2.pt"
    args = ["train", "--average-only", str(out), "--average-last", "2", "--upper-bound", "2"]
    assert main([*args, "--average-out", str(chosen)]) == 0
    assert "the average of epochs 1, 2" in capfd.readouterr().err
    upto2 = load_checkpoint(chosen)
    assert upto2["averaged_epochs"] == [1, 2] and torch.allclose(upto2["model"]["w"], torch.tensor([2.0, 4.0, 2.0]))
    assert main(["train", "--average-only", str(out), "--average-last", "3", "--upper-bound", "2"]) == 1
    assert "only 2 epoch checkpoints of epoch <= 2 are kept, 3 asked" in capfd.readouterr().err
    assert main(["train", str(REPO / "recipes" / "toy.yaml"), "--upper-bound", "2"]) == 1
    assert "go with --average-only" in capfd.readouterr().err
