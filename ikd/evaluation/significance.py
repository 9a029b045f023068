"""Significance of a system against a baseline over several runs (seeds): a one-sided, sentence-level cluster
bootstrap in the spirit of MultEval (Clark et al. 2011, "Better hypothesis testing for statistical machine
translation: controlling for optimizer instability").

Each bootstrap sample draws n source-sentence indices with replacement (n: the test set's size) and scores,
on those sentences, every run of the system and every run of the baseline. A side's score on a sample is the
mean over its runs of the corpus score (BLEU or chrF, as sacrebleu computes it) of that run's resampled lines:
the statistic a table reports as "mean over seeds". The S outputs of one sentence thus stay together (one
cluster), where resampling the n·S concatenated lines as independent sentences underestimates the variance by
about a factor S. p is the share of samples in which the system is not better than the baseline (a tie counts
as not better); p_worse is the share in which it is not worse.

Vectorised: sacrebleu's sufficient statistics are computed once per line (BLEU: hypothesis and reference
length, matches and totals per n-gram order; chrF: hypothesis, reference and match counts per order); a
sample's corpus statistics are the sums of those rows, weighted by how often the sample drew each sentence
(one matrix product per chunk of samples), and the scores follow from the sums as sacrebleu's formulas do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ikd.evaluation.metrics import bleu_metric, chrf_metric

DEFAULT_SEED = 12345
DEFAULT_SAMPLES = 1000
TESTED_METRICS = {"bleu": "BLEU", "chrf": "chrF"}
TIE = 1e-9  # score points: differences below this are rounding in the mean over runs, and count as ties
_CELLS_PER_CHUNK = 1 << 22  # samples x sentences per chunk of draws (bounds the memory for long test sets)


@dataclass
class BootstrapResult:
    system: str
    baseline: str
    metric: str  # "BLEU" or "chrF"
    score: float  # mean over the system's runs of the corpus score
    baseline_score: float
    p_value: float  # share of samples in which the system is not better (one-sided)
    p_worse: float  # share of samples in which the system is not worse
    runs: int
    baseline_runs: int
    mean: float  # bootstrap mean of the system's score and its 95% half-width (1.96 standard deviations)
    ci: float


# ---------------------------------------------------------------------------------------------- statistics
def _sacrebleu_metric(metric: str):
    if metric == "bleu":
        return bleu_metric()
    if metric == "chrf":
        return chrf_metric()
    raise ValueError(f"no bootstrap for metric {metric!r}: expected one of {', '.join(TESTED_METRICS)}")


def sentence_stats(metric: str, hyps: list[str], refs: list[str]) -> np.ndarray:
    """sacrebleu's sufficient statistics of each line -> float64 [n, K]. BLEU: K = 10 (hypothesis length,
    reference length, matches of orders 1-4, totals of orders 1-4); chrF: K = 3 x 6 ([hyp, ref, match] per
    character order)."""
    stats = _sacrebleu_metric(metric)._extract_corpus_statistics(hyps, [refs])
    return np.asarray(stats, dtype=np.float64).reshape(len(hyps), -1)


def bleu_from_stats(stats: np.ndarray) -> np.ndarray:
    """Summed BLEU statistics [..., 10] -> corpus BLEU [...] (0-100) as sacrebleu's with smooth_method none:
    0 when an order has no match (or no n-gram), brevity penalty exp(1 - ref/hyp) when hyp < ref."""
    hyp_len, ref_len = stats[..., 0], stats[..., 1]
    correct, total = stats[..., 2:6], stats[..., 6:10]
    valid = np.all((correct > 0) & (total > 0), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_prec = np.log(np.where(valid[..., None], 100.0 * correct / np.maximum(total, 1), 1.0))
        bp = np.where(hyp_len < ref_len, np.exp(1.0 - ref_len / np.maximum(hyp_len, 1)), 1.0)
    bp = np.where(hyp_len > 0, bp, 0.0)
    return np.where(valid, bp * np.exp(log_prec.sum(axis=-1) / 4), 0.0)


def chrf_from_stats(stats: np.ndarray, beta: float = 2.0) -> np.ndarray:
    """Summed chrF statistics [..., 3 * orders] -> corpus chrF [...] (0-100) as sacrebleu's default CHRF:
    precision and recall averaged over the orders where both the hypothesis and the reference have n-grams
    (its "effective order"), then the F-beta of the averages."""
    counts = stats.reshape(*stats.shape[:-1], -1, 3)
    n_hyp, n_ref, n_match = counts[..., 0], counts[..., 1], counts[..., 2]
    effective = (n_hyp > 0) & (n_ref > 0)
    prec = np.where(effective, n_match / np.maximum(n_hyp, 1), 0.0)
    rec = np.where(effective, n_match / np.maximum(n_ref, 1), 0.0)
    orders = effective.sum(axis=-1)
    avg_prec = np.where(orders > 0, prec.sum(axis=-1) / np.maximum(orders, 1), 0.0)
    avg_rec = np.where(orders > 0, rec.sum(axis=-1) / np.maximum(orders, 1), 0.0)
    factor = beta**2
    denom = factor * avg_prec + avg_rec
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(denom > 0, 100 * ((1 + factor) * avg_prec * avg_rec / denom), 0.0)
    return score


SCORE_FROM_STATS = {"bleu": bleu_from_stats, "chrf": chrf_from_stats}


# ---------------------------------------------------------------------------------------------- resampling
def resample_indices(n: int, n_samples: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap's draws, in chunks of whole samples: int64 [chunk, n] sentence indices in [0, n)."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _CELLS_PER_CHUNK // max(n, 1))
    for start in range(0, n_samples, chunk):
        yield rng.integers(0, n, size=(min(chunk, n_samples - start), n))


def draw_counts(indices: np.ndarray, n: int) -> np.ndarray:
    """Indices [c, n] -> float64 [c, n]: how often each sample drew each sentence."""
    c = indices.shape[0]
    flat = (indices + n * np.arange(c)[:, None]).ravel()
    return np.bincount(flat, minlength=c * n).reshape(c, n).astype(np.float64)


def _mean_over_runs(scores: np.ndarray) -> np.ndarray:
    """[..., runs] -> [...]: sorted first, so that the same runs in another order give the same bits."""
    return np.sort(scores, axis=-1).mean(axis=-1)


def run_scores(metric: str, stats: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    """Per-run statistics [runs, n, K] -> corpus scores [runs] of the full test set (counts None) or
    [c, runs] of each sample (counts [c, n])."""
    score = SCORE_FROM_STATS[metric]
    if counts is None:
        return score(stats.sum(axis=1))
    runs, n, k = stats.shape
    sums = counts @ stats.transpose(1, 0, 2).reshape(n, runs * k)  # [c, runs * K]
    return score(sums.reshape(-1, runs, k))


def sample_scores(
    metric: str, system: np.ndarray, baseline: np.ndarray, n_samples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-run statistics [runs, n, K] of both sides -> each side's mean-over-runs score on every sample,
    [n_samples] each, both sides scored on the same draws."""
    n = system.shape[1]
    ours, theirs = [], []
    for indices in resample_indices(n, n_samples, seed):
        counts = draw_counts(indices, n)
        ours.append(_mean_over_runs(run_scores(metric, system, counts)))
        theirs.append(_mean_over_runs(run_scores(metric, baseline, counts)))
    return np.concatenate(ours), np.concatenate(theirs)


