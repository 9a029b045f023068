"""Training-step throughput and model FLOPs utilisation (MFU) of the full IKD model, the text-only model and,
as a yardstick, a plain torchvision ResNet-50.

    .venv/bin/python bench/train_step.py                       # CPU: resnet50 teacher/student at 64 px
    .venv/bin/python bench/train_step.py --device cuda         # GPU: 224 px, bf16 autocast
    .venv/bin/python bench/train_step.py --models text --max-tokens 4096 --steps 50
    .venv/bin/python bench/train_step.py --device cuda --models full,text,resnet50 --json train_step.json

Models (--models, a comma list):
  full      the IKD training step (ikd.train.step.Stepper: forward, label-smoothed CE + KD, backward,
            clipping, Adam, schedule; no host sync inside the timed loop; --sync-debug makes any sync an error)
  text      the same step for the text-only Transformer
  resnet50  torchvision's ResNet-50 (random weights, 1,000 classes): bf16 autocast on CUDA, channels_last,
            SGD with momentum, batch 64 at 224 px (--resnet-batch, --resnet-size): the rate a CNN of this kind
            reaches on the device, beside which the IKD figure (three ResNet-50 passes per sample) is read

Warm-up: --warmup steps, then one more step for every batch size (sentences per batch: the CNNs' batch
dimension) that the timed steps use and the warm-up has not seen, so that cuDNN's autotuning
(cudnn.benchmark, as the trainer sets it) and the allocator's first allocations of each shape stay out of the
timed loop. The result records the sizes warmed and how many timed sizes were not (always 0).

FLOPs: torch.utils.flop_counter.FlopCounterMode, which counts matrix products, convolutions (transposed too)
and attention (2 FLOPs per multiply-add) from the shapes of the operators that actually run. One forward and
backward pass of the uncompiled model is counted, untimed, for every distinct (source, target) batch shape of
the timed steps, and the timed steps' FLOPs are their sum (so the per-sentence text part, whose cost depends
on the lengths, is exact too). The frozen teacher's forward on the real images has no backward; its pass over
the student's image has the input gradient only: that is what the step executes, and what is counted.
Elementwise work (norms, activations, the optimiser) is not counted, as usual for MFU.

MFU = counted FLOPs / timed seconds / the device's dense bf16 tensor-core peak, a datasheet figure looked up by
the device name (DENSE_BF16_TFLOPS below; --peak-tflops gives one by hand, e.g. for a device not in the
table or for the CPU, which has no entry). The measured rate of a large bf16 matrix product is printed and
written too (`matmul`): a device reaches only part of its datasheet peak even on that, so MFU against it
reads higher (about 1.25 times on an H100/H200) and is written as `of_measured_matmul`, not as MFU.

Text: Multi30K EN-DE training sentences (../shared/data/multi30k/tok, word-level vocabulary capped at the
paper's 9,712 joint BPE entries, so tensor shapes match) or a prepared data folder (--data DIR, its BPE'd
train split); images: random uint8 pixels. Batches are token-bucketed as in training and moved to the
device before timing (the loader is not timed). --json FILE writes the results, rewritten after each model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ikd.data.vocab import Vocabulary  # noqa: E402
from ikd.recipe import load_recipe  # noqa: E402
from ikd.train.step import Stepper  # noqa: E402

MULTI30K = REPO.parent / "shared" / "data" / "multi30k" / "tok"
PAPER_VOCAB = 9712

# Dense (without sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendors' datasheets (half the
# "with sparsity" figures they print). The first pattern that matches torch.cuda.get_device_name() wins, so
# the specific names come before the general ones ("H100 NVL" before "H100").
DENSE_BF16_TFLOPS: tuple[tuple[str, str, float], ...] = (
    (r"\bGH200\b", "GH200", 989.4),
    (r"\bGB200\b", "GB200", 2500.0),
    (r"\bB200\b", "B200", 2250.0),
    (r"\bH200 NVL\b", "H200 NVL", 835.5),
    (r"\bH200\b", "H200 SXM", 989.4),
    (r"\bH100 NVL\b", "H100 NVL", 835.5),
    (r"\bH100 PCIe\b", "H100 PCIe", 756.5),
    (r"\bH100\b", "H100 SXM", 989.4),  # "NVIDIA H100 80GB HBM3"
    (r"\bA100\b", "A100", 312.0),
    (r"\bA30\b", "A30", 165.0),
    (r"\bA40\b", "A40", 149.7),
    (r"\bA10\b", "A10", 125.0),
    (r"\bL40S\b", "L40S", 362.05),
    (r"\bL40\b", "L40", 181.05),
    (r"\bL4\b", "L4", 121.0),
    (r"\bRTX 4090\b", "RTX 4090", 165.2),
)


def dense_bf16_peak(device_name: str) -> tuple[float | None, str | None]:
    """(TFLOP/s, the table entry) for a device name, or (None, None) when the table has no entry for it."""
    for pattern, entry, tflops in DENSE_BF16_TFLOPS:
        if re.search(pattern, device_name):
            return tflops, entry
    return None, None


def mfu(flops: float, seconds: float, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over the peak (None without a peak)."""
    if not peak_tflops or seconds <= 0:
        return None
    return flops / seconds / (peak_tflops * 1e12)


