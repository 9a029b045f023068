"""Load time and peak memory of translation with a ResNet-50 IKD checkpoint next to a text-only one.

    python bench/translate_load.py [--repeats 3]

Both checkpoints hold random weights of the paper's recipe (Transformer-Tiny; the IKD one with its ResNet-50
teacher and student in the checkpoint) and a small vocabulary. Each measurement is a fresh process that loads
the checkpoint for translation (`load_for_inference`, timed) and translates one sentence; its peak RSS is
reported. Medians over the repeats, the two checkpoints interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WORDS = "a man dog red ball runs in the park . ein mann hund roter läuft im".split()
PROBE = (
    "import resource, sys, time\n"
    "from ikd.inference.loading import load_for_inference\n"
    "from ikd.inference.translator import SearchOptions, Translator\n"
    "start = time.perf_counter()\n"
    "loaded = load_for_inference(sys.argv[1], 'cpu')\n"
    "seconds = time.perf_counter() - start\n"
    "Translator(loaded, SearchOptions(max_len_b=20)).translate_lines(['a man runs in the park .'])\n"
    "print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
)


def write_checkpoints(folder: Path) -> dict[str, Path]:
    import torch

    from ikd.checkpoint import save_checkpoint
    from ikd.recipe import Recipe
    from ikd.train.objective import build_training_model

    vocab = ["<s>", "<pad>", "</s>", "<unk>", *WORDS]
    paths = {}
    for name, text_only in (("ikd-resnet50", False), ("text-only", True)):
        recipe = Recipe()
        recipe.model.text_only = text_only
        torch.manual_seed(0)
        model = build_training_model(recipe, len(vocab), 1, load_teacher_weights=False)
        paths[name] = folder / f"{name}.pt"
        payload = {"recipe": recipe.to_dict(), "vocab": vocab, "bpe_codes": "", "src": "en", "tgt": "de"}
        save_checkpoint({**payload, **model.checkpoint_states(), "epoch": 0, "updates": 0}, paths[name])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # in a child: a process's peak RSS survives exec, so the measuring children must not fork from a big one
        make = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import translate_load as t; "
        make += f"t.write_checkpoints(__import__('pathlib').Path({tmp!r}))"
        subprocess.run([sys.executable, "-c", make], check=True)
        paths = {name: Path(tmp) / f"{name}.pt" for name in ("ikd-resnet50", "text-only")}
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
        for _ in range(args.repeats):
            for name, path in paths.items():
                out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True)
                if out.returncode:
                    sys.exit(out.stderr)
                seconds, mb = map(float, out.stdout.split())
                runs[name].append((seconds, mb))
        sizes = {name: path.stat().st_size / 2**20 for name, path in paths.items()}
    print(f"{'checkpoint':<14} {'file MB':>8} {'load s':>7} {'peak RSS MB':>12}")
    for name, values in runs.items():
        load = statistics.median(v[0] for v in values)
        rss = statistics.median(v[1] for v in values)
        print(f"{name:<14} {sizes[name]:>8.0f} {load:>7.2f} {rss:>12.0f}")


if __name__ == "__main__":
    main()
