"""Paired bootstrap resampling against a baseline (Koehn 2004, as Moses' bootstrap-hypothesis-difference-
significance.pl that the authors ran), through sacrebleu's paired test API."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from ikd.evaluation.metrics import bleu_metric, chrf_metric

DEFAULT_SEED = 12345
DEFAULT_SAMPLES = 1000


@dataclass
class PairedResult:
    system: str
    baseline: str
    metric: str  # "BLEU" or "chrF"
    score: float
    baseline_score: float
    p_value: float
    mean: float | None  # bootstrap mean of the system's score and its 95% confidence half-width
    ci: float | None


@contextlib.contextmanager
def _sacrebleu_seed(seed: int) -> Iterator[None]:
    old = os.environ.get("SACREBLEU_SEED")
    os.environ["SACREBLEU_SEED"] = str(seed)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SACREBLEU_SEED", None)
        else:
            os.environ["SACREBLEU_SEED"] = old


def paired_bootstrap(
    baseline: tuple[str, list[str]],
    systems: list[tuple[str, list[str]]],
    refs: list[str],
    metrics: tuple[str, ...] = ("bleu", "chrf"),
    n_samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
) -> list[PairedResult]:
    """p-values of each system's difference to the baseline (same resampled sentence sets for both).

    sacrebleu's test gives p = 1/(n+1) for a system identical to the baseline (a zero difference is never
    exceeded); identical outputs are reported with p = 1 instead."""
    from sacrebleu.significance import PairedTest

    if seed == 0:  # sacrebleu's PairedTest takes a seed of 0 for "no seed" (`self._seed or None`)
        raise ValueError("seed 0 means 'unseeded' to sacrebleu; use another value")

    chosen = {}
    if "bleu" in metrics:
        chosen["BLEU"] = bleu_metric()
    if "chrf" in metrics:
        chosen["chrF"] = chrf_metric()
    with _sacrebleu_seed(seed):
        test = PairedTest([baseline, *systems], chosen, [refs], test_type="bs", n_samples=n_samples)
        _, scores = test()
    names = list(scores["System"])
    out = []
    for key, column in scores.items():
        if key == "System":
            continue
        metric = "BLEU" if key.startswith("BLEU") else "chrF"
        base = column[0]
        for i, result in enumerate(column[1:], start=1):
            identical = systems[i - 1][1] == baseline[1]
            out.append(
                PairedResult(
                    names[i],
                    names[0],
                    metric,
                    float(result.score),
                    float(base.score),
                    1.0 if identical else float(result.p_value),
                    None if result.mean is None else float(result.mean),
                    None if result.ci is None else float(result.ci),
                )
            )
    return out
