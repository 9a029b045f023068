"""Short training runs on the toy set: learning, kill-and-resume, NaN handling, data without images."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fixtures_train import TINY_MODEL, one_thread, toy_recipe

from ikd.checkpoint import load_checkpoint
from ikd.cli import main
from ikd.errors import IkdError
from ikd.train.metrics import read_metrics
from ikd.train.trainer import train

pytestmark = pytest.mark.filterwarnings("ignore:images are .* resizing on the device")
REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# The reference run: the tiny IKD model, 4 epochs of the 300-sentence toy set, a log record per update.
RUN = [*TINY_MODEL, "train.max_epochs=4", "train.lr=0.003", "train.warmup_updates=5", "train.log_every=1",
       "train.keep_last=4", "train.average_last=2"]  # fmt: skip


def quiet(_msg: str) -> None:
    pass


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def reference_run(toy_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    with one_thread():
        train(toy_recipe(toy_data, *RUN), out=out, device="cpu", progress=False, report=quiet)
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_toy_run_learns_and_writes_the_run_folder(reference_run, toy_data):
    records = read_metrics(reference_run / "metrics.jsonl")
    steps = [r for r in records if r["kind"] == "train"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    first, last = steps[:3], steps[-3:]
    # CE, the student's image-space loss and the feature losses (IrM: teacher vs student features; IaM:
    # teacher features of the real vs the imagined image) all fall
    for key, factor in (("ce", 0.85), ("image", 0.5), ("irm_feat", 0.95), ("iam_feat", 0.5)):
        assert _mean([r[key] for r in last]) < factor * _mean([r[key] for r in first]), key
    assert epochs[-1]["valid_ce"] < epochs[0]["valid_ce"] and epochs[-1]["train_ce"] < epochs[0]["train_ce"]
    assert epochs[0]["train_ce"] == pytest.approx(_mean([r["ce"] for r in steps if r["epoch"] == 1]), rel=1e-4)
    for key in ("lr", "loss", "irm", "iam", "tokens_per_s", "sentences_per_s", "elapsed"):
        assert key in steps[0]
    for key in ("train_loss", "train_ce", "valid_loss", "valid_irm", "valid_iam", "valid_bleu", "tokens_per_s"):
        assert key in epochs[0]
    names = {p.name for p in reference_run.iterdir()}
    assert {"checkpoint1.pt", "checkpoint4.pt", "checkpoint_last.pt", "checkpoint_best.pt"} <= names
    assert {"checkpoint_average.pt", "metrics.jsonl", "recipe.yaml"} <= names
    last_ckpt = load_checkpoint(reference_run / "checkpoint_last.pt")
    assert last_ckpt["epoch"] == 4 and last_ckpt["updates"] == epochs[-1]["updates"]
    assert last_ckpt["recipe"]["model"]["d_model"] == 32 and last_ckpt["recipe"]["vision"]["image_size"] == 32
    assert last_ckpt["bpe_codes"] == (toy_data / "en-de" / "bpe.codes").read_text(encoding="utf-8")
    assert last_ckpt["vocab"] == (toy_data / "en-de" / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert last_ckpt["bpe_glossaries"] == ["[U]"]  # from the pair folder's bpe.json: the mask token stays whole
    state = last_ckpt["train_state"]
    assert {"optimizer", "schedule", "rng", "best", "best_metric", "bad_epochs"} <= set(state)
    assert state["best_metric"] == "ce"  # the default: CE alone, which text can reduce, picks the best epoch
    best_epoch = min(epochs, key=lambda r: r["valid_ce"])
    assert state["best"] == pytest.approx(best_epoch["valid_ce"])
    assert load_checkpoint(reference_run / "checkpoint_best.pt")["epoch"] == best_epoch["epoch"]
    # the translator's weights and the distiller's apart: translation never reads the CNNs
    assert {k.split(".")[0] for k in last_ckpt["distiller"]} == {"teacher", "student"}
    assert not any(k.startswith(("teacher.", "student.")) for k in last_ckpt["model"])
    assert last_ckpt["feature_shape"] == [512, 1, 1]
    assert all(r["kd_ce"] == pytest.approx((r["irm"] + r["iam"]) / r["ce"], rel=1e-4) for r in steps)
    average = load_checkpoint(reference_run / "checkpoint_average.pt")
    assert "train_state" not in average and average["averaged_epochs"] == [3, 4]
    c3 = load_checkpoint(reference_run / "checkpoint3.pt")["model"]
    key = "embed.embed.weight"
    assert torch.allclose(average["model"][key], (c3[key] + last_ckpt["model"][key]) / 2, atol=1e-6)


def test_rerun_without_resume_refuses_to_overwrite(reference_run, toy_data):
    with pytest.raises(IkdError, match="--resume"):
        train(toy_recipe(toy_data, *RUN), out=reference_run, device="cpu", progress=False, report=quiet)


def test_resume_refuses_a_recipe_that_changes_the_model(reference_run, toy_data):
    recipe = toy_recipe(toy_data, *RUN, "model.d_model=64", "train.max_epochs=5")
    with pytest.raises(IkdError, match=r"changes model\.d_model"):
        train(recipe, out=reference_run, device="cpu", resume=True, progress=False, report=quiet)


def test_kill_and_resume_equals_uninterrupted(reference_run, toy_data, tmp_path):
    """A run killed with SIGKILL after its second checkpoint, then resumed, ends where the reference ends."""
    out = tmp_path / "run"
    code = (
        "import sys, torch\n"
        "torch.set_num_threads(1)\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from fixtures_train import toy_recipe\n"
        "from ikd.train.trainer import train\n"
        f"train(toy_recipe({str(toy_data)!r}, *{RUN!r}), out={str(out)!r}, device='cpu', progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "checkpoint2.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoint_last.pt").exists()
    assert not (out / "checkpoint_average.pt").exists()  # it did not finish
    result = train(toy_recipe(toy_data, *RUN), out=out, device="cpu", resume=True, progress=False, report=quiet)
    assert result.epochs == 4
    want = load_checkpoint(reference_run / "checkpoint_last.pt")
    got = load_checkpoint(out / "checkpoint_last.pt")
    assert got["updates"] == want["updates"]
    for name, value in want["model"].items():
        assert torch.allclose(got["model"][name].float(), value.float(), atol=1e-5, rtol=1e-4), name
    want_epochs = [r for r in read_metrics(reference_run / "metrics.jsonl") if r["kind"] == "epoch"]
    got_epochs = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "epoch"]
    assert got_epochs[-1]["valid_loss"] == pytest.approx(want_epochs[-1]["valid_loss"], rel=1e-4)
    assert any(r["kind"] == "resume" for r in read_metrics(out / "metrics.jsonl"))


class _InfiniteGradient(torch.autograd.Function):
    """Identity forward (the loss stays finite), an infinite gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


