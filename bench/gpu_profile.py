"""torch.profiler tables of one IKD training step and one decoder step of beam search.

    .venv/bin/python bench/gpu_profile.py --device cuda --out profile.txt
    .venv/bin/python bench/gpu_profile.py --device cpu --image-size 32 --set vision.backbone=resnet18   # plumbing

Training step: the full IKD model of the recipe (random teacher; 224 px and bf16 autocast on the GPU, as
bench/train_step.py), one ikd.train.step.Stepper step on the first Multi30K batch of the trainer's batching
(or of --data's train split), after --warmup steps on the same batch (cuDNN autotuning, lazy initialisation
and the allocator's first allocations stay outside the profile).

Decoder step: the same model in eval mode; the first --decode-batch training source sentences are encoded
once and expanded to --beam rows each, as beam search does; --prefix incremental steps, then two more (warm-up),
fill the key/value cache; then one more `decode` of one token per row (fp32 logits under bf16 autocast, as
`ikd translate`), with the log-softmax and top-k that beam search applies to it, is profiled.

Each table lists the operators by self device time on the GPU (self CPU time on the CPU), --rows of them; the
file (--out) holds both tables and a header naming the device, the shapes and the total times.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from train_step import REPO, load_text, make_batches, sync  # noqa: E402

from ikd.recipe import load_recipe  # noqa: E402


def profile_table(fn, device: torch.device, rows: int) -> tuple[str, float]:
    """Run `fn` once under torch.profiler -> (the operator table, wall seconds of the profiled call)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    sync(device)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        fn()
        sync(device)
        seconds = time.perf_counter() - start
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=rows), seconds


def training_step(recipe, batch, vocab_size: int, device: torch.device, warmup: int, rows: int):
    """-> (header, table, the trained model)."""
    from ikd.train.objective import build_training_model
    from ikd.train.step import Stepper

    torch.manual_seed(1)
    model = build_training_model(recipe, vocab_size, pad=1).to(device)
    stepper = Stepper(model, model, recipe, device, pad=1)
    s = recipe.vision.image_size
    b = SimpleNamespace(
        src=batch.src.to(device),
        tgt_in=batch.tgt_in.to(device),
        tgt_out=batch.tgt_out.to(device),
        images=torch.randint(0, 256, (len(batch.indices), 3, s, s), dtype=torch.uint8).to(device),
        ntokens=batch.ntokens,
        indices=batch.indices,
    )
    for _ in range(warmup):
        stepper.step(b)
    stepper.drain()
    table, seconds = profile_table(lambda: stepper.step(b), device, rows)
    stepper.drain()
    head = (
        f"one IKD training step: {len(batch.indices)} sentences, source {tuple(batch.src.shape)}, target "
        f"{tuple(batch.tgt_in.shape)}, images {s}px, {recipe.vision.backbone}, amp "
        f"{str(stepper.dtype).replace('torch.', '') if stepper.dtype else 'off'}; {seconds * 1000:.1f} ms under "
        "the profiler"
    )
    return head, table, model


@torch.no_grad()
def decoder_step(model, src, device, dtype, beam: int, prefix: int, rows: int) -> tuple[str, str]:
    """One incremental decoder step for src [B, T] expanded to B*beam rows, after `prefix` steps."""
    from ikd.inference.search import search_view

    model.eval()
    ctx = torch.autocast(device_type=device.type, dtype=dtype) if dtype else torch.autocast(device.type, enabled=False)
    n = src.size(0)
    with ctx:
        enc = search_view(model.encode(src))
        expand = torch.arange(n, device=device).repeat_interleave(beam)
        enc = enc.index_select(expand)
        state = model.new_decoder_state()
        tokens = torch.full((n * beam, 1), 2, dtype=torch.long, device=device)  # EOS starts the target
        for _ in range(prefix):
            logits = model.decode(tokens[:, -1:], enc, state)
            tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)

        def one_step():
            logits = model.decode(tokens[:, -1:], enc, state)
            lprobs = torch.log_softmax(logits[:, -1].float(), dim=-1).view(n, beam, -1)
            return torch.topk(lprobs.view(n, -1), 2 * beam, dim=1)

        for _ in range(2):  # warm the kernels at this cache length; the cache grows by one token each time
            one_step()
        table, seconds = profile_table(one_step, device, rows)
    head = (
        f"one decoder step: {n} sentences x beam {beam} = {n * beam} rows, {state.length - 1} cached target "
        f"positions, encoder states {tuple(enc.states.shape)}; {seconds * 1000:.2f} ms under the profiler"
    )
    return head, table


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=str(REPO / "recipes" / "en-de.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override section.key=value")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--image-size", type=int, default=None, help="default: 64 on CPU, the recipe's (224) on GPU")
    p.add_argument("--max-tokens", type=int, default=None, help="default: the recipe's")
    p.add_argument("--data", default=None, help="a prepared data folder instead of raw Multi30K text")
    p.add_argument("--src", default="en")
    p.add_argument("--tgt", default="de")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--decode-batch", type=int, default=128, help="sentences per decoder batch (ikd translate's)")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--prefix", type=int, default=8, help="target positions already decoded")
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="write the tables here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    if gpu:
        torch.backends.cudnn.benchmark = True
    overrides = ["vision.teacher_weights=none", "model.text_only=false", *args.overrides]
    if args.image_size or not gpu:
        overrides.append(f"vision.image_size={args.image_size or 64}")
    if args.max_tokens:
        overrides.append(f"train.max_tokens={args.max_tokens}")
    if gpu:
        overrides.append("train.amp=bf16")
    recipe = load_recipe(args.recipe, overrides)
    src, tgt, vocab_size = load_text(args)
    batch = make_batches(src, tgt, recipe.train.max_tokens, 1, recipe.train.seed, multiple=recipe.train.batch_multiple)
    name = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    sections = [f"# torch.profiler tables; device {name}; torch {torch.__version__}; recipe {args.recipe}"]

    def emit(head: str, table: str) -> None:
        sections.append(f"## {head}\n{table}")
        print(f"## {head}\n{table}", flush=True)
        if args.out:
            args.out.write_text("\n\n".join(sections) + "\n", encoding="utf-8")

    head, table, model = training_step(recipe, batch[0], vocab_size, device, args.warmup, args.rows)
    emit(head, table)

    from ikd.device import amp_dtype

    sentences = src[: args.decode_batch]
    t_len = max(len(r) for r in sentences)
    src_batch = torch.full((len(sentences), t_len), 1, dtype=torch.int64)
    for i, r in enumerate(sentences):
        src_batch[i, : len(r)] = torch.from_numpy(r)
    dtype = amp_dtype("auto", device)
    emit(*decoder_step(model.translator, src_batch.to(device), device, dtype, args.beam, args.prefix, args.rows))
    return "\n\n".join(sections)


if __name__ == "__main__":
    main()
