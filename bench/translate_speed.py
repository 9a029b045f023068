"""Decoding speed of `ikd translate` (beam search and greedy) on the 1,000 sentences of test_2016_flickr.

    .venv/bin/python bench/translate_speed.py                        # CPU, the full IKD model and text-only
    .venv/bin/python bench/translate_speed.py --device cuda          # GPU (bf16 autocast as the recipe's amp: auto)
    .venv/bin/python bench/translate_speed.py --data DATA            # a prepared folder: its en-de BPE vocabulary

A Transformer-Tiny checkpoint with random weights (recipe defaults: d 128, 4+4 layers; "ikd" = the full model,
whose encoder also reads the 49 generated pseudo-tokens; "text" = text-only) is written to a temporary file,
loaded with `load_for_inference` and run through the same Translator as `ikd translate` (input already
tokenised; timing covers BPE/vocabulary lookup, batching, search and de-BPE, not the process start-up).

Vocabulary: without --data, the 9,712 most frequent tokens of Multi30K's EN-DE training text (the size of the
paper's joint BPE dictionary), so the output layer and the softmax have the paper's shapes; with --data, the
prepared folder's BPE codes and vocabulary.

Random weights almost never emit EOS, so every hypothesis runs to the length cap. Two caps are measured:
"long" (a=1.5, b=10: about 2.4x a real translation's length; ikd's own default is the paper's 0*src+200, which
random weights would always run to) and "srclen" (a=1, b=0: the
output is as long as the source with its EOS, about a real German translation's length: test_2016_flickr averages 13.1
English and 12.4 German tokens with EOS). The second is the figure to compare with a trained model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "multi30k" / "tok"
CAPS = {"long": (1.5, 10), "srclen": (1.0, 0)}  # output cap a * src_len + b


def word_vocab(size: int):
    from ikd.data.vocab import Vocabulary

    counts: Counter[str] = Counter()
    for lang in ("en", "de"):
        for line in (SHARED / f"train.lc.norm.tok.{lang}").read_text(encoding="utf-8").splitlines():
            counts.update(line.split())
    keep = [t for t, _ in counts.most_common(size - 4)]
    return Vocabulary.build([keep], padding_factor=8)


def write_checkpoint(path: Path, model_kind: str, vocab, codes: str) -> None:
    from ikd.checkpoint import save_checkpoint
    from ikd.recipe import Recipe
    from ikd.train.objective import build_training_model

    recipe = Recipe()
    recipe.model.text_only = model_kind == "text"
    torch.manual_seed(1)
    model = build_training_model(recipe, len(vocab), load_teacher_weights=False)
    payload = {**model.checkpoint_states(), "recipe": recipe.to_dict(), "vocab": vocab.tokens, "bpe_codes": codes}
    save_checkpoint({**payload, "src": "en", "tgt": "de", "epoch": 0, "updates": 0}, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data", type=Path, help="prepared data folder with en-de BPE (ikd prepare + ikd bpe)")
    p.add_argument("--models", default="ikd,text", help="comma-separated: ikd, text")
    p.add_argument("--beams", default="5,1")
    p.add_argument("--caps", default=",".join(CAPS), help=f"comma-separated, from {list(CAPS)}")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--sentences", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (ikd translate's default: 1)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per setting; the best is reported")
    p.add_argument("--check-unbatched", type=int, default=100, help="compare the first N outputs with batch size 1")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()

    from ikd.data.vocab import Vocabulary
    from ikd.inference.loading import load_for_inference
    from ikd.inference.translator import SearchOptions, Translator

    torch.set_num_threads(args.threads)
    lines = (SHARED / "test_2016_flickr.lc.norm.tok.en").read_text(encoding="utf-8").splitlines()[: args.sentences]
    if args.data:
        pair = args.data / "en-de"
        vocab, codes, vocab_note = Vocabulary.load(pair / "vocab.txt"), (pair / "bpe.codes").read_text(), "BPE"
    else:
        vocab, codes, vocab_note = word_vocab(9712), "", "word"
    device = torch.device(args.device)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"# {len(lines)} sentences of test_2016_flickr, {vocab_note} vocabulary of {len(vocab)}, device {device} "
        f"({dev_name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads, batch {args.batch_size}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
        flush=True,
    )
    print("# sentences/CPU-s: sentences per second of this process's CPU time (what a dedicated core gives when")
    print("# the machine is shared); the wall-clock rates are the ones to quote on an idle machine or a GPU.")
    print("# same as unbatched: of the first N sentences, how many get the same output with batch size 1.")
    print(
        "| model | beam | cap | sentences/s | target tokens/s | mean output tokens | seconds | sentences/CPU-s "
        "| same as unbatched |"
    )
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for model_kind in args.models.split(","):
            ckpt = Path(tmp) / f"{model_kind}.pt"
            write_checkpoint(ckpt, model_kind, vocab, codes)
            loaded = load_for_inference(ckpt, device)
            for beam in (int(b) for b in args.beams.split(",")):
                for cap in args.caps.split(","):
                    a, b = CAPS[cap]
                    options = SearchOptions(beam=beam, lenpen=1.0, max_len_a=a, max_len_b=b)
                    warm = Translator(loaded, options, input_mode="tokenized", batch_size=args.batch_size)
                    warm.translate_lines(lines[: args.batch_size])
                    best = None
                    for _ in range(args.repeats):
                        tr = Translator(loaded, options, input_mode="tokenized", batch_size=args.batch_size)
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        start, cpu_start = time.perf_counter(), time.process_time()
                        out = tr.translate_lines(lines)
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        took, cpu = time.perf_counter() - start, time.process_time() - cpu_start
                        if best is None or took < best[0]:
                            best = (took, cpu, tr.stats)
                    took, cpu, stats = best
                    same = None
                    if args.check_unbatched:
                        n = args.check_unbatched
                        alone = Translator(loaded, options, input_mode="tokenized", batch_size=1)
                        same = sum(a[0][0] == b[0][0] for a, b in zip(alone.translate_lines(lines[:n]), out[:n]))
                    row = {
                        "model": model_kind,
                        "beam": beam,
                        "cap": cap,
                        "max_len_a": a,
                        "max_len_b": b,
                        "sentences_per_s": stats.sentences / took,
                        "target_tokens_per_s": stats.target_tokens / took,
                        "mean_output_tokens": stats.target_tokens / stats.sentences,
                        "seconds": took,
                        "cpu_seconds": cpu,
                        "sentences_per_cpu_s": stats.sentences / cpu,
                        "device": str(device),
                        "device_name": dev_name,
                        "threads": torch.get_num_threads(),
                        "vocab": len(vocab),
                        "batch_size": args.batch_size,
                        "same_as_unbatched": None if same is None else f"{same}/{args.check_unbatched}",
                    }
                    results.append(row)
                    print(
                        f"| {model_kind} | {beam} | {cap} | {row['sentences_per_s']:.1f} | "
                        f"{row['target_tokens_per_s']:.0f} | {row['mean_output_tokens']:.1f} | {took:.2f} | "
                        f"{row['sentences_per_cpu_s']:.1f} | {row['same_as_unbatched']} |",
                        flush=True,
                    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
