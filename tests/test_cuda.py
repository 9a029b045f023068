"""The CUDA paths: AMP training steps without host synchronisation, a short toy run on the GPU, and GPU
search agreeing with the CPU. Skipped on machines without CUDA (CI here has none); a session with a GPU runs
them with `python -m pytest tests/test_cuda.py` (bench/device_check.sh does, with the benchmarks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_train import TINY_MODEL, toy_recipe

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.filterwarnings("ignore:images are .* resizing on the device"),
]


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
