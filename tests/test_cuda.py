"""The CUDA paths: AMP training steps without host synchronisation (eager and with train.compile), a short
toy run on the GPU, GPU search agreeing with the CPU, and the ResNet-50 step of bench/train_step.py. Skipped
on machines without CUDA (CI here has none); on a GPU machine run them with `python -m pytest
tests/test_cuda.py` (bench/device_check.sh does, with the benchmarks)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fixtures_train import TINY_MODEL, toy_recipe

REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.filterwarnings("ignore:images are .* resizing on the device"),
]


def _bench(name: str):
    """A script of bench/ imported as a module."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _batches(toy_data: Path, recipe, n: int):
    from ikd.data.dataset import ParallelData, batch_indices, collate
    from ikd.data.vocab import Vocabulary

    vocab = Vocabulary.load(toy_data / "en-de" / "vocab.txt")
    data = ParallelData.load(toy_data, "en", "de", "train", vocab, images=True)
    idx = batch_indices(data.src_lens, data.tgt_lens, recipe.train.max_tokens, recipe.train.batch_multiple)
    return vocab, [collate(data, b, vocab.pad) for b in idx[:n]]


@pytest.mark.parametrize("amp", ["bf16", "fp16", "off"])
def test_training_steps_have_no_host_sync_and_learn(toy_data: Path, amp: str) -> None:
    """Stepper.step on the GPU (autocast, scaler for fp16, fused Adam, channels_last CNNs, uint8 images
    normalised on the device) never waits for the device: torch's sync debug mode turns any wait into an
    error. The losses, read once at the end, are finite and fall."""
    from ikd.train.objective import build_training_model
    from ikd.train.step import Stepper

    if amp == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("no native bf16 on this GPU")
    device = torch.device("cuda")
    recipe = toy_recipe(toy_data, *TINY_MODEL, f"train.amp={amp}", "train.lr=0.003", "train.warmup_updates=5")
    vocab, batches = _batches(toy_data, recipe, 8)
    torch.manual_seed(0)
    model = build_training_model(recipe, len(vocab), vocab.pad, load_teacher_weights=False).to(device).train()
    stepper = Stepper(model, model, recipe, device, vocab.pad)
    on_device = [b.to(device) for b in batches]
    stepper.step(on_device[0])  # first step: lazy CUDA/cuDNN initialisation may synchronise
    first, _, _ = stepper.drain()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            for batch in on_device:
                stepper.step(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    last, steps, first_bad = stepper.drain()
    assert steps == 3 * len(on_device) and first_bad is None
    assert np.isfinite(last["loss"]) and last["ce"] < first["ce"], (first, last)
    assert stepper.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]
    assert stepper.scaler.is_enabled() == (amp == "fp16")


def test_toy_run_on_the_gpu_and_its_checkpoint_on_the_cpu(toy_data: Path, tmp_path: Path) -> None:
    """`ikd train` on CUDA with amp auto: a short run writes finite checkpoints that load and translate on
    the CPU."""
    from ikd.inference.loading import load_for_inference
    from ikd.inference.translator import SearchOptions, Translator
    from ikd.train.trainer import train

    recipe = toy_recipe(toy_data, *TINY_MODEL, "train.max_epochs=2", "train.average_last=2", "train.keep_last=2")
    result = train(recipe, out=tmp_path / "run", device="cuda", progress=False, report=lambda _m: None)
    assert result.epochs == 2 and np.isfinite(result.best)
    loaded = load_for_inference(tmp_path / "run" / "checkpoint_average.pt", "cpu")
    out = Translator(loaded, SearchOptions(beam=2)).translate_lines(["a small red circle ."])
    assert out[0][0][0]