@pytest.mark.parametrize("poison", ["loss", "gradient", "gradient, no clipping"])
def test_nan_loss_stops_with_the_update_and_keeps_the_good_checkpoint(toy_data, tmp_path, monkeypatch, poison):
    """A NaN loss, or a finite loss whose gradient overflows (fp32: no scaler to skip the step), stops the run
    naming that very update; the last good checkpoint is kept and no non-finite weights are written."""
    import ikd.train.step as step

    real = step.objective
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        losses = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 8:  # the 8th update, in epoch 2
            if poison == "loss":
                losses.loss = losses.loss * float("nan")
            else:
                losses.loss = _InfiniteGradient.apply(losses.loss)
        return losses

    monkeypatch.setattr(step, "objective", poisoned)
    clip = ["train.clip_norm=0"] if "no clipping" in poison else []
    recipe = toy_recipe(toy_data, *TINY_MODEL, "model.text_only=true", "train.max_epochs=3", "train.log_every=3", *clip)
    out = tmp_path / "run"
    with pytest.raises(IkdError, match=r"not finite at update 8 \(epoch 2\)") as err:
        train(recipe, out=out, device="cpu", progress=False, report=quiet)
    assert "checkpoint_last.pt (epoch 1) is kept" in str(err.value)
    kept = load_checkpoint(out / "checkpoint_last.pt")
    assert kept["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())
    assert not (out / "checkpoint2.pt").exists()


@pytest.fixture()
def toy_without_images(toy_data, tmp_path) -> Path:
    data = tmp_path / "noimg"
    shutil.copytree(toy_data, data)
    shutil.rmtree(data / "images")
    return data


def test_incomplete_or_stale_bpe_folders_are_refused(toy_data, tmp_path):
    """A pair folder without bpe.json (an interrupted `ikd bpe`), or segmented from text that `ikd prepare`
    has since replaced, is an error that says to rerun `ikd bpe`, not a silent mix of old and new files."""
    data = tmp_path / "data"
    shutil.copytree(toy_data, data)
    recipe = toy_recipe(data, *TINY_MODEL, "model.text_only=true", "train.max_epochs=1")
    state = data / "en-de" / "bpe.json"
    saved = state.read_text()
    state.unlink()
    with pytest.raises(IkdError, match=r"bpe\.json: not found: .* is incomplete .* run `ikd bpe --data"):
        train(recipe, out=tmp_path / "a", device="cpu", progress=False, report=quiet)
    state.write_text(saved)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["splits"]["train"]["langs"]["en"]["sha256"] = "0" * 64  # as if train.en had been prepared anew
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IkdError, match=r"segmented from other text than .* holds now; run `ikd bpe"):
        train(recipe, out=tmp_path / "b", device="cpu", progress=False, report=quiet)


