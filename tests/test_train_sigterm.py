"""SIGTERM (Slurm's preemption signal) stops a training with exit status 143 and one line saying what is kept; the
run folder's lock is released, and --resume ends with the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from fixtures_train import TINY_MODEL, one_thread, toy_recipe

from ikd.checkpoint import load_checkpoint
from ikd.cli import main
from ikd.errors import Terminated
from ikd.recipe import dump_recipe
from ikd.train.lock import LOCK
from ikd.train.metrics import read_metrics
from ikd.train.signals import SigtermGuard
from ikd.train.trainer import train

REPO = Path(__file__).resolve().parents[1]
# short batches: about 18 updates per epoch, so that the signal lands inside one; one DataLoader worker, which
# gets the signal too (Slurm signals every process of the job)
RUN = [*TINY_MODEL, "model.text_only=true", "train.max_epochs=3", "train.max_tokens=256", "train.valid_bleu=false",
       "train.log_every=1", "train.keep_last=3", "train.average_last=2", "data.num_workers=1"]  # fmt: skip


def test_a_sigterm_while_a_checkpoint_is_written_waits_for_it():
    guard = SigtermGuard()
    done = []
    before = signal.getsignal(signal.SIGTERM)
    with guard.installed():
        with pytest.raises(Terminated):
            with guard.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler has run by now: it only noted the signal
                done.append("written")
        assert done == ["written"]
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) is before  # put back


@pytest.fixture(scope="module")
def reference(toy_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    with one_thread():
        train(toy_recipe(toy_data, *RUN), out=out, device="cpu", progress=False, report=lambda _m: None)
    return out


def _epoch_records(path: Path, kind: str) -> list[dict]:
    try:
        return [r for r in read_metrics(path) if r["kind"] == kind]
    except (OSError, json.JSONDecodeError):  # not there yet, or a line being written
        return []


def test_sigterm_exits_143_in_one_line_and_resume_ends_as_uninterrupted(reference, toy_data, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(dump_recipe(toy_recipe(toy_data, *RUN)), encoding="utf-8")
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "ikd.cli", "train", str(recipe), "--out", str(run), "--device", "cpu", "-q"]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    # once epoch 2 has begun: epoch 1's checkpoint is kept, epoch 2's updates are lost
    while proc.poll() is None and time.time() < deadline:
        if any(r["epoch"] == 2 for r in _epoch_records(run / "metrics.jsonl", "train")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()
    os.killpg(proc.pid, signal.SIGTERM)  # the training process and its DataLoader worker, as Slurm does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    kept = load_checkpoint(run / "checkpoint_last.pt")["epoch"]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert re.fullmatch(
        rf"ikd: stopped by SIGTERM at update \d+ \(epoch {kept + 1}\); {re.escape(str(run / 'checkpoint_last.pt'))} "
        rf"\(epoch {kept}\) is kept: continue with ikd train --resume",
        lines[0],
    ), lines[0]
    assert kept >= 1 and not (run / LOCK).exists() and not list(run.glob(".*.tmp"))

    with one_thread():
        assert main(["train", str(recipe), "--out", str(run), "--device", "cpu", "-q", "--resume"]) == 0
    want, got = load_checkpoint(reference / "checkpoint_last.pt"), load_checkpoint(run / "checkpoint_last.pt")
    assert got["epoch"] == 3 and got["updates"] == want["updates"]
    for name, value in want["model"].items():
        assert torch.equal(got["model"][name], value), name
    assert want["train_state"]["best"] == got["train_state"]["best"]
    want_epochs = _epoch_records(reference / "metrics.jsonl", "epoch")
    got_epochs = _epoch_records(run / "metrics.jsonl", "epoch")
    assert [r["epoch"] for r in got_epochs] == [*range(1, kept + 1), *range(kept + 1, 4)]
    for a, b in zip(want_epochs, got_epochs):  # the same validation figures, epoch by epoch
        assert (a["epoch"], a["updates"], a["valid_ce"]) == (b["epoch"], b["updates"], b["valid_ce"])
    average = load_checkpoint(run / "checkpoint_average.pt")
    assert average["averaged_epochs"] == [2, 3]


def _thread_failure(exc: BaseException, filename: str):
    """What threading.excepthook receives when `exc` is raised in code of `filename` in another thread."""
    namespace: dict = {}
    exec(compile("def serve(exc):\n    raise exc\n", filename, "exec"), namespace)  # noqa: S102
    seen = []
    previous = threading.excepthook
    threading.excepthook = seen.append
    try:
        worker = threading.Thread(target=namespace["serve"], args=(exc,))
        worker.start()
        worker.join()
    finally:
        threading.excepthook = previous
    return seen[0]


def test_descriptor_sharer_resets_are_quiet_and_other_thread_errors_are_not(monkeypatch):
    from ikd.train.signals import quiet_descriptor_sharer_resets

    shown = []
    monkeypatch.setattr(threading, "excepthook", shown.append)
    quiet_descriptor_sharer_resets()
    quiet_descriptor_sharer_resets()  # once only: a second call wraps nothing more
    sharer = "/usr/lib/python3.11/multiprocessing/resource_sharer.py"
    reset = _thread_failure(ConnectionResetError(104, "Connection reset by peer"), sharer)
    other_error = _thread_failure(ValueError("a bug"), sharer)
    other_thread = _thread_failure(ConnectionResetError(104, "reset"), "/srv/app/server.py")
    for failure in (reset, other_error, other_thread):
        threading.excepthook(failure)
    assert shown == [other_error, other_thread]
