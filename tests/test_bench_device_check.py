"""The GPU check's pieces on the CPU with tiny sizes: bench/train_step.py's JSON (fields, warm-up of every batch
size, MFU from a given peak, the device peak table), bench/gpu_profile.py's tables, and the plumbing of
bench/device_check.sh (its step budgets, the deadline, a step that runs out of time). What needs CUDA is in
tests/test_cuda.py."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "device_check.sh"
# The same tiny model as tests/fixtures_train.py's TINY_MODEL, as bench script arguments.
TINY = [
    "--set", "vision.backbone=resnet18", "--set", "model.d_model=32", "--set", "model.ffn=64", "--set", "model.heads=2",
    "--set", "model.encoder_layers=1", "--set", "model.decoder_layers=1", "--image-size", "32", "--threads", "1",
]  # fmt: skip
OUT_FILES = {
    "env.txt",
    "device_check.log",
    "steps.json",
    "tests.xml",
    "train_step.json",
    "train_step_text8192.json",
    "profile.txt",
    "translate_speed.json",
}


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ts():
    return _bench("train_step")


@pytest.mark.parametrize(
    "name, tflops",
    [
        ("NVIDIA H200", 989.4),
        ("NVIDIA H200 NVL", 835.5),
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.5),
        ("NVIDIA H100 NVL", 835.5),
        ("NVIDIA GH200 480GB", 989.4),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A100 80GB PCIe", 312.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", 362.05),
        ("NVIDIA L40", 181.05),
        ("NVIDIA A10", 125.0),
        ("NVIDIA A10G", None),  # not the A10's figure: no entry
        ("Tesla V100-SXM2-16GB", None),  # no bf16 tensor cores
        ("Tesla T4", None),
    ],
)
def test_dense_bf16_peak_by_device_name(ts, name: str, tflops: float | None) -> None:
    found, entry = ts.dense_bf16_peak(name)
    assert found == tflops
    assert (entry is None) == (tflops is None)


def test_mfu_is_counted_flops_over_time_over_the_peak(ts) -> None:
    assert ts.mfu(4e12, 2.0, 10.0) == pytest.approx(0.2)
    assert ts.mfu(4e12, 2.0, None) is None


def test_every_batch_size_of_the_timed_steps_is_warmed_up(ts) -> None:
    sizes = [8, 8, 16, 24, 8, 16, 32, 24]
    batches = [SimpleNamespace(indices=list(range(n)), tag=i) for i, n in enumerate(sizes)]
    warm, timed = ts.split_warmup(batches, 2)
    assert [b.tag for b in timed] == [2, 3, 4, 5, 6, 7]  # the timed steps are unchanged
    assert [b.tag for b in warm] == [0, 1, 2, 3, 6]  # + the first batch of each size not yet seen
    assert {len(b.indices) for b in timed} <= {len(b.indices) for b in warm}


def test_train_step_json_on_the_cpu(ts, toy_data: Path, tmp_path: Path) -> None:
    """The three models' results, written to --json; MFU from the given peak, the matmul ratio beside it."""
    out = tmp_path / "train_step.json"
    args = [
        "--device", "cpu", "--data", str(toy_data), "--models", "full,text,resnet50", "--steps", "3",
        "--warmup", "1", "--max-tokens", "48", "--matmul-size", "64", "--resnet-batch", "2", "--resnet-size", "32",
        "--resnet-steps", "1", "--resnet-warmup", "1", "--peak-tflops", "0.5", "--json", str(out), *TINY,
    ]  # fmt: skip
    returned = ts.main(args)
    payload = json.loads(out.read_text())
    assert payload == json.loads(json.dumps(returned))
    assert payload["device"] == "cpu" and payload["peak_tflops"] == 0.5 and payload["peak_source"] == "--peak-tflops"
    assert payload["matmul"]["size"] == 64 and payload["matmul"]["tflops"] > 0
    results = {r["model"]: r for r in payload["results"]}
    assert list(results) == ["full", "text", "resnet50"]
    common = {"label", "params_m", "amp", "steps", "ms_per_step", "loss", "memory_gib", "flop_per_step"}
    common |= {"achieved_tflops", "mfu", "of_measured_matmul", "sync_debug", "warmup_steps"}
    for r in results.values():
        assert common <= set(r), common - set(r)
        assert r["amp"] == "off" and r["sync_debug"] is False and r["flop_per_step"] > 0
        assert r["mfu"] == pytest.approx(r["achieved_tflops"] / 0.5)
        assert r["of_measured_matmul"] == pytest.approx(r["achieved_tflops"] / payload["matmul"]["tflops"])
    for which in ("full", "text"):
        r = results[which]
        assert r["steps"] == 3 and r["unwarmed_timed_batch_sizes"] == 0
        assert r["sentences_per_s"] > 0 and r["target_tokens_per_s"] > r["sentences_per_s"]
        assert r["achieved_tflops"] == pytest.approx(r["flop_per_step"] * r["steps"] / r["seconds"] / 1e12)
    assert results["full"]["image_size"] == 32 and results["text"]["image_size"] is None
    # the KD part (three ResNet-18 passes per sentence) dwarfs the Transformer's
    assert results["full"]["gflop_per_sentence"] > 10 * results["text"]["gflop_per_sentence"]
    r = results["resnet50"]
    assert r["batch"] == 2 and r["image_size"] == 32 and r["images_per_s"] > 0
    # forward + backward: 24.3 GFLOP per image at 224 px; the convolutions scale with the pixels, the
    # classifier (3 matrix products of 2048 x 1000) does not
    fc = 3 * 2 * 2048 * 1000 / 1e9
    assert r["gflop_per_image"] == pytest.approx((24.3 - fc) * (32 / 224) ** 2 + fc, rel=0.01)


