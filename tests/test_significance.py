"""The cluster bootstrap over seeds (ikd.evaluation.significance) against a straightforward implementation written
here (sacrebleu's corpus scores on each resample), and the behaviour that matters for a paper's table: S identical
seeds are one seed, a system equal to its baseline is not better, a better one is marked, a worse one is marked
worse and never better."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
from test_experiment import fake_run, write_experiment

from ikd.cli import main
from ikd.evaluation.significance import (
    BETTER_01,
    WORSE,
    cluster_bootstrap,
    draw_counts,
    mark,
    resample_indices,
    run_scores,
    sentence_stats,
)
from ikd.experiment.spec import load_experiment
from ikd.experiment.table import collect, render
from ikd.fileio import atomic_write_lines

WORDS = [f"w{i}" for i in range(40)]


def synthetic_refs(n: int = 200, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) for _ in range(n)]


def corrupt(lines: list[str], rate: float, seed: int) -> list[str]:
    """Each word replaced by a random one with probability `rate`: a worse system for a larger rate."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) if rng.random() < rate else w for w in line.split()) for line in lines]


REFS = synthetic_refs()
BASE = corrupt(REFS, 0.30, 1)  # BLEU 48.2
NEAR = corrupt(REFS, 0.25, 2)  # BLEU 52.3: one seed of it against BASE gives p = 0.062 (1000 samples)


def corpus(metric: str, hyps: list[str], refs: list[str]) -> float:
    if metric == "bleu":
        return sacrebleu.corpus_bleu(hyps, [refs], tokenize="none", lowercase=True, force=True).score
    return sacrebleu.corpus_chrf(hyps, [refs]).score


def straightforward_p(metric, system_runs, baseline_runs, refs, n_samples, seed) -> tuple[float, list[float]]:
    """The test as its definition reads: draw n sentence indices with replacement (numpy's default generator),
    score every run on the drawn lines with sacrebleu, average over the runs, count the samples in which the
    system is not better."""
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, len(refs), size=(n_samples, len(refs)))
    not_better, system_scores = 0, []
    for row in indices:
        lines = [refs[i] for i in row]
        ours = np.mean([corpus(metric, [h[i] for i in row], lines) for h in system_runs])
        theirs = np.mean([corpus(metric, [h[i] for i in row], lines) for h in baseline_runs])
        not_better += ours <= theirs + 1e-9
        system_scores.append(float(ours))
    return not_better / n_samples, system_scores


@pytest.mark.parametrize("metric", ["bleu", "chrf"])
def test_scores_of_a_resample_equal_sacrebleu(metric: str) -> None:
    hyps = corrupt(REFS, 0.3, 5)
    hyps[7] = ""  # an empty output
    stats = sentence_stats(metric, hyps, REFS)
    assert run_scores(metric, stats[None])[0] == pytest.approx(corpus(metric, hyps, REFS), abs=1e-9)
    indices = next(resample_indices(len(REFS), 4, seed=3))
    fast = run_scores(metric, stats[None], draw_counts(indices, len(REFS)))[:, 0]
    slow = [corpus(metric, [hyps[i] for i in row], [REFS[i] for i in row]) for row in indices]
    assert fast == pytest.approx(slow, abs=1e-9)
    tiny = run_scores(metric, sentence_stats(metric, ["w1 w2", "w3"], ["w1 w2", "w3 w4"])[None])[0]
    assert tiny == pytest.approx(corpus(metric, ["w1 w2", "w3"], ["w1 w2", "w3 w4"]), abs=1e-9)  # BLEU: no 3-gram


@pytest.mark.parametrize("metric", ["bleu", "chrf"])
def test_p_equals_the_straightforward_implementation(metric: str) -> None:
    system = [corrupt(REFS, 0.26, s) for s in (2, 3)]
    baseline = [corrupt(REFS, 0.28, s) for s in (4, 5, 6)]
    (result,) = cluster_bootstrap(("s", system), ("b", baseline), REFS, (metric,), n_samples=25, seed=7)
    p, scores = straightforward_p(metric, system, baseline, REFS, 25, 7)
    assert result.p_value == pytest.approx(p, abs=1e-12)
    assert 0.0 < p < 1.0  # a case where the samples disagree
    assert result.mean == pytest.approx(np.mean(scores), abs=1e-9)
    assert result.score == pytest.approx(np.mean([corpus(metric, h, REFS) for h in system]), abs=1e-9)
    assert result.baseline_score == pytest.approx(np.mean([corpus(metric, h, REFS) for h in baseline]), abs=1e-9)
    assert (result.runs, result.baseline_runs) == (2, 3)


def test_identical_seeds_give_the_p_of_one_seed() -> None:
    """Three copies of each system are one seed: concatenating them as 3n test sentences gave p = 0.003 here."""
    (one,) = cluster_bootstrap(("s", [NEAR]), ("b", [BASE]), REFS, ("bleu",))
    (three,) = cluster_bootstrap(("s", [NEAR] * 3), ("b", [BASE] * 3), REFS, ("bleu",))
    assert 0.03 < one.p_value < 0.2  # better, but not significantly
    assert three.p_value == pytest.approx(one.p_value, abs=0.01)
    assert mark(three.p_value, three.p_worse) == ""