def test_gpu_beam_search_agrees_with_the_cpu(toy_checkpoint: Path, toy_data: Path) -> None:
    """The same checkpoint and sentences: fp32 on the GPU gives the CPU's translations; bf16/fp16 autocast
    (fp32 logits) nearly all of them."""
    from ikd.fileio import read_lines
    from ikd.inference.loading import load_for_inference
    from ikd.inference.translator import SearchOptions, Translator

    lines = read_lines(toy_data / "text" / "test.en")

    def run(device: str, amp: str) -> list[str]:
        loaded = load_for_inference(toy_checkpoint, device, amp=amp)
        translator = Translator(loaded, SearchOptions(beam=5), input_mode="tokenized")
        return [r[0][0] for r in translator.translate_lines(lines)]

    cpu = run("cpu", "off")
    same = sum(a == b for a, b in zip(run("cuda", "off"), cpu))
    assert same >= len(cpu) - 1, same  # fp32 both: at most a near-tie decided the other way
    for amp in ("auto", "fp16"):
        gpu = run("cuda", amp)
        assert sum(a == b for a, b in zip(gpu, cpu)) >= 0.9 * len(cpu), amp


def test_sync_debug_error_mode_catches_a_host_sync() -> None:
    """What the no-sync tests rely on: in "error" mode a device-to-host read raises."""
    x = torch.ones(3, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pytest.raises(RuntimeError):
            x.sum().item()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_resnet50_benchmark_steps_have_no_host_sync() -> None:
    """bench/train_step.py's yardstick: torchvision ResNet-50, bf16 autocast, channels_last, SGD, timed with
    CUDA events under sync-debug "error"; FLOPs counted, MFU against the given peak."""
    if not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("no native bf16 on this GPU")
    ts = _bench("train_step")
    args = SimpleNamespace(resnet_batch=8, resnet_size=64, resnet_warmup=2, resnet_steps=3, sync_debug=True)
    peak = {"tflops": 100.0, "matmul_tflops": 50.0}
    r = ts.bench_resnet50(torch.device("cuda"), args, peak)
    assert r["sync_debug"] and r["amp"] == "bf16" and r["steps"] == 3
    assert np.isfinite(r["loss"]) and r["ms_per_step"] > 0
    # forward + backward: 24.3 GFLOP per image at 224 px; the convolutions scale with the pixels, the
    # classifier (3 matrix products of 2048 x 1000) does not
    fc = 3 * 2 * 2048 * 1000 / 1e9
    assert r["gflop_per_image"] == pytest.approx((24.3 - fc) * (64 / 224) ** 2 + fc, rel=0.01)
    assert r["mfu"] == pytest.approx(r["achieved_tflops"] / 100.0)
    assert r["of_measured_matmul"] == pytest.approx(2 * r["mfu"])
    assert 0 < r["mfu"] < 1


def test_the_device_is_in_the_peak_table() -> None:
    """MFU needs the device's dense bf16 peak: the GPUs these checks run on have an entry."""
    ts = _bench("train_step")
    tflops, entry = ts.dense_bf16_peak(torch.cuda.get_device_name())
    if tflops is None:
        pytest.skip(f"{torch.cuda.get_device_name()} has no entry (pass --peak-tflops)")
    assert entry and tflops > 50


def test_compiled_training_steps_have_no_host_sync(toy_data: Path, tmp_path: Path) -> None:
    """train.compile: the trainer's torch.compile'd model stepped by its Stepper never waits for the device
    once compiled (sync-debug "error" turns any wait into an error), and the loss falls. One batch shape, so
    that compiling stays out of the checked steps; the toy recipe's AlexNet at 64 px (no normalisation layers,
    five convolutions) keeps the compile short."""
    from ikd.train.trainer import Trainer

    small = ["vision.backbone=alexnet", "vision.image_size=64", "train.lr=0.003", "train.warmup_updates=5"]
    recipe = toy_recipe(toy_data, *TINY_MODEL, *small, "train.compile=true")
    trainer = Trainer(recipe, tmp_path / "run", device="cuda", progress=False, report=lambda _m: None)
    trainer.setup()
    assert hasattr(trainer.model, "_orig_mod"), "train.compile did not compile the model"
    stepper = trainer.stepper
    _, batches = _batches(toy_data, recipe, 1)
    batch = batches[0].to(torch.device("cuda"))
    for _ in range(2):  # compiles forward and backward; first-step initialisation
        stepper.step(batch)
    first, _, _ = stepper.drain()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(6):
            stepper.step(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    last, steps, first_bad = stepper.drain()
    assert steps == 6 and first_bad is None
    assert np.isfinite(last["loss"]) and last["ce"] < first["ce"], (first, last)