def test_train_step_without_a_peak_has_no_mfu(ts, toy_data: Path) -> None:
    args = ["--device", "cpu", "--data", str(toy_data), "--models", "text", "--steps", "1", "--warmup", "0"]
    payload = ts.main([*args, "--max-tokens", "64", "--matmul-size", "32", *TINY])
    assert payload["peak_tflops"] is None and payload["results"][0]["mfu"] is None


def test_gpu_profile_tables_on_the_cpu(toy_data: Path, tmp_path: Path) -> None:
    gp = _bench("gpu_profile")
    out = tmp_path / "profile.txt"
    args = [
        "--device", "cpu", "--data", str(toy_data), "--max-tokens", "64", "--warmup", "1", "--decode-batch", "3",
        "--beam", "2", "--prefix", "2", "--rows", "5", "--out", str(out), *TINY,
    ]  # fmt: skip
    gp.main(args)
    text = out.read_text()
    assert "## one IKD training step:" in text and "resnet18" in text
    assert re.search(r"## one decoder step: 3 sentences x beam 2 = 6 rows, 4 cached target positions", text)
    assert text.count("Self CPU time total") == 2
    assert "aten::convolution_backward" in text  # the step's backward through the CNNs is in the table


def _run_script(*args: str, env: dict[str, str] | None = None, timeout: int = 1300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_device_check_plan_fits_seven_minutes() -> None:
    """The printed step list: every step has a budget, and together they fit the run's 400 s deadline (under 7
    minutes, so that a second run fits a 15-minute lease)."""
    run = _run_script("plan")
    assert run.returncode == 0, run.stderr
    rows = dict(re.findall(r"^(\w+)\s+(\d+)s\s", run.stdout, flags=re.M))
    names = ["env", "wheels", "tests", "train_step", "text8192", "profile", "translate"]
    assert list(rows)[:-1] == names and list(rows)[-1] == "total"
    budgets = [int(rows[n]) for n in names]
    assert all(b > 0 for b in budgets)
    assert int(rows["total"]) == sum(budgets) <= 400 < 7 * 60
    assert "deadline for the whole run: 400s" in run.stdout


def test_device_check_refuses_an_unknown_step(tmp_path: Path) -> None:
    run = _run_script("dry", "train_step,trainstep", env={"OUT": str(tmp_path)})
    assert run.returncode == 2 and "unknown step 'trainstep'" in run.stderr
    assert not (tmp_path / "steps.json").exists()


def test_device_check_skips_steps_past_its_deadline(tmp_path: Path) -> None:
    run = _run_script("dry", env={"OUT": str(tmp_path), "DEVICE_CHECK_SECONDS": "5"})
    assert run.returncode == 1
    steps = json.loads((tmp_path / "steps.json").read_text())
    assert [s["status"] for s in steps["steps"]] == ["skipped"] * 7


def test_device_check_keeps_the_results_of_a_step_that_runs_out_of_time(tmp_path: Path) -> None:
    """A step past its budget is killed, recorded as a timeout, and the files written before it stay."""
    run = _run_script("dry", "translate", env={"OUT": str(tmp_path), "DEVICE_CHECK_BUDGETS": "env=120,translate=1"})
    assert run.returncode == 1
    steps = {s["name"]: s for s in json.loads((tmp_path / "steps.json").read_text())["steps"]}
    assert list(steps) == ["env", "wheels", "translate"]  # env and wheels always run
    assert steps["env"]["status"] == "ok" and steps["translate"]["status"] == "timeout"
    assert steps["translate"]["rc"] == 124 and steps["translate"]["limit_s"] == 1
    assert "torch" in (tmp_path / "env.txt").read_text()
    assert "=== translate: timeout" in (tmp_path / "device_check.log").read_text()


@pytest.mark.slow
def test_device_check_dry_run(shared_data: Path, tmp_path: Path) -> None:
    """The whole check in dry mode (CPU, tiny sizes): every step passes, and $OUT holds at most 8 plain files
    with names the device machine sends back, the JSON ones valid."""
    # the budgets are the GPU's: a shared CPU gets more time for the same plumbing
    roomy = "env=60,tests=200,train_step=200,text8192=120,profile=120,translate=200"
    run = _run_script("dry", env={"OUT": str(tmp_path), "DEVICE_CHECK_BUDGETS": roomy, "DEVICE_CHECK_SECONDS": "1200"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert set(files) == OUT_FILES and len(files) <= 8
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", f) and (tmp_path / f).is_file() for f in files)
    steps = json.loads((tmp_path / "steps.json").read_text())
    assert [s["status"] for s in steps["steps"]] == ["ok"] * 7
    assert steps["elapsed_s"] <= steps["deadline_s"]
    train = json.loads((tmp_path / "train_step.json").read_text())
    assert [r["model"] for r in train["results"]] == ["full", "text", "resnet50"]
    assert all(r["mfu"] == pytest.approx(r["achieved_tflops"] / 1.0) for r in train["results"])
    assert json.loads((tmp_path / "train_step_text8192.json").read_text())["results"][0]["model"] == "text"
    assert json.loads((tmp_path / "translate_speed.json").read_text())
    assert "## one decoder step" in (tmp_path / "profile.txt").read_text()
    assert "tests/test_cuda.py" in (tmp_path / "device_check.log").read_text()
    if not torch.cuda.is_available():
        assert "skipped" in (tmp_path / "tests.xml").read_text()