def load_text(args) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """(src ids, tgt ids, vocab size); ids with EOS appended."""
    if args.data:
        from ikd.data.dataset import ParallelData

        data_dir = Path(args.data)
        vocab = Vocabulary.load(data_dir / f"{args.src}-{args.tgt}" / "vocab.txt")
        data = ParallelData.load(data_dir, args.src, args.tgt, "train", vocab, images=False)
        return list(data.src), list(data.tgt), len(vocab)
    src_lines = (MULTI30K / f"train.lc.norm.tok.{args.src}").read_text(encoding="utf-8").splitlines()
    tgt_lines = (MULTI30K / f"train.lc.norm.tok.{args.tgt}").read_text(encoding="utf-8").splitlines()
    counts = Counter(w for line in src_lines + tgt_lines for w in line.split())
    words = [w for w, _ in counts.most_common(PAPER_VOCAB - 4)]
    vocab = Vocabulary(["<s>", "<pad>", "</s>", "<unk>", *words])
    src = [np.array(vocab.encode(line.split()), dtype=np.int64) for line in src_lines]
    tgt = [np.array(vocab.encode(line.split()), dtype=np.int64) for line in tgt_lines]
    return src, tgt, len(vocab)


def make_batches(src, tgt, max_tokens: int, n: int, seed: int, pad: int = 1, eos: int = 2, multiple: int = 8) -> list:
    """`n` token-bucketed batches exactly as training makes them (ikd.data.dataset.batch_indices: fairseq's
    cost, sizes rounded to `multiple`, so the CNNs see the training run's few batch shapes)."""
    from ikd.data.dataset import batch_indices

    src_lens = np.array([len(s) for s in src])
    tgt_lens = np.array([len(t) for t in tgt])
    batches = [b.tolist() for b in batch_indices(src_lens, tgt_lens, max_tokens, multiple, True, seed, 1)]
    out = []
    for idx in batches[:n]:
        b = len(idx)
        t_len = max(len(src[i]) for i in idx)
        u_len = max(len(tgt[i]) for i in idx)
        s = torch.full((b, t_len), pad, dtype=torch.int64)
        ti = torch.full((b, u_len), pad, dtype=torch.int64)
        to = torch.full((b, u_len), pad, dtype=torch.int64)
        for row, i in enumerate(idx):
            s[row, : len(src[i])] = torch.from_numpy(src[i])
            y = torch.from_numpy(tgt[i])
            to[row, : len(y)] = y
            ti[row, 0] = eos
            ti[row, 1 : len(y)] = y[:-1]
        out.append(SimpleNamespace(src=s, tgt_in=ti, tgt_out=to, ntokens=int((to != pad).sum()), indices=idx))
    return out


