"""The main job end to end, exactly as the README runs it: `ikd prepare toy` (default size), `ikd bpe`,
`ikd train recipes/toy.yaml`, then raw English through `ikd translate` on stdin and `ikd retrieve`.

This is the slowest module of the suite (a few minutes on 2 cores: it trains the real toy recipe once)."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from fixtures_train import torch_threads, untrained_copy

from ikd.cli import main
from ikd.data.text import detokenize
from ikd.fileio import read_lines

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(prepared toy data folder, run folder) of `ikd train recipes/toy.yaml` on the default toy world."""
    root = tmp_path_factory.mktemp("toy_recipe")
    data, run = root / "data", root / "run"
    assert main(["prepare", "toy", "--out", str(data)]) == 0
    assert main(["bpe", "--data", str(data), "--pair", "en-de"]) == 0
    with torch_threads(min(2, os.cpu_count() or 1)):  # the one long run of the suite: both cores
        code = main(
            ["train", str(REPO / "recipes" / "toy.yaml"), "--set", f"data.dir={data}"]
            + ["--out", str(run), "--device", "cpu", "-q"]
        )
    assert code == 0
    return data, run


def epochs(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("kind") == "epoch"]


def test_toy_recipe_learns_to_translate_and_to_distil(toy_run: tuple[Path, Path]) -> None:
    _, run = toy_run
    log = epochs(run)
    first, last = log[0], log[-1]
    assert last["valid_bleu"] >= 90, [r["valid_bleu"] for r in log]
    assert last["valid_ce"] < 0.5 * first["valid_ce"]
    # both distillation losses, and the student's image-space and feature terms, fall on unseen pictures
    for key in ("valid_irm", "valid_iam", "valid_image", "valid_irm_feat"):
        assert last[key] < 0.95 * first[key], (key, [r[key] for r in log])
    assert (run / "checkpoint_average.pt").is_file() and (run / "recipe.yaml").is_file()


def test_raw_english_on_stdin_gives_the_toy_references(toy_run: tuple[Path, Path], monkeypatch, capsys) -> None:
    data, run = toy_run
    english = read_lines(data / "text" / "test.en")
    german = read_lines(data / "text" / "test.de")
    raw = [detokenize(line.split(), "en") for line in english]
    raw = [text[0].upper() + text[1:] for text in raw]
    assert raw[0] != english[0]  # cased and detokenised: translate must redo the preprocessing
    stdin = "".join(line + "\n" for line in raw[:100]) + "\n" + "".join(line + "\n" for line in raw[100:])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
    assert main(["translate", "-c", str(run / "checkpoint_average.pt"), "--device", "cpu", "-q"]) == 0
    out = capsys.readouterr().out.split("\n")[:-1]
    assert len(out) == len(german) + 1 and out[100] == ""  # one line per input line, the empty one kept
    out = out[:100] + out[101:]
    exact = sum(o == g for o, g in zip(out, german))
    assert exact >= 0.9 * len(german), (exact, out[:3], german[:3])


def test_text_alone_retrieves_the_pictures(toy_run: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    """Paper Table 4 on the toy world: m generated from the sentence finds the sentence's own picture among
    the 200 test pictures far more often than chance and than the same model untrained."""
    data, run = toy_run
    checkpoint = run / "checkpoint_average.pt"

    def recall(ckpt: Path) -> dict:
        args = ["retrieve", "--checkpoint", str(ckpt), "--data", str(data), "--split", "test", "--device", "cpu"]
        assert main([*args, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    torch.manual_seed(0)
    trained = recall(checkpoint)
    untrained = recall(untrained_copy(checkpoint, tmp_path / "untrained.pt"))
    assert trained["n"] == 200 and trained["chance"]["R@1"] == 0.5
    r, u = trained["recall"], untrained["recall"]
    assert r["R@1"] >= 5 * trained["chance"]["R@1"], trained
    assert r["R@10"] >= 3 * trained["chance"]["R@10"], trained
    assert r["R@10"] >= 2 * u["R@10"] and trained["median_rank"] < 0.5 * untrained["median_rank"], (trained, untrained)
