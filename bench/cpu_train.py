"""Training updates per second on the CPU: today's fast CPU path against the plain fp32 eager step, side by side
in one run, and validation CE after the same updates.

    .venv/bin/python bench/cpu_train.py --data data/multi30k                       # recipes/en-de-text.yaml
    .venv/bin/python bench/cpu_train.py --recipe recipes/toy.yaml --data data/toy  # the IKD toy recipe
    .venv/bin/python bench/cpu_train.py --data data/multi30k --updates 400 --threads 1

Variants (--variants, a comma list):
  eager      the plain step: label-smoothed CE composed of autograd operators (log_softmax, gather, sum), glibc's
             default allocation of large tensors (fresh pages, mapped and unmapped each time)
  fast       what `ikd train` does on a CPU: the fused label-smoothed CE (ikd.train.loss) and freed memory kept
             for reuse (ikd.device.keep_freed_host_memory)
  fast-bf16  `fast` under bf16 autocast (train.amp: bf16); only meaningful on a CPU with native bf16

Each variant trains a fresh model from the same seed on the same batches (the recipe's token-bucketed training
batches of epoch 1, collated before timing: the loader is not timed) in its own process, since the allocator
setting is process-wide; the processes run one after another, in `--rounds` rounds of alternating order, so
that a machine whose load drifts slows every variant alike. Reported: updates/s (median over the rounds, wall
clock and CPU time), their ratio to the first variant, and validation CE (label-smoothed, per target token,
as `ikd train` logs it) after the `--updates` updates of the last round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("eager", "fast", "fast-bf16")


def worker(args) -> dict:
    """One variant in this process: train `args.updates` updates after `args.warmup`, then validate."""
    import torch

    sys.path.insert(0, str(REPO))
    import ikd.train.objective as objective_module
    from ikd.recipe import load_recipe
    from ikd.train import distributed as dist
    from ikd.train.data import epoch_batches, load_run_data, make_loader
    from ikd.train.loss import label_smoothed_ce_reference
    from ikd.train.objective import build_training_model, objective
    from ikd.train.rng import seed_everything
    from ikd.train.step import Stepper

    torch.set_num_threads(args.threads)
    sets = [f"data.dir={args.data}", "data.num_workers=0"]
    if args.variant == "fast-bf16":
        sets.append("train.amp=bf16")
    elif args.variant in ("eager", "fast"):
        sets.append("train.amp=off")
    recipe = load_recipe(args.recipe, sets)
    if args.variant == "eager":
        objective_module.label_smoothed_ce = label_smoothed_ce_reference
        import ikd.train.step as step_module

        step_module.keep_freed_host_memory = lambda: False
    data = load_run_data(recipe, args.recipe, report=lambda msg: None)
    seed_everything(recipe.train.seed)
    model = build_training_model(recipe, len(data.vocab), data.vocab.pad, False)
    stepper = Stepper(model, model, recipe, torch.device("cpu"), data.vocab.pad)
    order = epoch_batches(data.train, recipe, 1, dist.DistInfo())
    total = args.warmup + args.updates
    loader = make_loader(data.train, order[:total], data.vocab.pad, 0, False, recipe.train.seed + 1)
    batches = list(loader)
    if len(batches) < total:
        raise SystemExit(f"--warmup + --updates = {total} exceeds the {len(batches)} batches of an epoch")
    for batch in batches[: args.warmup]:
        stepper.step(batch)
    stepper.drain()
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches[args.warmup :]:
        stepper.step(batch)
    stepper.drain()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tokens = sum(int(b.ntokens) for b in batches[args.warmup :])
    model.eval()
    ce_sum = ntok = 0.0
    with torch.no_grad():
        valid = data.valid
        t = recipe.train
        for batch in make_loader(valid, valid.batches(t.max_tokens, t.batch_multiple, False, t.seed, 0),
                                 data.vocab.pad, 0, False, t.seed):
            terms = objective(model, batch, recipe, data.vocab.pad, stepper.dtype)
            ce_sum += float(terms.ce) * int(batch.ntokens)
            ntok += int(batch.ntokens)
    return {
        "variant": args.variant,
        "updates": args.updates,
        "updates_per_s": args.updates / wall,
        "updates_per_cpu_s": args.updates / cpu,
        "tokens_per_s": tokens / wall,
        "valid_ce": ce_sum / max(ntok, 1.0),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=str(REPO / "recipes" / "en-de-text.yaml"))
    p.add_argument("--data", required=True, help="a prepared data folder (ikd prepare + ikd bpe)")
    p.add_argument("--variants", default="eager,fast")
    p.add_argument("--updates", type=int, default=150, help="timed updates per round")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="write the results to this file")
    p.add_argument("--worker", dest="variant", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        print(json.dumps(worker(args)))
        return
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        p.error(f"--variants: unknown {', '.join(unknown)} (choose from {', '.join(VARIANTS)})")
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    common = ["--recipe", args.recipe, "--data", args.data, "--updates", str(args.updates),
              "--warmup", str(args.warmup), "--threads", str(args.threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    for r in range(args.rounds):
        for v in variants if r % 2 == 0 else reversed(variants):
            out = subprocess.run([sys.executable, __file__, "--worker", v, *common], env=env,
                                 capture_output=True, text=True)
            if out.returncode:
                last = out.stderr.strip().splitlines()[-1:] or [f"exit {out.returncode}"]
                raise SystemExit(f"{v}: {last[0]}")
            runs[v].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {v}: {runs[v][-1]['updates_per_s']:.2f} updates/s", file=sys.stderr, flush=True)
    base = variants[0]
    summary = []
    for v in variants:
        ups = statistics.median(x["updates_per_s"] for x in runs[v])
        cpu = statistics.median(x["updates_per_cpu_s"] for x in runs[v])
        summary.append({"variant": v, "updates_per_s": ups, "updates_per_cpu_s": cpu,
                        "tokens_per_s": statistics.median(x["tokens_per_s"] for x in runs[v]),
                        "valid_ce": runs[v][-1]["valid_ce"], "rounds": runs[v]})
    b = summary[0]
    print(f"recipe {args.recipe}, {args.updates} updates x {args.rounds} rounds, {args.threads} thread(s)")
    head = ("variant", "updates/s", "ratio", "upd/CPU-s", "ratio", "tok/s", "valid CE", f"vs {base}")
    print("{:<10} {:>9} {:>6} {:>9} {:>6} {:>7} {:>9} {:>9}".format(*head))
    for s in summary:
        print(f"{s['variant']:<10} {s['updates_per_s']:>9.2f} {s['updates_per_s'] / b['updates_per_s']:>5.2f}x "
              f"{s['updates_per_cpu_s']:>9.2f} {s['updates_per_cpu_s'] / b['updates_per_cpu_s']:>5.2f}x "
              f"{s['tokens_per_s']:>7.0f} {s['valid_ce']:>9.4f} {100 * (s['valid_ce'] / b['valid_ce'] - 1):>+8.2f}%")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
