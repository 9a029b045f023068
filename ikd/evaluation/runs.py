"""Score one or several runs of a system (seeds) against one reference: per-run BLEU/chrF/METEOR, mean and
standard deviation over runs, baselines and the cluster bootstrap's p-values over all runs of both; as a
JSON-ready dict and a rich table."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ikd.errors import IkdError
from ikd.evaluation.meteor import meteor
from ikd.evaluation.metrics import bleu, check_lengths, chrf
from ikd.evaluation.significance import DEFAULT_SAMPLES, DEFAULT_SEED, MARKS, cluster_bootstrap, describe, mark

METRICS = ("bleu", "chrf", "meteor")


def parse_metrics(text: str) -> tuple[str, ...]:
    names = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise IkdError(f"--metrics {text!r}: choose from {', '.join(METRICS)} (comma-separated)")
    return names


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; 0 for a single run)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


@dataclass
class MeteorOptions:
    lang: str = "de"
    jar: str | None = None
    require: bool = False


@dataclass
class Scoring:
    metrics: tuple[str, ...] = ("bleu", "meteor", "chrf")
    meteor: MeteorOptions = field(default_factory=MeteorOptions)
    bootstrap_samples: int = DEFAULT_SAMPLES
    seed: int = DEFAULT_SEED


def _score(name: str, hyps: list[str], refs: list[str], scoring: Scoring, meta: dict) -> dict:
    row: dict = {"name": name}
    if "bleu" in scoring.metrics:
        b = bleu(hyps, refs)
        row["bleu"] = b.score
        row["bleu_detail"] = b.detail
        meta["bleu_signature"] = b.signature
    if "meteor" in scoring.metrics:
        m = meteor(hyps, refs, scoring.meteor.lang, scoring.meteor.jar, scoring.meteor.require)
        row["meteor"] = m.score
        row["meteor_method"] = m.method
        meta["meteor_method"] = m.method
        meta["meteor_official"] = m.official
    if "chrf" in scoring.metrics:
        c = chrf(hyps, refs)
        row["chrf"] = c.score
        meta["chrf_signature"] = c.signature
    return row


def _summary(rows: list[dict], metrics: tuple[str, ...]) -> dict:
    out: dict = {"runs": len(rows)}
    for m in metrics:
        mean, std = mean_std([r[m] for r in rows])
        out[m] = {"mean": mean, "std": std}
    return out


def score_runs(
    systems: list[tuple[str, list[str]]],
    refs: list[str],
    ref_name: str,
    scoring: Scoring,
    baselines: list[tuple[str, list[str]]] | None = None,
) -> dict:
    """Score each (name, hypotheses) run and each baseline run; with baselines, one significance test per
    metric (BLEU, chrF) of all the system's runs against all the baseline's (`cluster_bootstrap`)."""
    baselines = baselines or []
    if not systems:
        raise IkdError("nothing to evaluate: give --hyp (or --checkpoint)")
    if not refs:
        raise IkdError(f"{ref_name}: no reference lines")
    for name, hyps in [*systems, *baselines]:
        check_lengths(hyps, refs, name, ref_name)
    meta: dict = {"lang": scoring.meteor.lang, "references": ref_name, "sentences": len(refs)}
    rows = [_score(name, hyps, refs, scoring, meta) for name, hyps in systems]
    report: dict = {"meta": meta, "metrics": list(scoring.metrics), "systems": rows}
    report["summary"] = _summary(rows, scoring.metrics)
    if baselines:
        base_rows = [_score(name, hyps, refs, scoring, meta) for name, hyps in baselines]
        report["baselines"] = base_rows
        report["baseline_summary"] = _summary(base_rows, scoring.metrics)
        sig_metrics = tuple(m for m in scoring.metrics if m in ("bleu", "chrf")) or ("bleu",)
        system = (_side_name(systems), [hyps for _, hyps in systems])
        baseline = (_side_name(baselines), [hyps for _, hyps in baselines])
        tests = cluster_bootstrap(system, baseline, refs, sig_metrics, scoring.bootstrap_samples, scoring.seed)
        report["significance"] = [{**asdict(t), "mark": mark(t.p_value, t.p_worse)} for t in tests]
        report["meta"]["bootstrap"] = {
            "samples": scoring.bootstrap_samples,
            "seed": scoring.seed,
            "test": describe(scoring.bootstrap_samples, scoring.seed),
        }
    return report


def _side_name(runs: list[tuple[str, list[str]]]) -> str:
    return ", ".join(name for name, _ in runs)


# ---------------------------------------------------------------------------------------------- display
_COLUMNS = {"bleu": "BLEU", "meteor": "METEOR", "chrf": "chrF"}


def _meteor_header(report: dict) -> str:
    return "METEOR" if report["meta"].get("meteor_official", True) else "METEOR (fallback)"


def render(report: dict, title: str, console) -> None:
    """A rich table: one row per run (and baseline), mean ± std over runs, then the significance tests."""
    from rich.table import Table

    metrics = report["metrics"]
    console.print(title, markup=False, highlight=False, soft_wrap=True)
    table = Table()
    table.add_column("system")
    for m in metrics:
        table.add_column(_meteor_header(report) if m == "meteor" else _COLUMNS[m], justify="right")

    def add_rows(rows: list[dict], summary: dict, label: str) -> None:
        for r in rows:
            table.add_row(r["name"], *(f"{r[m]:.2f}" for m in metrics))
        if len(rows) > 1:
            table.add_row(
                f"{label} mean ± std ({len(rows)} runs)",
                *(f"{summary[m]['mean']:.2f} ± {summary[m]['std']:.2f}" for m in metrics),
                style="bold",
            )

    add_rows(report["systems"], report["summary"], "system")
    if report.get("baselines"):
        table.add_section()
        add_rows(report["baselines"], report["baseline_summary"], "baseline")
    console.print(table)
    meta = report["meta"]
    if "bleu_signature" in meta:
        console.print(f"BLEU signature: {meta['bleu_signature']}", markup=False, highlight=False)
    if "chrf_signature" in meta:
        console.print(f"chrF signature: {meta['chrf_signature']}", markup=False, highlight=False)
    if "meteor_method" in meta:
        console.print(f"METEOR: {meta['meteor_method']}", markup=False, highlight=False)
    tests = report.get("significance") or []
    if tests:
        boot = meta["bootstrap"]
        sig = Table(title=f"cluster bootstrap over the runs ({boot['samples']} samples, seed {boot['seed']})")
        for col in ("system", "baseline", "metric", "system score", "baseline score", "p"):
            sig.add_column(col, justify="right" if "score" in col or col == "p" else "left")
        for t in tests:
            sig.add_row(
                t["system"],
                t["baseline"],
                t["metric"],
                f"{t['score']:.2f}",
                f"{t['baseline_score']:.2f}",
                f"{t['p_value']:.4f}{t['mark']}",
            )
        console.print(sig)
        console.print(
            f"{MARKS}; the scores are means over the runs; {boot['test']}", markup=False, soft_wrap=True
        )
