"""The paper's en-de recipe builds and trains a few steps on Multi30K text (a few hundred sentences, joint BPE)
with a random-weight ResNet-50 teacher and small random images."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures_train import one_thread

from ikd.checkpoint import load_checkpoint
from ikd.cli import main
from ikd.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]
LINES = {"train": 240, "val": 24}
IMAGE_SIZE = 32


def _subset(shared: Path, out: Path) -> Path:
    """DATA with the first LINES of Multi30K's tokenised train/val (en, de), random uint8 images and a
    manifest, then joint BPE (DATA/en-de)."""
    import json

    from ikd.data.bpe import learn_and_apply
    from ikd.fileio import sha256_file

    rng = np.random.default_rng(0)
    splits = {}
    for split, n in LINES.items():
        langs = {}
        for lang in ("en", "de"):
            lines = (shared / "multi30k" / "tok" / f"{split}.lc.norm.tok.{lang}").read_text("utf-8").splitlines()[:n]
            path = out / "text" / f"{split}.{lang}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            langs[lang] = {"path": f"text/{split}.{lang}", "sha256": sha256_file(path)}
        images = out / "images" / f"{split}.npy"
        images.parent.mkdir(parents=True, exist_ok=True)
        np.save(images, rng.integers(0, 256, (n, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8))
        names = out / "images" / f"{split}.names"
        names.write_text("".join(f"fake{i}.jpg\n" for i in range(n)))
        splits[split] = {
            "lines": n,
            "langs": langs,
            "images": {
                "path": f"images/{split}.npy",
                "names": f"images/{split}.names",
                "count": n,
                "size": IMAGE_SIZE,
            },  # fmt: skip
            "dropped_lines": [],
        }
    manifest = {"kind": "multi30k", "source": "test subset", "image_size": IMAGE_SIZE, "splits": splits}
    (out / "manifest.json").write_text(json.dumps(manifest))
    learn_and_apply(out, "en", "de", merges=300)
    return out


@pytest.mark.slow
def test_en_de_recipe_runs_a_few_steps_on_multi30k(shared_data, tmp_path, capfd):
    data = _subset(shared_data, tmp_path / "m30k")
    out = tmp_path / "run"
    sets = [
        f"data.dir={data}",
        "data.num_workers=0",
        "vision.teacher_weights=none",
        f"vision.image_size={IMAGE_SIZE}",
        "train.max_updates=3",
        "train.log_every=1",
        "train.keep_last=1",
        "train.average_last=1",
        "train.valid_max_sentences=8",
    ]
    args = ["train", str(REPO / "recipes" / "en-de.yaml"), "--out", str(out), "--device", "cpu"]  # not -q: the summary
    for item in sets:
        args += ["--set", item]
    with one_thread():
        code = main(args)
    err = capfd.readouterr().err
    assert code == 0, err
    assert "stopped: max_updates" in err
    records = read_metrics(out / "metrics.jsonl")
    steps = [r for r in records if r["kind"] == "train"]
    assert [r["updates"] for r in steps] == [1, 2, 3]
    assert all(np.isfinite(r[k]) for r in steps for k in ("loss", "ce", "irm", "iam"))
    assert steps[0]["irm"] > 0 and steps[0]["iam"] > 0  # the KD terms are live with the ResNet-50 pair
    epoch = [r for r in records if r["kind"] == "epoch"][0]
    assert np.isfinite(epoch["valid_loss"]) and "valid_bleu" in epoch
    ckpt = load_checkpoint(out / "checkpoint_last.pt")
    assert ckpt["recipe"]["vision"]["backbone"] == "resnet50" and ckpt["recipe"]["kd"]["grain"] == "model"
    assert ckpt["src"] == "en" and ckpt["tgt"] == "de" and ckpt["bpe_codes"]
    assert (out / "checkpoint_average.pt").is_file()
    shutil.rmtree(out)  # about 0.7 GB of ResNet-50 teacher/student weights and Adam state
