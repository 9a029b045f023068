"""ikd beam search against CTranslate2 on the same weights, side by side in one run, plus streaming memory.

    .venv/bin/python bench/decode_vs_ctranslate2.py --checkpoint RUN/checkpoint_average.pt
    .venv/bin/python bench/decode_vs_ctranslate2.py                  # trains a short text-only model first
    .venv/bin/python bench/decode_vs_ctranslate2.py --streaming-only  # only the `ikd translate` memory check
    .venv/bin/python bench/decode_vs_ctranslate2.py --checkpoint CKPT --source data/toy/text/test.en --agreement
                                                     # only the share of identical 1-best lines, per option set

Decoding: the 1,000 source sentences of test_2016_flickr (Multi30K's tokenised English, BPE'd with the checkpoint's
codes), a text-only checkpoint exported with `ikd export --format ctranslate2` (float32), the same beam size,
length penalty 1 and length cap 200 on both sides, batches of 128 sentences sorted by length on both sides. Only
decoding is timed (ids in, ids out: no BPE, no file reading), best of --repeats runs, ikd and CTranslate2
interleaved so that both see the same machine load; each CTranslate2 timing loads its translator afresh and frees
it after, because a live one halves torch's speed at 2 threads on a 2-core machine. "identical" counts the
sentences whose 1-best token sequences are equal: the two searches are not the same
(ikd.export.ctranslate2.translate_options says where), so it is a measured share, not a check. Settings: beam 5
with 1 thread, beam 1 and beam 5 with 2 threads.

--agreement: no timing; beam 5 on --source (tokenised text, BPE'd with the checkpoint's codes), ikd against
CTranslate2 with translate_options and with the alternatives it was chosen over, the share of identical 1-best
lines overall and among the lines ikd ends before the cap, and the outputs holding <pad> or <s>.

Without --checkpoint, a text-only Transformer-Tiny (recipes/en-de-text.yaml) is trained for --train-updates
updates on Multi30K EN-DE from ../shared/data/multi30k or $IKD_TEST_DATA/multi30k (prepared and BPE'd in
--work): a weak but real model whose outputs end by themselves (random weights never emit EOS, which makes both
decoders run to the cap).

The IKD model: the same search on the IKD-MMT architecture (generator and 49 pseudo-tokens), timed beside the
text-only model; see ikd_model_speed.

Streaming: `ikd translate --bpe` with a tiny random model (greedy, outputs capped at 3 tokens) on 20k and 200k
input lines; the child's peak RSS (getrusage) should not grow with the input, and its first output lines must
arrive long before it ends (the output is written chunk by chunk).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IKD_TEST_DATA") or REPO.parent / "shared" / "data") / "multi30k"  # as the tests
SETTINGS = [(5, 1), (1, 2), (5, 2)]  # (beam, threads)
MAX_LEN = 200
BATCH = 128

FINDINGS = """\
# Profile of one decoder step (text-only Transformer-Tiny, V = 9,712, 128 sentences x beam 5 = 640 rows,
# 1 thread; torch.profiler self CPU time over Test2016) and what was done about it:
# - before: logsumexp + add over [N, V] ~25%, fused SDPA with one query per row ~19% (self- and cross-attention),
#   top-k over [n, k*V] ~14%, the output matmul ~13%, the KV cache cat + index_select reorder ~10%, the other
#   linears ~11%; Python dispatch ~600 small ops per step, a few ms per step at 640 rows (small next to the
#   memory-bound [N, V] passes). _collect (tolist of the finished [B, k, len] tensors) and the host check per
#   step cost < 1% on the CPU (a .cpu() of a CPU tensor is free), so checking every few steps buys nothing there.
# - a fresh [N, V] tensor per step (logits, then log-probabilities) costs more in page faults than the output
#   matmul: the logits now go to a buffer the decoder state reuses, and log_softmax runs in place;
# - candidates: a row's best 2k are found with a two-stage top-k (strided group maxima, then the k best groups),
#   then the sentence's best 2k among its k*2k survivors (not k*V);
# - self-attention keys/values in one time-major buffer for all layers, written in place: one index_select per
#   step reorders the whole cache (no cat, no allocation); attention for the new token as two batched matmuls;
# - cross-attention keys/values kept per sentence (not copied per beam), the k beam queries of a sentence stacked
#   into one attention call; the encoder output is never expanded or reordered after step 0.
# After: the output matmul and the linears ~35%, log_softmax ~9%, cache reorder ~9%, attention matmuls ~12%."""


