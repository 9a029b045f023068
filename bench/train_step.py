"""Training-step throughput of the full IKD model and the text-only model.

    .venv/bin/python bench/train_step.py                       # CPU: resnet50 teacher/student at 64 px
    .venv/bin/python bench/train_step.py --device cuda         # GPU: 224 px, bf16 autocast
    .venv/bin/python bench/train_step.py --models text --max-tokens 4096 --steps 50

Prints, per model: sentences/s and target tokens/s of the real training step (ikd.train.step.Stepper:
forward, label-smoothed CE + KD, backward, clipping, Adam, schedule; no host sync inside the timed loop),
peak memory, and for the full model the FLOPs per sample (torch.utils.flop_counter, forward + backward)
and the model FLOPs utilisation against a measured dense matmul rate (bf16 on GPU, fp32 on CPU).

Text: Multi30K EN-DE training sentences (../shared/data/multi30k/tok, word-level vocabulary capped at the
paper's 9,712 joint BPE entries, so tensor shapes match) or a prepared data folder (--data DIR, its BPE'd
train split); images: random uint8 pixels. Batches are token-bucketed as in training and moved to the
device before timing (the loader is not timed).
"""

from __future__ import annotations

import argparse
import resource
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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device) -> tuple[float, str]:
    """Dense matmul FLOP/s, the best of several trials (a shared machine only ever slows a trial down):
    bf16 8192^3 on GPU, fp32 1024^3 on CPU."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
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
    return best, str(dtype).replace("torch.", "")


def flops_per_sample(stepper: Stepper, batch) -> float:
    """Forward + backward FLOPs of one training step (matmuls and convolutions), per sentence."""
    from torch.utils.flop_counter import FlopCounterMode

    from ikd.train.objective import objective

    counter = FlopCounterMode(display=False)
    with counter:
        losses = objective(stepper.model, batch, stepper.recipe, stepper.pad, stepper.dtype)
        losses.loss.backward()
    stepper.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(batch.indices)


def bench(name: str, recipe, batches, vocab_size: int, device: torch.device, args, peak) -> None:
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
    warm, steps = on_device[: args.warmup], on_device[args.warmup :]
    for b in warm:
        stepper.step(b)
    stepper.drain()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    if args.sync_debug and device.type == "cuda":
        torch.cuda.set_sync_debug_mode("error")  # any host sync inside the timed steps raises
    start = time.perf_counter()
    for b in steps:
        stepper.step(b)
    if args.sync_debug and device.type == "cuda":
        torch.cuda.set_sync_debug_mode("default")
    means, _, bad = stepper.drain()  # the one host sync
    sync(device)
    seconds = time.perf_counter() - start
    sentences = sum(len(b.indices) for b in steps)
    tokens = sum(b.ntokens for b in steps)
    if device.type == "cuda":
        memory = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB peak allocated (GPU)"
    else:
        memory = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB peak RSS (process)"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"[{name}] {params:.1f}M parameters, {len(steps)} steps, {sentences / len(steps):.0f} sentences and "
        f"{tokens / len(steps):.0f} target tokens per step, loss {means['loss']:.3f}"
    )
    print(
        f"[{name}] {sentences / seconds:,.1f} sentences/s, {tokens / seconds:,.0f} target tokens/s, "
        f"{seconds / len(steps) * 1000:.1f} ms/step; {memory}"
    )
    if not recipe.model.text_only:
        fps = flops_per_sample(stepper, on_device[-1])
        achieved = fps * sentences / seconds
        print(
            f"[{name}] {fps / 1e9:.2f} GFLOP per sample (forward + backward); {achieved / 1e12:.3f} TFLOP/s = "
            f"{100 * achieved / peak[0]:.1f}% of the measured {peak[1]} matmul rate ({peak[0] / 1e12:.2f} TFLOP/s)"
        )
    del stepper, model, wrapped, on_device
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=str(REPO / "recipes" / "en-de.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override section.key=value")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", default="full,text", help="comma list of: full, text")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 30 CPU, 200 GPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 3 CPU, 20 GPU)")
    p.add_argument("--image-size", type=int, default=None, help="default: 64 on CPU, the recipe's (224) on GPU")
    p.add_argument("--max-tokens", type=int, default=None, help="default: the recipe's")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--sync-debug", action="store_true", help="CUDA: fail on any host sync in the timed steps")
    p.add_argument("--data", default=None, help="a prepared data folder instead of raw Multi30K text")
    p.add_argument("--src", default="en")
    p.add_argument("--tgt", default="de")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    args.steps = args.steps or (200 if gpu else 30)
    args.warmup = args.warmup if args.warmup is not None else (20 if gpu else 3)
    if gpu:
        torch.backends.cudnn.benchmark = True  # as the trainer sets it (and no TF32: the trainer leaves it off)

    overrides = ["vision.teacher_weights=none", *args.overrides]
    if args.image_size or not gpu:
        overrides.append(f"vision.image_size={args.image_size or 64}")
    if args.max_tokens:
        overrides.append(f"train.max_tokens={args.max_tokens}")
    if gpu:
        overrides.append("train.amp=bf16")
    recipe = load_recipe(args.recipe, overrides)
    src, tgt, vocab_size = load_text(args)
    batches = make_batches(
        src,
        tgt,
        recipe.train.max_tokens,
        args.warmup + args.steps,
        recipe.train.seed,
        multiple=recipe.train.batch_multiple,
    )
    name = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"device: {name}; torch {torch.__version__}; recipe {args.recipe}; max_tokens {recipe.train.max_tokens}; "
        f"vocabulary {vocab_size}"
    )
    peak = matmul_rate(device)
    print(f"measured {peak[1]} matmul rate: {peak[0] / 1e12:.2f} TFLOP/s")
    for which in args.models.split(","):
        if which == "full":
            r = load_recipe(args.recipe, [*overrides, "model.text_only=false"])
            label = f"full IKD, {r.vision.backbone} {r.vision.image_size}px, amp {r.train.amp if gpu else 'off'}"
        elif which == "text":
            r = load_recipe(args.recipe, [*overrides, "model.text_only=true"])
            label = "text-only"
        else:
            raise SystemExit(f"--models: unknown {which!r}")
        bench(label, r, batches, vocab_size, device, args, peak)


if __name__ == "__main__":
    main()
