"""How many sentences transformers' generate() on an `ikd export --format transformers` folder translates exactly as
ikd does (the same text, character for character), greedy and beam search.

    .venv/bin/python bench/transformers_vs_ikd.py --checkpoint RUN/checkpoint_average.pt
    .venv/bin/python bench/transformers_vs_ikd.py --checkpoint CKPT --input my.en --beams 1,5,10

Input: raw sentences (one a line, .gz read as gzip), by default Multi30K's raw test_2016_flickr English
($IKD_TEST_DATA or ../shared/data, multi30k/raw: 1,000 sentences). The checkpoint is exported into --work, then
the folder is loaded as a user would (AutoTokenizer with trust_remote_code; M2M100ForConditionalGeneration for a
text-only model, AutoModelForSeq2SeqLM with trust_remote_code for an IKD one) and generate() runs with the
folder's generation_config.json and the beam given, batches of --batch sentences. ikd translates with
`ikd.Translator` (the same search as `ikd translate`). Both on the CPU, one thread.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("IKD_TEST_DATA") or REPO.parent / "shared" / "data")
DEFAULT_INPUT = DATA / "multi30k" / "raw" / "test_2016_flickr.en.gz"


def read_input(path: Path, limit: int) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    return lines[:limit] if limit else lines


def generate_capped(model, tokenizer, folder: Path, lines: list[str], beam: int) -> list[str]:
    """generate() with the folder's IkdLengthCap: ikd's default cap (0 * src_len + 200), </s> at its own score."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    kwargs_for = get_class_from_dynamic_module("length_cap.ikd_generate_kwargs", str(folder))
    batch = tokenizer(lines, return_tensors="pt", padding=True, truncation=True)
    positions = model.config.max_position_embeddings
    with torch.no_grad():
        out = model.generate(**batch, num_beams=beam, **kwargs_for(batch["attention_mask"], 0.0, 200, positions))
    return tokenizer.batch_decode(out, skip_special_tokens=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint written by `ikd train`")
    p.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="raw source sentences (.gz read as gzip)")
    p.add_argument("--sentences", type=int, default=0, help="only the first N lines (0: all)")
    p.add_argument("--beams", type=lambda s: [int(x) for x in s.split(",")], default=[1, 5])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ikd-bench-transformers")
    args = p.parse_args()
    torch.set_num_threads(1)
    import transformers
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, M2M100ForConditionalGeneration

    from ikd.export.exporter import export_checkpoint
    from ikd.inference.translator import Translator

    transformers.utils.logging.disable_progress_bar()
    lines = read_input(args.input, args.sentences)
    folder = args.work / f"hf-{args.checkpoint.parent.name}-{args.checkpoint.stem}"
    export_checkpoint(args.checkpoint, folder, "transformers")
    text_only = "modeling_ikd_mmt.py" not in os.listdir(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=True)
    if text_only:
        model = M2M100ForConditionalGeneration.from_pretrained(str(folder)).eval()
    else:
        model = AutoModelForSeq2SeqLM.from_pretrained(str(folder), trust_remote_code=True).eval()
    print(f"# {args.checkpoint} ({'text-only' if text_only else 'IKD'}), {len(lines)} sentences of {args.input}")
    print(f"# transformers {transformers.__version__}, torch {torch.__version__}, {platform.processor() or 'cpu'}")
    for beam in args.beams:
        start = time.perf_counter()
        ours = Translator.from_checkpoint(args.checkpoint, "cpu", beam=beam).translate(lines)
        ikd_s = time.perf_counter() - start
        theirs: list[str] = []
        start = time.perf_counter()
        for i in range(0, len(lines), args.batch):
            batch = tokenizer(lines[i : i + args.batch], return_tensors="pt", padding=True, truncation=True)
            with torch.no_grad():
                out = model.generate(**batch, num_beams=beam)
            theirs += tokenizer.batch_decode(out, skip_special_tokens=True)
        hf_s = time.perf_counter() - start
        same = sum(a == b for a, b in zip(ours, theirs))
        longest = max(len(t.split()) for t in ours)
        print(
            f"beam {beam}: {same}/{len(lines)} identical ({100 * same / len(lines):.1f}%); longest ikd output "
            f"{longest} words; ikd {ikd_s:.1f} s, transformers {hf_s:.1f} s"
        )
        differ = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
        for i in differ[:3]:
            print(f"  ikd:          {ours[i][:150]}\n  transformers: {theirs[i][:150]}")
        if differ:  # again with ikd's per-sentence cap (the folder's length_cap.py), those sentences only
            capped = generate_capped(model, tokenizer, folder, [lines[i] for i in differ], beam)
            same = sum(ours[i] == text for i, text in zip(differ, capped))
            print(f"  the {len(differ)} that differ, with length_cap.ikd_generate_kwargs: {same} identical")


if __name__ == "__main__":
    main()