def run_cli(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run([sys.executable, "-m", "ikd.cli", *args], check=True, env=env, cwd=REPO, **kw)


def build_checkpoint(work: Path, updates: int) -> Path:
    data, run = work / "data", work / f"run-text-{updates}"
    ckpt = run / "checkpoint_last.pt"
    if ckpt.is_file():
        return ckpt
    if not (data / "en-de" / "vocab.txt").is_file():
        run_cli(["prepare", "multi30k", "--source", str(SHARED), "--out", str(data), "--pairs", "en-de"])
        run_cli(["bpe", "--data", str(data), "--pair", "en-de"])
    sets = [f"data.dir={data}", f"train.max_updates={updates}", "train.warmup_updates=400", "train.valid_bleu=false"]
    sets += ["train.keep_last=1", "train.average_last=1", "data.num_workers=0"]
    run_cli(["train", "recipes/en-de-text.yaml", "--out", str(run), "--device", "cpu", "--set", *sets])
    return ckpt


def source_ids(loaded, source: Path | None = None) -> list[list[int]]:
    from ikd.inference.translator import Translator

    source = source or SHARED / "tok" / "test_2016_flickr.lc.norm.tok.en"
    lines = source.read_text(encoding="utf-8").splitlines()
    tr = Translator(loaded, input_mode="tokenized")
    return [tr.source_ids(line, i + 1) for i, line in enumerate(lines)]


def time_ikd(loaded, items: list[list[int]], beam: int) -> tuple[float, list[list[int]]]:
    from ikd.inference.translator import SearchOptions, Translator

    tr = Translator(loaded, SearchOptions(beam=beam, max_len_a=0, max_len_b=MAX_LEN), batch_size=BATCH)
    start = time.perf_counter()
    hyps = tr.search(items)
    return time.perf_counter() - start, [h[0].tokens for h in hyps]


def time_ct2(translator, tokens: list[list[str]], index: dict[str, int], beam: int) -> tuple[float, list[list[int]]]:
    from ikd.export.ctranslate2 import translate_options

    # the same batches as ikd's: sorted by length, 128 sentences each
    start = time.perf_counter()
    results = translator.translate_batch(tokens, max_batch_size=BATCH, **translate_options(beam, 1.0, MAX_LEN))
    took = time.perf_counter() - start
    return took, [[index[t] for t in r.hypotheses[0]] for r in results]


def decoding(args) -> None:
    import ctranslate2

    from ikd.export.exporter import export_checkpoint
    from ikd.inference.loading import load_for_inference

    if args.checkpoint:
        ckpt, note = args.checkpoint, f"checkpoint {args.checkpoint}"
    else:
        ckpt = build_checkpoint(args.work, args.train_updates)
        note = f"text-only Transformer-Tiny trained here for {args.train_updates} updates on Multi30K EN-DE ({ckpt})"
    loaded = load_for_inference(ckpt, "cpu")
    items = source_ids(loaded, args.source)[: args.sentences]
    vocab = loaded.vocab
    tokens = [[vocab.tokens[i] for i in ids] for ids in items]
    ct2_dir = Path(tempfile.mkdtemp(prefix="ikd-ct2-")) / "model"
    export_checkpoint(ckpt, ct2_dir, "ctranslate2")
    print(f"# model: {note}")
    print(
        f"# {len(items)} sentences of test_2016_flickr, vocabulary {len(vocab)}, d {loaded.recipe.model.d_model}, "
        f"{loaded.recipe.model.encoder_layers}+{loaded.recipe.model.decoder_layers} layers; torch {torch.__version__}, "
        f"ctranslate2 {ctranslate2.__version__} (float32); {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; best of {args.repeats}"
    )
    print(FINDINGS)
    print(
        "| beam | threads | ikd sentences/s | CTranslate2 sentences/s | ikd / CTranslate2 | identical 1-best "
        "| output tokens, mean / max |"
    )
    print("|---|---|---|---|---|---|---|", flush=True)
    for beam, threads in SETTINGS:
        torch.set_num_threads(threads)
        time_ikd(loaded, items[:BATCH], beam)  # warm-up
        best_ikd = best_ct2 = float("inf")
        for _ in range(args.repeats):
            t, ours = time_ikd(loaded, items, beam)
            best_ikd = min(best_ikd, t)
            # A live CTranslate2 translator halves torch's speed at 2 threads on a 2-core machine (measured:
            # CTranslate2 itself is as fast with torch loaded as without), so ikd is timed with none alive.
            translator = ctranslate2.Translator(str(ct2_dir), device="cpu", intra_threads=threads, inter_threads=1)
            time_ct2(translator, tokens[:BATCH], vocab.index, beam)  # warm-up
            t, theirs = time_ct2(translator, tokens, vocab.index, beam)
            best_ct2 = min(best_ct2, t)
            del translator
        same = sum(a == b for a, b in zip(ours, theirs))
        n = len(items)
        print(
            f"| {beam} | {threads} | {n / best_ikd:.1f} | {n / best_ct2:.1f} | {best_ct2 / best_ikd:.2f}x | "
            f"{same}/{n} ({100 * same / n:.1f}%) | {sum(map(len, ours)) / n:.1f} / {max(map(len, ours))} |",
            flush=True,
        )
    ikd_model_speed(ckpt, loaded, items, args.repeats)


def ikd_model_speed(ckpt: Path, text: object, items: list[list[int]], repeats: int) -> None:
    """ikd's search on the IKD-MMT architecture (recipes/en-de.yaml: ResNet-50's 2048x7x7 m, 49 pseudo-tokens
    appended to the encoder input, text queries), with the text-only checkpoint's translator weights and a seeded
    random generator whose pseudo-token projection is zeroed: the cost of the IKD model's search (generator,
    longer encoder states for cross-attention), not its translations. CTranslate2 cannot run this model."""
    from ikd.checkpoint import load_checkpoint, save_checkpoint
    from ikd.inference.loading import load_for_inference
    from ikd.model import build_translator
    from ikd.model.distiller import teacher_feature_shape
    from ikd.recipe import load_recipe

    ikd_recipe = load_recipe(REPO / "recipes" / "en-de.yaml")
    recipe = copy.deepcopy(text.recipe)
    recipe.model.text_only = False
    for key in ("kv_source", "token_layout", "text_queries"):
        setattr(recipe.model, key, getattr(ikd_recipe.model, key))
    recipe.vision = ikd_recipe.vision
    shape = teacher_feature_shape(recipe.vision)
    torch.manual_seed(0)
    model = build_translator(recipe.model, len(text.vocab), text.vocab.pad, shape)
    payload = load_checkpoint(ckpt)
    missing, unexpected = model.load_state_dict(payload["model"], strict=False)
    assert not unexpected and all(k.startswith(("generator.", "pseudo_tokens.")) for k in missing), missing
    with torch.no_grad():
        model.pseudo_tokens.proj.weight.zero_()
        model.pseudo_tokens.proj.bias.zero_()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ikd.pt"
        keep = {k: payload[k] for k in ("vocab", "bpe_codes", "src", "tgt") if k in payload}
        save_checkpoint({**keep, "model": model.state_dict(), "recipe": recipe.to_dict(), "feature_shape": shape,
                         "epoch": 0, "updates": 0}, path)
        ikd = load_for_inference(path, "cpu")
    print(f"\n# the IKD-MMT architecture ({shape[1] * shape[2]} pseudo-tokens, generator "
          f"{sum(p.numel() for p in ikd.model.generator.parameters()) / 1e6:.1f}M parameters) with the text-only "
          "translator's weights; CTranslate2 cannot run it")
    print("| beam | threads | IKD model sentences/s | text-only model sentences/s | IKD / text-only | "
          "output tokens, mean / max |")
    print("|---|---|---|---|---|---|", flush=True)
    for beam, threads in SETTINGS:
        torch.set_num_threads(threads)
        time_ikd(ikd, items[:BATCH], beam)
        best_ikd = best_text = float("inf")
        for _ in range(repeats):
            t, ours = time_ikd(ikd, items, beam)
            best_ikd = min(best_ikd, t)
            best_text = min(best_text, time_ikd(text, items, beam)[0])
        n = len(items)
        print(f"| {beam} | {threads} | {n / best_ikd:.1f} | {n / best_text:.1f} | {best_text / best_ikd:.2f}x | "
              f"{sum(map(len, ours)) / n:.1f} / {max(map(len, ours))} |", flush=True)


def agreement(args) -> None:
    """The share of identical 1-best lines, beam 5, for translate_options and the alternatives it was chosen over."""
    import ctranslate2

    from ikd.export.ctranslate2 import save_ctranslate2, translate_options
    from ikd.inference.loading import load_for_inference

    ckpt = args.checkpoint or build_checkpoint(args.work, args.train_updates)
    loaded = load_for_inference(ckpt, "cpu", amp="off")
    items = source_ids(loaded, args.source)[: args.sentences]
    vocab = loaded.vocab
    tokens = [[vocab.tokens[i] for i in ids] for ids in items]
    ct2_dir = Path(tempfile.mkdtemp(prefix="ikd-ct2-")) / "model"
    save_ctranslate2(loaded.model, vocab.tokens, ct2_dir)  # `ikd export` minus its check: the same files
    translator = ctranslate2.Translator(str(ct2_dir), device="cpu", intra_threads=1)
    torch.set_num_threads(1)
    _, ours = time_ikd(loaded, items, 5)
    chosen = translate_options(5, 1.0, MAX_LEN)
    variants = [
        ("translate_options (min_decoding_length 1)", {}),
        ("+ suppress_sequences <s>, <pad>", {"suppress_sequences": [["<s>"], ["<pad>"]]}),
        ("min_decoding_length 0", {"min_decoding_length": 0}),
        (f"max_decoding_length {MAX_LEN + 1}", {"max_decoding_length": MAX_LEN + 1}),
    ]
    n, free = len(items), [i for i, h in enumerate(ours) if len(h) < MAX_LEN]
    print(f"# {ckpt}; {n} sentences of {args.source or 'test_2016_flickr'}; beam 5, length penalty 1, cap {MAX_LEN}; "
          f"ikd outputs at the cap: {n - len(free)}; ctranslate2 {ctranslate2.__version__}")
    print("| CTranslate2 options | identical 1-best | of the lines ikd ends before the cap | outputs with <pad>/<s> |")
    print("|---|---|---|---|", flush=True)
    specials = {vocab.pad, vocab.bos}
    for name, extra in variants:
        results = translator.translate_batch(tokens, max_batch_size=BATCH, **{**chosen, **extra})
        theirs = [[vocab.index[t] for t in r.hypotheses[0]] for r in results]
        same = sum(a == b for a, b in zip(ours, theirs))
        same_free = sum(ours[i] == theirs[i] for i in free)
        odd = sum(bool(specials & set(t)) for t in theirs)
        print(f"| {name} | {same}/{n} ({100 * same / n:.1f}%) | {same_free}/{len(free)} | {odd} |", flush=True)


def streaming(args) -> None:
    from ikd.checkpoint import save_checkpoint
    from ikd.data.vocab import Vocabulary
    from ikd.model import build_translator
    from ikd.recipe import Recipe

    bpe_lines = []
    for line in (SHARED / "tok" / "test_2016_flickr.lc.norm.tok.en").read_text(encoding="utf-8").splitlines():
        bpe_lines.append(line)  # a word vocabulary: the words are their own subwords
    words = sorted({w for line in bpe_lines for w in line.split()})
    vocab = Vocabulary.build([words])
    r = Recipe()
    r.model.d_model, r.model.heads, r.model.ffn = 16, 2, 32
    r.model.encoder_layers = r.model.decoder_layers = 1
    r.model.text_only = True
    torch.manual_seed(0)
    model = build_translator(r.model, len(vocab), vocab.pad)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "tiny.pt"
        payload = {"model": model.state_dict(), "recipe": r.to_dict(), "vocab": vocab.tokens, "bpe_codes": ""}
        save_checkpoint({**payload, "src": "en", "tgt": "de", "epoch": 0, "updates": 0}, ckpt)
        print("\n# streaming: ikd translate --bpe -b 1 --max-len-a 0 --max-len-b 3, tiny random model, stdin -> stdout")
        print("| input lines | seconds | first output after s | peak RSS MiB | output lines |")
        print("|---|---|---|---|---|", flush=True)
        for n in args.stream_lines:
            src = Path(tmp) / f"in{n}.txt"
            with open(src, "w", encoding="utf-8") as f:
                for i in range(n):
                    f.write(bpe_lines[i % len(bpe_lines)] + "\n")
            cmd = [sys.executable, "-m", "ikd.cli", "translate", "-c", str(ckpt), "--bpe", "-b", "1"]
            cmd += ["--max-len-a", "0", "--max-len-b", "3", "-q"]
            env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
            start = time.perf_counter()
            first, count, rss = None, 0, 0
            with open(src, "rb") as stdin:
                # a fresh process per size: its own peak RSS (RUSAGE_CHILDREN keeps the largest child's)
                wrapper = [sys.executable, "-c", _RSS_CHILD, *cmd]
                proc = subprocess.Popen(wrapper, stdin=stdin, stdout=subprocess.PIPE, env=env, cwd=REPO)
                for line in proc.stdout:
                    if line.startswith(b"#rss "):
                        rss = int(line.split()[1])
                        continue
                    if first is None:
                        first = time.perf_counter() - start
                    count += 1
                proc.wait()
            took = time.perf_counter() - start
            print(f"| {n:,} | {took:.1f} | {first:.1f} | {rss / 1024:.0f} | {count:,} |", flush=True)


# runs the command as its child and prints the child's peak RSS (KiB) last
_RSS_CHILD = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
sys.stdout.flush()
print('#rss', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)
sys.exit(code)
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="a text-only checkpoint (default: train one, see above)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ikd-bench", help="data/run cache")
    p.add_argument("--train-updates", type=int, default=1000)
    p.add_argument("--sentences", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--stream-lines", type=lambda s: [int(x) for x in s.split(",")], default=[20_000, 200_000])
    p.add_argument("--source", type=Path, help="tokenised source lines (default: Multi30K's test_2016_flickr)")
    p.add_argument("--agreement", action="store_true", help="only the share of identical lines, per option set")
    p.add_argument("--streaming-only", action="store_true")
    p.add_argument("--no-streaming", action="store_true")
    args = p.parse_args()
    if args.agreement:
        return agreement(args)
    if not args.streaming_only:
        decoding(args)
    if not args.no_streaming:
        streaming(args)


if __name__ == "__main__":
    sys.exit(main())