def split_warmup(batches: list, warmup: int) -> tuple[list, list]:
    """(warm-up batches, timed batches): the first `warmup` batches, plus the first timed batch of every batch
    size (sentences) that they do not include; the timed batches are all the others, in order."""
    warm, timed = list(batches[:warmup]), list(batches[warmup:])
    seen = {len(b.indices) for b in warm}
    for b in timed:
        if len(b.indices) not in seen:
            seen.add(len(b.indices))
            warm.append(b)
    return warm, timed


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, n: int | None = None) -> dict:
    """Dense matmul FLOP/s on random data, the best of several trials (a shared machine only ever slows a
    trial down): bf16 8192^3 on GPU, fp32 1024^3 on CPU."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 10 if device.type == "cuda" else 3
    best = 0.0
    for _ in range(8):
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
    return {"dtype": str(dtype).replace("torch.", ""), "size": n, "tflops": best / 1e12}


def step_flops(stepper: Stepper, batch) -> float:
    """Forward + backward FLOPs of one training step of `batch` (matmuls, convolutions, attention), counted on
    the uncompiled model; gradients are dropped afterwards."""
    from torch.utils.flop_counter import FlopCounterMode

    from ikd.train.objective import objective

    counter = FlopCounterMode(display=False)
    with counter:
        losses = objective(stepper.raw_model, batch, stepper.recipe, stepper.pad, stepper.dtype)
        losses.loss.backward()
    stepper.optimizer.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def batches_flops(stepper: Stepper, batches: list) -> float:
    """The FLOPs of all `batches`, counted once per distinct (source, target) shape."""
    per_shape: dict[tuple, float] = {}
    total = 0.0
    for b in batches:
        key = (tuple(b.src.shape), tuple(b.tgt_in.shape))
        if key not in per_shape:
            per_shape[key] = step_flops(stepper, b)
        total += per_shape[key]
    return total


def memory_figure(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "GPU peak allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process peak RSS"


class SyncDebug:
    """torch.cuda.set_sync_debug_mode("error") inside the block when enabled on CUDA: any host sync raises."""

    def __init__(self, enabled: bool, device: torch.device):
        self.enabled = enabled and device.type == "cuda"

    def __enter__(self):
        if self.enabled:
            torch.cuda.set_sync_debug_mode("error")

    def __exit__(self, *exc):
        if self.enabled:
            torch.cuda.set_sync_debug_mode("default")


def bench_ikd(which: str, label: str, recipe, batches, vocab_size: int, device: torch.device, args, peak) -> dict:
    from ikd.train.objective import build_training_model

    torch.manual_seed(1)
    model = build_training_model(recipe, vocab_size, pad=1).to(device)
    wrapped = torch.compile(model) if args.compile else model
    stepper = Stepper(wrapped, model, recipe, device, pad=1)
    image = None
    if not recipe.model.text_only:
        s = recipe.vision.image_size
        image = torch.randint(0, 256, (max(len(b.indices) for b in batches), 3, s, s), dtype=torch.uint8)
    on_device = []
    for b in batches:
        images = image[: len(b.indices)].to(device) if image is not None else None
        on_device.append(
            SimpleNamespace(
                src=b.src.to(device),
                tgt_in=b.tgt_in.to(device),
                tgt_out=b.tgt_out.to(device),
                images=images,
                ntokens=b.ntokens,
                indices=b.indices,
            )
        )
    warm, steps = split_warmup(on_device, args.warmup)
    for b in warm:
        stepper.step(b)
    stepper.drain()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    with SyncDebug(args.sync_debug, device):
        for b in steps:
            stepper.step(b)
    means, _, bad = stepper.drain()  # the one host sync
    sync(device)
    seconds = time.perf_counter() - start
    memory, memory_kind = memory_figure(device)
    warmed = sorted({len(b.indices) for b in warm})
    flops = batches_flops(stepper, steps)
    sentences = sum(len(b.indices) for b in steps)
    tokens = sum(b.ntokens for b in steps)
    result = {
        "model": which,
        "label": label,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "amp": str(stepper.dtype).replace("torch.", "") if stepper.dtype else "off",
        "compile": bool(args.compile),
        "sync_debug": bool(args.sync_debug and device.type == "cuda"),
        "max_tokens": recipe.train.max_tokens,
        "image_size": None if recipe.model.text_only else recipe.vision.image_size,
        "warmup_steps": len(warm),
        "warmed_batch_sizes": warmed,
        "unwarmed_timed_batch_sizes": len({len(b.indices) for b in steps} - set(warmed)),
        "steps": len(steps),
        "seconds": seconds,
        "ms_per_step": seconds / len(steps) * 1000,
        "sentences_per_step": sentences / len(steps),
        "target_tokens_per_step": tokens / len(steps),
        "sentences_per_s": sentences / seconds,
        "target_tokens_per_s": tokens / seconds,
        "loss": means["loss"],
        "first_bad_update": bad,
        "memory_gib": memory,
        "memory_kind": memory_kind,
        "flop_per_step": flops / len(steps),
        "gflop_per_sentence": flops / sentences / 1e9,
        "achieved_tflops": flops / seconds / 1e12,
        "mfu": mfu(flops, seconds, peak["tflops"]),
        "of_measured_matmul": mfu(flops, seconds, peak["matmul_tflops"]),
    }
    del stepper, model, wrapped, on_device
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def resnet50_step(model, optimizer, x, y, dtype) -> torch.Tensor:
    """One plain training step: forward under autocast (when `dtype`), cross-entropy, backward, SGD."""
    import torch.nn.functional as F

    if dtype is None:
        loss = F.cross_entropy(model(x), y)
    else:
        with torch.autocast(device_type=x.device.type, dtype=dtype):
            loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def bench_resnet50(device: torch.device, args, peak) -> dict:
    """torchvision ResNet-50 training steps at one batch shape: median step time (CUDA events per step on the
    GPU, the host clock on the CPU), FLOPs of one step counted with FlopCounterMode, MFU."""
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(1)
    dtype = torch.bfloat16 if device.type == "cuda" else None
    model = torchvision.models.resnet50(weights=None).to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    n, s = args.resnet_batch, args.resnet_size
    inputs = [  # two input sets, alternated: no step reads what the last one left in the cache
        (
            torch.randn(n, 3, s, s, device=device).contiguous(memory_format=torch.channels_last),
            torch.randint(0, 1000, (n,), device=device),
        )
        for _ in range(2)
    ]
    for i in range(args.resnet_warmup):
        resnet50_step(model, optimizer, *inputs[i % 2], dtype)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    gpu = device.type == "cuda"
    marks = []
    with SyncDebug(args.sync_debug, device):
        for i in range(args.resnet_steps):
            if gpu:
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
                loss = resnet50_step(model, optimizer, *inputs[i % 2], dtype)
                end.record()
                marks.append((begin, end))
            else:
                begin = time.perf_counter()
                loss = resnet50_step(model, optimizer, *inputs[i % 2], dtype)
                marks.append(time.perf_counter() - begin)
    sync(device)
    step_s = [b.elapsed_time(e) / 1000 for b, e in marks] if gpu else marks
    median = statistics.median(step_s)
    memory, memory_kind = memory_figure(device)
    counter = FlopCounterMode(display=False)
    with counter:
        resnet50_step(model, optimizer, *inputs[0], dtype)
    flops = float(counter.get_total_flops())
    result = {
        "model": "resnet50",
        "label": f"torchvision resnet50, batch {n}, {s}px, {'bf16 autocast' if dtype else 'fp32'}, channels_last, SGD",
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "amp": "bf16" if dtype else "off",
        "sync_debug": bool(args.sync_debug and gpu),
        "batch": n,
        "image_size": s,
        "warmup_steps": args.resnet_warmup,
        "steps": args.resnet_steps,
        "ms_per_step": median * 1000,
        "ms_per_step_min": min(step_s) * 1000,
        "ms_per_step_max": max(step_s) * 1000,
        "images_per_s": n / median,
        "loss": float(loss),
        "memory_gib": memory,
        "memory_kind": memory_kind,
        "flop_per_step": flops,
        "gflop_per_image": flops / n / 1e9,
        "achieved_tflops": flops / median / 1e12,
        "mfu": mfu(flops, median, peak["tflops"]),
        "of_measured_matmul": mfu(flops, median, peak["matmul_tflops"]),
    }
    del model, optimizer, inputs
    if gpu:
        torch.cuda.empty_cache()
    return result


def print_result(r: dict) -> None:
    name = r["label"]

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    if r["model"] == "resnet50":
        print(
            f"[{name}] {r['params_m']:.1f}M parameters; {r['images_per_s']:,.0f} images/s, "
            f"{r['ms_per_step']:.1f} ms/step (median of {r['steps']}); {r['memory_gib']:.2f} GiB {r['memory_kind']}"
        )
    else:
        print(
            f"[{name}] {r['params_m']:.1f}M parameters, {r['steps']} steps ({r['warmup_steps']} warm-up, batch "
            f"sizes {r['warmed_batch_sizes']} all warmed), {r['sentences_per_step']:.0f} sentences and "
            f"{r['target_tokens_per_step']:.0f} target tokens per step, loss {r['loss']:.3f}"
        )
        print(
            f"[{name}] {r['sentences_per_s']:,.1f} sentences/s, {r['target_tokens_per_s']:,.0f} target tokens/s, "
            f"{r['ms_per_step']:.1f} ms/step; {r['memory_gib']:.2f} GiB {r['memory_kind']}"
        )
    per = (
        f"{r['gflop_per_image']:.2f} GFLOP per image"
        if "gflop_per_image" in r
        else (f"{r['gflop_per_sentence']:.2f} GFLOP per sentence")
    )
    print(
        f"[{name}] {per} (forward + backward); {r['achieved_tflops']:.3f} TFLOP/s = MFU {pct(r['mfu'])} "
        f"({pct(r['of_measured_matmul'])} of the measured matmul rate)",
        flush=True,
    )


def write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=str(REPO / "recipes" / "en-de.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override section.key=value")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", default="full,text", help="comma list of: full, text, resnet50")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 30 CPU, 100 GPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 3 CPU, 10 GPU)")
    p.add_argument("--image-size", type=int, default=None, help="default: 64 on CPU, the recipe's (224) on GPU")
    p.add_argument("--max-tokens", type=int, default=None, help="default: the recipe's")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--sync-debug", action="store_true", help="CUDA: fail on any host sync in the timed steps")
    p.add_argument("--data", default=None, help="a prepared data folder instead of raw Multi30K text")
    p.add_argument("--src", default="en")
    p.add_argument("--tgt", default="de")
    p.add_argument("--peak-tflops", type=float, default=None, help="the peak for MFU (default: the device table)")
    p.add_argument("--matmul-size", type=int, default=None, help="default: 8192 GPU, 1024 CPU")
    p.add_argument("--resnet-batch", type=int, default=64)
    p.add_argument("--resnet-size", type=int, default=224)
    p.add_argument("--resnet-steps", type=int, default=30)
    p.add_argument("--resnet-warmup", type=int, default=5)
    p.add_argument("--json", type=Path, default=None, help="write the results here (after each model)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    args.steps = args.steps or (100 if gpu else 30)
    args.warmup = args.warmup if args.warmup is not None else (10 if gpu else 3)
    if gpu:
        torch.backends.cudnn.benchmark = True  # as the trainer sets it (and no TF32: the trainer leaves it off)
    models = args.models.split(",")
    unknown = [m for m in models if m not in ("full", "text", "resnet50")]
    if unknown:
        raise SystemExit(f"--models: unknown {', '.join(unknown)}")

    overrides = ["vision.teacher_weights=none", *args.overrides]
    if args.image_size or not gpu:
        overrides.append(f"vision.image_size={args.image_size or 64}")
    if args.max_tokens:
        overrides.append(f"train.max_tokens={args.max_tokens}")
    if gpu:
        overrides.append("train.amp=bf16")
    recipe = load_recipe(args.recipe, overrides)
    name = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    if args.peak_tflops:
        peak_tflops, peak_source = args.peak_tflops, "--peak-tflops"
    elif gpu:
        peak_tflops, entry = dense_bf16_peak(name)
        peak_source = f"datasheet dense bf16, {entry}" if entry else None
    else:
        peak_tflops, peak_source = None, None
    matmul = matmul_rate(device, args.matmul_size)
    payload = {
        "device": device.type,
        "device_name": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if gpu else None,
        "cudnn": torch.backends.cudnn.version() if gpu else None,
        "recipe": args.recipe,
        "overrides": overrides,
        "peak_tflops": peak_tflops,
        "peak_source": peak_source,
        "matmul": matmul,
        "results": [],
    }
    peak = {"tflops": peak_tflops, "matmul_tflops": matmul["tflops"]}
    print(
        f"device: {name}; torch {torch.__version__}; recipe {args.recipe}; max_tokens {recipe.train.max_tokens}; "
        f"peak for MFU: {f'{peak_tflops} TFLOP/s ({peak_source})' if peak_tflops else 'none (MFU not computed)'}"
    )
    print(f"measured {matmul['dtype']} matmul rate ({matmul['size']}^3): {matmul['tflops']:.2f} TFLOP/s", flush=True)
    if args.json:
        write_json(args.json, payload)
    batches = vocab_size = None
    if "full" in models or "text" in models:
        src, tgt, vocab_size = load_text(args)
        payload["vocab"] = vocab_size
        batches = make_batches(
            src,
            tgt,
            recipe.train.max_tokens,
            args.warmup + args.steps,
            recipe.train.seed,
            multiple=recipe.train.batch_multiple,
        )
    for which in models:
        if which == "resnet50":
            result = bench_resnet50(device, args, peak)
        else:
            r = load_recipe(args.recipe, [*overrides, f"model.text_only={'true' if which == 'text' else 'false'}"])
            label = (
                f"full IKD, {r.vision.backbone} {r.vision.image_size}px, amp {r.train.amp if gpu else 'off'}"
                if which == "full"
                else "text-only"
            )
            result = bench_ikd(which, label, r, batches, vocab_size, device, args, peak)
        print_result(result)
        payload["results"].append(result)
        if args.json:
            write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
