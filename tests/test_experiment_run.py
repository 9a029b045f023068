"""`ikd experiment run` with real (tiny) training on the toy set: kill -9 mid-run and rerun, skipping what is
finished; the Slurm code path through submitit's debug executor; N runs at a time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fixtures_train import TINY_MODEL

from ikd.cli import main
from ikd.experiment.spec import load_experiment
from ikd.experiment.steps import run_state
from ikd.train.metrics import read_metrics

pytestmark = pytest.mark.filterwarnings("ignore:images are .* resizing on the device")
REPO = Path(__file__).resolve().parents[1]
TOY = str(REPO / "recipes" / "toy.yaml")
SHORT = ["train.valid_bleu=false", "train.warmup_updates=5", "train.keep_last=2", "train.average_last=2"]


def experiment_file(tmp_path: Path, data: Path, epochs: int, seeds: list[int], systems: list[str]) -> Path:
    all_systems = {
        "text": {"recipe": TOY, "set": [*TINY_MODEL, *SHORT, f"train.max_epochs={epochs}", "model.text_only=true",
                                        "kd.lambda_irm=0", "kd.lambda_iam=0"]},
        "ikd": {"recipe": TOY, "set": [*TINY_MODEL, *SHORT, f"train.max_epochs={epochs}"]},
    }  # fmt: skip
    spec = {
        "name": "tiny",
        "seeds": seeds,
        "baseline": "text" if "text" in systems and len(systems) > 1 else None,
        "systems": {name: {**all_systems[name], "set": [*all_systems[name]["set"], f"data.dir={data}"]}
                    for name in systems},
        "evaluate": {"splits": ["test"], "metrics": ["bleu", "r@1"], "beam": 2},
        "out": str(tmp_path / "runs"),
    }  # fmt: skip
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def stamps(run_dir: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file of a run folder: rewritten files change them."""
    return {
        str(p.relative_to(run_dir)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in run_dir.rglob("*")
        if p.is_file() and p.name != ".lock"
    }


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_kill_mid_run_then_rerun_finishes_without_redoing(toy_data, tmp_path):
    path = experiment_file(tmp_path, toy_data, epochs=4, seeds=[1, 2], systems=["ikd"])
    exp = load_experiment(path)
    first, second = exp.run_dir("ikd", 1), exp.run_dir("ikd", 2)
    cmd = [sys.executable, "-m", "ikd.cli", "experiment", "run", str(path), "--quiet", "--device", "cpu"]
    proc = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # killed once the second run's first epoch checkpoint is written (checkpoint_last.pt is linked after it)
    while not (second / "checkpoint_last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert run_state(exp, "ikd", 1).state == "done"
    assert run_state(exp, "ikd", 2).state == "started" and not (second / "train.json").exists()
    before = stamps(first)
    killed_at = max(r["epoch"] for r in read_metrics(second / "metrics.jsonl") if r["kind"] == "epoch")
    assert killed_at < 4

    assert main(["experiment", "run", str(path), "--quiet", "--device", "cpu"]) == 0
    assert stamps(first) == before  # nothing of the finished run was redone or rewritten
    records = read_metrics(second / "metrics.jsonl")
    resumes = [r for r in records if r["kind"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["epoch"] >= killed_at  # continued, not restarted
    assert [r["epoch"] for r in records if r["kind"] == "epoch"][-1] == 4
    assert run_state(exp, "ikd", 2).state == "done"
    scores = json.loads((second / "eval" / "test.json").read_text())
    assert scores["checkpoint"] == "checkpoint_average.pt" and "bleu" in scores["scores"]
    assert (second / "eval" / "test.retrieval.json").is_file()

    # a third run does nothing at all
    done = stamps(second)
    assert main(["experiment", "run", str(path), "--quiet", "--device", "cpu"]) == 0
    assert stamps(second) == done and stamps(first) == before


def test_slurm_path_through_submitit_debug_executor(toy_data, tmp_path):
    pytest.importorskip("submitit")
    from ikd.experiment.slurm import submit

    path = experiment_file(tmp_path, toy_data, epochs=1, seeds=[1], systems=["text"])
    exp = load_experiment(path)
    said: list[str] = []
    states = submit(exp, exp.runs(), said.append, None, 0, "0:10:00", cluster="debug")
    assert states["text", 1].endswith("submitted") and run_state(exp, "text", 1).state == "done"
    record = json.loads((exp.run_dir("text", 1) / "slurm.json").read_text())
    assert record["cluster"] == "debug"
    # run again: collects, submits nothing
    assert submit(exp, exp.runs(), said.append, None, 0, "0:10:00", cluster="debug") == {("text", 1): "done"}


def test_parallel_local_runs_and_the_table(toy_data, tmp_path, capsys):
    path = experiment_file(tmp_path, toy_data, epochs=1, seeds=[1, 2], systems=["text"])
    assert main(["experiment", "run", str(path), "--jobs", "2", "--quiet", "--device", "cpu"]) == 0
    exp = load_experiment(path)
    assert all(run_state(exp, *run).state == "done" for run in exp.runs())
    assert (exp.run_dir("text", 1) / "log.txt").is_file()
    capsys.readouterr()
    assert main(["experiment", "table", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| text   | 2/2  |" in out and " ± " in out and "| n/a" in out
    assert main(["experiment", "plot", str(path), "--out", str(tmp_path / "curves.pdf")]) == 0
    assert (tmp_path / "curves.pdf").stat().st_size > 1000