# ---------------------------------------------------------------------------------------------- the test
def cluster_bootstrap(
    system: tuple[str, list[list[str]]],
    baseline: tuple[str, list[list[str]]],
    refs: list[str],
    metrics: tuple[str, ...] = ("bleu", "chrf"),
    n_samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
) -> list[BootstrapResult]:
    """(name, [hypotheses of each run]) of the system and of the baseline, every run line-aligned with `refs`
    -> one result per metric (bleu, chrf) of the one-sided test "the system is better"."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    (name, runs), (base_name, base_runs) = system, baseline
    if not runs or not base_runs:
        raise ValueError("the system and the baseline need at least one run each")
    for hyps in [*runs, *base_runs]:
        if len(hyps) != len(refs):
            raise ValueError(f"a run has {len(hyps)} lines for {len(refs)} references")
    out = []
    for metric in metrics:
        ours = np.stack([sentence_stats(metric, hyps, refs) for hyps in runs])
        theirs = np.stack([sentence_stats(metric, hyps, refs) for hyps in base_runs])
        a, b = sample_scores(metric, ours, theirs, n_samples, seed)
        diff = a - b
        out.append(
            BootstrapResult(
                name,
                base_name,
                TESTED_METRICS[metric],
                float(_mean_over_runs(run_scores(metric, ours))),
                float(_mean_over_runs(run_scores(metric, theirs))),
                float(np.mean(diff <= TIE)),
                float(np.mean(diff >= -TIE)),
                len(runs),
                len(base_runs),
                float(a.mean()),
                float(1.96 * a.std()),
            )
        )
    return out


# ---------------------------------------------------------------------------------------------- marks
BETTER_05, BETTER_01, WORSE = "†", "‡", "↓"
LEVEL = 0.05
MARKS = "† better than the baseline at p < 0.05, ‡ at p < 0.01; ↓ worse than the baseline at p < 0.05"


def mark(p_value: float | None, p_worse: float | None) -> str:
    """‡ better at p < 0.01, † better at p < 0.05, ↓ worse at p < 0.05 (p_worse), else nothing."""
    if p_value is not None and p_value < 0.01:
        return BETTER_01
    if p_value is not None and p_value < LEVEL:
        return BETTER_05
    if p_worse is not None and p_worse < LEVEL:
        return WORSE
    return ""


def describe(samples: int, seed: int) -> str:
    """The test in one sentence, for legends and reports."""
    return (
        f"one-sided sentence-level cluster bootstrap over the seeds ({samples} samples of the test sentences, "
        f"numpy seed {seed}; every seed of both systems scored on each sample, a side's score the mean over its "
        "seeds of corpus BLEU or chrF; p: share of samples in which the system is not better; after Clark et "
        'al. 2011, "Better hypothesis testing for statistical machine translation", MultEval)'
    )