def test_text_only_recipe_trains_without_images_and_applies_set(toy_without_images, tmp_path, capfd):
    out = tmp_path / "text"
    sets = [f"data.dir={toy_without_images}", "data.num_workers=0", *TINY_MODEL, "train.max_epochs=1"]
    args = ["train", str(REPO / "recipes" / "en-de-text.yaml"), "--out", str(out), "--device", "cpu", "-q"]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0, capfd.readouterr().err
    saved = (out / "recipe.yaml").read_text()
    assert "d_model: 32" in saved and str(toy_without_images) in saved
    ckpt = load_checkpoint(out / "checkpoint_last.pt")
    assert ckpt["recipe"]["model"]["text_only"] and ckpt["recipe"]["model"]["d_model"] == 32
    assert not any(k.startswith(("teacher.", "student.", "generator.")) for k in ckpt["model"])


def test_ikd_recipe_on_data_without_images_says_how_to_go_text_only(toy_without_images, capfd):
    args = ["train", str(REPO / "recipes" / "en-de.yaml"), "--set", f"data.dir={toy_without_images}"]
    assert main(args) == 1
    err = capfd.readouterr().err
    assert "no images" in err and "model.text_only=true" in err and "en-de.yaml" in err


def test_overlong_pairs_error_names_line_or_are_skipped(toy_data):
    from ikd.train.data import load_run_data

    recipe = toy_recipe(toy_data, "data.max_len=10")
    with pytest.raises(IkdError, match=r"split 'train' line \d+: .*data.max_len=10.*skip_overlong"):
        load_run_data(recipe, "toy.yaml")
    notes = []
    data = load_run_data(toy_recipe(toy_data, "data.max_len=10", "data.skip_overlong=true"), "toy.yaml", notes.append)
    assert any("dropped" in n and "'train'" in n for n in notes)
    assert 0 < len(data.train.keep) < len(data.train.data)
    assert int(data.train.src_lens.max()) <= 10 and int(data.train.tgt_lens.max()) <= 10


def test_ddp_two_processes_gloo(toy_data, tmp_path):
    """torchrun with 2 CPU processes (gloo): every rank takes half the batches, rank 0 writes once."""
    from ikd.train.data import load_run_data

    out = tmp_path / "ddp"
    sets = [f"data.dir={toy_data}", "data.num_workers=0", *TINY_MODEL, "train.max_epochs=2", "train.log_every=2"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "ikd.train",
           str(REPO / "recipes" / "en-de-text.yaml"), "--out", str(out), "--device", "cpu"]  # fmt: skip
    for item in sets:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_metrics(out / "metrics.jsonl")
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]  # written once (rank 0 only)
    from ikd.recipe import load_recipe

    recipe = load_recipe(REPO / "recipes" / "en-de-text.yaml", sets)
    split = load_run_data(recipe, "en-de-text.yaml").train
    per_epoch = [len(split.batches(1024, 8, True, 1, e)) // 2 for e in (1, 2)]
    assert epochs[-1]["updates"] == sum(per_epoch)
    last = load_checkpoint(out / "checkpoint_last.pt")
    assert last["updates"] == sum(per_epoch)
    # every rank's RNG state is kept, so that --resume continues each rank's own stream
    ranks = last["train_state"]["rng_ranks"]
    assert len(ranks) == 2 and all(set(r) >= {"torch", "python", "numpy"} for r in ranks)
    assert done.stdout.count("done:") + done.stderr.count("done:") == 1
    assert json.dumps(epochs[-1])  # finite, serialisable figures