def test_a_system_equal_to_its_baseline_is_not_better() -> None:
    a, b = corrupt(REFS, 0.3, 11), corrupt(REFS, 0.2, 12)
    (same,) = cluster_bootstrap(("s", [a, b]), ("b", [b, a]), REFS, ("bleu",))  # the same runs, another order
    assert same.p_value == 1.0 and same.p_worse == 1.0  # every sample a tie: not better, not worse
    (identical,) = cluster_bootstrap(("s", [BASE]), ("b", [BASE]), REFS, ("chrf",))
    assert identical.p_value == 1.0 and mark(identical.p_value, identical.p_worse) == ""


def test_a_clearly_better_and_a_clearly_worse_system() -> None:
    better = [corrupt(REFS, 0.15, s) for s in (21, 22, 23)]
    worse = [corrupt(REFS, 0.45, s) for s in (24, 25, 26)]
    baseline = [corrupt(REFS, 0.30, s) for s in (27, 28, 29)]
    for result in cluster_bootstrap(("s", better), ("b", baseline), REFS):
        assert result.p_value < 0.01 and result.score > result.baseline_score
        assert mark(result.p_value, result.p_worse) == BETTER_01
    for result in cluster_bootstrap(("s", worse), ("b", baseline), REFS):
        assert result.p_value > 0.99 and result.p_worse < 0.01
        assert mark(result.p_value, result.p_worse) == WORSE


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_evaluate_tests_all_runs_of_both_at_once(tmp_path: Path, capsys) -> None:
    ref = write(tmp_path / "ref.de", REFS)
    system = [write(tmp_path / f"s{i}.de", corrupt(REFS, 0.45, 30 + i)) for i in range(3)]
    baseline = [write(tmp_path / f"b{i}.de", corrupt(REFS, 0.30, 40 + i)) for i in range(3)]
    args = ["evaluate", "--ref", str(ref), "--metrics", "bleu,chrf", "--json", str(tmp_path / "o.json")]
    for s, b in zip(system, baseline):
        args += ["--hyp", str(s), "--baseline", str(b)]
    assert main(args) == 0
    out = capsys.readouterr().out
    tests = json.loads((tmp_path / "o.json").read_text())["significance"]
    assert [(t["metric"], t["runs"], t["baseline_runs"]) for t in tests] == [("BLEU", 3, 3), ("chrF", 3, 3)]
    expected = cluster_bootstrap(
        ("s", [corrupt(REFS, 0.45, 30 + i) for i in range(3)]),
        ("b", [corrupt(REFS, 0.30, 40 + i) for i in range(3)]),
        REFS,
    )
    assert [t["p_value"] for t in tests] == [r.p_value for r in expected]
    assert all(t["mark"] == WORSE for t in tests)  # worse: never † or ‡
    assert out.count("1.0000↓") == 2 and "1.0000†" not in out and "1.0000‡" not in out
    assert "Clark et al. 2011" in out


# ---------------------------------------------------------------------------------------------- the table
def table_experiment(tmp_path: Path, seeds: list[int]):
    atomic_write_lines(tmp_path / "data" / "text" / "test.de", REFS)
    return load_experiment(write_experiment(tmp_path, seeds=seeds))  # BLEU and R@1 on the split "test"


def test_table_identical_seeds_are_one_seed(tmp_path: Path) -> None:
    cells = []
    for seeds in ([1], [1, 2, 3]):
        exp = table_experiment(tmp_path / str(len(seeds)), seeds)
        for seed in seeds:
            fake_run(exp, "text", seed, BASE, 48.17)
            fake_run(exp, "ikd", seed, NEAR, 52.28)
        cells.append(collect(exp).rows[1].cells["test", "bleu"])
    one, three = cells
    assert three.tested_seeds == [1, 2, 3]
    assert three.p == pytest.approx(one.p, abs=0.01) and 0.03 < three.p < 0.2
    assert three.p_worse == pytest.approx(one.p_worse, abs=0.01)
    assert mark(three.p, three.p_worse) == ""


def test_table_marks_a_worse_system_worse_in_every_format(tmp_path: Path) -> None:
    exp = table_experiment(tmp_path, [1, 2])
    for seed in (1, 2):
        fake_run(exp, "text", seed, corrupt(REFS, 0.30, seed), 45.0)
        fake_run(exp, "ikd", seed, corrupt(REFS, 0.45, 10 + seed), 24.0)
    data = collect(exp)
    cell = data.rows[1].cells["test", "bleu"]
    assert cell.p > 0.99 and cell.p_worse < 0.01
    markdown = render(data, "markdown")
    assert "| 24.00 ± 0.00↓ | 1.000↓" in markdown
    assert "†" not in markdown.split("\n- ")[0] and "‡" not in markdown.split("\n- ")[0]  # the legend has them
    assert "Clark et al. 2011" in markdown and "↓ worse than the baseline" in markdown
    assert r"24.00 $\pm$ 0.00$^\downarrow$ & 1.000$^\downarrow$" in render(data, "latex")
    records = {(r["system"], r["metric"]): r for r in json.loads(render(data, "json"))["cells"]}
    worse = records["ikd", "bleu"]
    assert (worse["mark"], worse["worse"], worse["significant"]) == ("↓", True, False)
    csv_rows = render(data, "csv").splitlines()
    header = csv_rows[0].split(",")
    ikd_bleu = next(r.split(",") for r in csv_rows if r.startswith("ikd,") and ",bleu," in r)
    assert ikd_bleu[header.index("mark")] == "↓" and ikd_bleu[header.index("worse")] == "True"
