"""The experiment's table: one row per system, one column per split x metric, mean ± std over seeds, the
significance of each system's difference to its baseline, and the published values beside.

Seeds and significance: one test per cell, the cluster bootstrap of `ikd evaluate`
(ikd.evaluation.significance): each sample draws the test sentences with replacement and scores every seed
finished by both systems on them; a side's score is the mean over its seeds, the statistic the cell reports.
One-sided: † / ‡ mark a system better than its baseline, ↓ one worse."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ikd.data.prepared import PreparedData
from ikd.errors import IkdError
from ikd.evaluation.runs import mean_std
from ikd.evaluation.significance import MARKS, cluster_bootstrap, describe, mark
from ikd.experiment.layout import check_identity, read_json, write_json
from ikd.experiment.published import Published, load_published
from ikd.experiment.spec import TESTED, Experiment
from ikd.experiment.steps import hyp_path, identity, retrieval_current, run_state, scores_current
from ikd.fileio import read_lines

AVG = "avg"
SPLIT_NAMES = {
    "train": "Train",
    "val": "Valid",
    "test_2016_flickr": "Test2016",
    "test_2017_flickr": "Test2017",
    "test_2017_mscoco": "MSCOCO",
    AVG: "Avg.",
}
METRIC_NAMES = {"bleu": "BLEU", "meteor": "METEOR", "chrf": "chrF"}


def split_name(split: str) -> str:
    return SPLIT_NAMES.get(split, split)


def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric.upper())


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)  # one per finished seed
    seeds: list[int] = field(default_factory=list)
    expected: int = 0
    status: str = ""  # empty when values exist, else: missing, unfinished, failed, other recipe, n/a
    p: float | None = None  # share of bootstrap samples in which the system is not better than its baseline
    p_worse: float | None = None  # ... not worse
    tested_seeds: list[int] = field(default_factory=list)
    published: tuple[float, float | None] | None = None

    @property
    def mean_std(self) -> tuple[float, float] | None:
        return mean_std(self.values) if self.values else None


@dataclass
class Row:
    system: str
    label: str
    baseline: str | None
    runs: dict[int, str]  # seed -> state
    cells: dict[tuple[str, str], Cell]


@dataclass
class TableData:
    experiment: Experiment
    columns: list[tuple[str, str]]  # (split, metric)
    rows: list[Row]
    meta: dict[str, Any]
    published: Published | None


def _run_status(exp: Experiment, system: str, seed: int) -> str:
    try:
        check_identity(exp.run_dir(system, seed), identity(exp, system, seed))
    except IkdError:
        return "other recipe"
    return run_state(exp, system, seed).state


def collect(exp: Experiment, bootstrap: bool = True) -> TableData:
    """Read every run's cached scores; test each system against its baseline."""
    ev = exp.spec.evaluate
    metrics = exp.metric_columns()
    splits = list(exp.spec.table.splits) or list(ev.splits) + ([AVG] if ev.average else [])
    columns = [(split, m) for split in splits for m in metrics]
    meta: dict[str, Any] = {}
    published = None
    if exp.spec.published:
        first = next(iter(exp.systems.values()))
        published = load_published(exp.spec.published, first.pair)
    rows = []
    for name, system in exp.systems.items():
        status = {seed: _run_status(exp, name, seed) for seed in exp.seeds}
        per_seed: dict[int, dict[tuple[str, str], float]] = {}
        for seed in exp.seeds:
            if status[seed] == "other recipe":
                continue
            per_seed[seed] = _run_values(exp, name, seed, meta)
        cells = {}
        for split, metric in columns:
            cell = Cell(expected=len(exp.seeds))
            for seed in exp.seeds:
                value = per_seed.get(seed, {}).get((split, metric))
                if value is not None:
                    cell.values.append(value)
                    cell.seeds.append(seed)
            if not cell.values:
                cell.status = _empty_status(exp, name, metric, status)
            if published is not None:
                cell.published = published.value(system.spec.published or name, split, metric)
            cells[split, metric] = cell
        rows.append(Row(name, system.label, system.baseline, status, cells))
    if bootstrap:
        _significance(exp, rows, columns)
    meta["bootstrap"] = {"samples": ev.bootstrap_samples, "seed": ev.bootstrap_seed}
    return TableData(exp, columns, rows, meta, published)


def _empty_status(exp: Experiment, name: str, metric: str, status: dict[int, str]) -> str:
    if metric.startswith("r@") and exp.systems[name].recipe.model.text_only:
        return "n/a"
    states = set(status.values())
    if states == {"missing"}:
        return "missing"
    if "failed" in states:
        return "failed"
    if states == {"other recipe"}:
        return "other recipe"
    return "unfinished"


def _run_values(exp: Experiment, name: str, seed: int, meta: dict[str, Any]) -> dict[tuple[str, str], float]:
    system = exp.systems[name]
    run_dir = exp.run_dir(name, seed)
    values: dict[tuple[str, str], float] = {}
    ev = exp.spec.evaluate
    for split in ev.splits:
        scores = scores_current(exp, system, run_dir, split)
        if scores is not None:
            for metric, value in scores["scores"].items():
                values[split, metric] = float(value)
            for key, value in (scores.get("meta") or {}).items():
                meta.setdefault(key, value)
        probe = retrieval_current(exp, system, run_dir, split)
        if probe is not None:
            for key, value in probe["recall"].items():
                values[split, key.lower()] = float(value)
    if ev.average:
        for metric in exp.metric_columns():
            got = [values.get((split, metric)) for split in ev.average]
            if all(v is not None for v in got):
                values[AVG, metric] = sum(got) / len(got)  # type: ignore[arg-type]
    return values


# ---------------------------------------------------------------------------------------------- significance
SIGNIFICANCE_VERSION = "cluster-1"  # in the cache key: p-values of another test are not reused


def _runs(exp: Experiment, name: str, seeds: list[int], split: str) -> list[list[str]]:
    system = exp.systems[name]
    return [
        read_lines(hyp_path(exp.run_dir(name, seed), split, system.recipe.data.tgt), allow_empty=True) for seed in seeds
    ]


def _significance(exp: Experiment, rows: list[Row], columns: list[tuple[str, str]]) -> None:
    """p-values of each system against its baseline, for BLEU and chrF, cached in OUT/significance.json by the
    hashes of the hypotheses tested."""
    ev = exp.spec.evaluate
    by_name = {row.system: row for row in rows}
    cache_path = exp.out / "significance.json"
    cache = read_json(cache_path) or {}
    changed = False
    for row in rows:
        if row.baseline is None:
            continue
        base = by_name[row.baseline]
        for split, metric in columns:
            if metric not in TESTED or split == AVG:
                continue
            cell, base_cell = row.cells[split, metric], base.cells[split, metric]
            seeds = [s for s in cell.seeds if s in base_cell.seeds]
            if not seeds:
                continue
            runs = _runs(exp, row.system, seeds, split)
            base_runs = _runs(exp, base.system, seeds, split)
            system = exp.systems[row.system]
            refs = read_lines(PreparedData.at(system.eval_data).text(split, system.recipe.data.tgt), allow_empty=True)
            digest = hashlib.sha256(json.dumps([runs, base_runs, refs]).encode()).hexdigest()
            key = f"{SIGNIFICANCE_VERSION}|{row.system}|{base.system}|{split}|{metric}|{ev.bootstrap_samples}|"
            key += f"{ev.bootstrap_seed}|{digest}"
            if not isinstance(cache.get(key), dict):
                (result,) = cluster_bootstrap(
                    (row.system, runs), (base.system, base_runs), refs, (metric,), ev.bootstrap_samples,
                    ev.bootstrap_seed,
                )  # fmt: skip
                cache[key] = {"p": result.p_value, "p_worse": result.p_worse}
                changed = True
            cell.p, cell.p_worse = float(cache[key]["p"]), float(cache[key]["p_worse"])
            cell.tested_seeds = seeds
    if changed:
        write_json(cache_path, cache)


# ---------------------------------------------------------------------------------------------- rendering
def cell_mark(cell: Cell) -> str:
    return mark(cell.p, cell.p_worse)


def format_value(cell: Cell) -> str:
    ms = cell.mean_std
    if ms is None:
        return cell.status or "-"
    mean, std = ms
    text = f"{mean:.2f} ± {std:.2f}" if len(cell.values) > 1 else f"{mean:.2f}"
    if len(cell.values) < cell.expected:
        text += f" ({len(cell.values)}/{cell.expected})"
    return text + cell_mark(cell)


def format_p(row: Row, cell: Cell, is_baseline: bool) -> str:
    if row.baseline is None:
        return "baseline" if is_baseline else "-"
    if cell.p is None:
        return "-"
    seeds = "" if len(cell.tested_seeds) == cell.expected else f" ({len(cell.tested_seeds)} seeds)"
    return f"{cell.p:.3f}{cell_mark(cell)}{seeds}"


def format_published(cell: Cell) -> tuple[str, str]:
    if cell.published is None:
        return "-", "-"
    value, std = cell.published
    shown = f"{value:.2f}" + (f" ± {std:.2f}" if std is not None else "")
    ms = cell.mean_std
    return shown, ("-" if ms is None else f"{ms[0] - value:+.2f}")


def _has_p(data: TableData, column: tuple[str, str]) -> bool:
    return column[1] in TESTED and column[0] != AVG and any(r.baseline for r in data.rows)


def _has_published(data: TableData, column: tuple[str, str]) -> bool:
    return any(r.cells[column].published is not None for r in data.rows)


def grid(data: TableData) -> tuple[list[str], list[list[str]]]:
    """Header and body cells of the paper's layout (shared by markdown and latex)."""
    header = ["system", "runs"]
    for column in data.columns:
        header.append(f"{split_name(column[0])} {metric_name(column[1])}")
        if _has_p(data, column):
            header.append("p")
        if _has_published(data, column):
            header += ["paper", "Δ"]
    baselines = {r.baseline for r in data.rows if r.baseline}
    body = []
    for row in data.rows:
        finished = sum(1 for s in row.runs.values() if s == "done")
        line = [row.label + (" (baseline)" if row.system in baselines else ""), f"{finished}/{len(row.runs)}"]
        for column in data.columns:
            cell = row.cells[column]
            line.append(format_value(cell))
            if _has_p(data, column):
                line.append(format_p(row, cell, row.system in baselines))
            if _has_published(data, column):
                line += list(format_published(cell))
        body.append(line)
    return header, body


def legend(data: TableData) -> list[str]:
    exp = data.experiment
    ev = exp.spec.evaluate
    seeds = ", ".join(map(str, exp.seeds))
    lines = [
        f"mean ± sample standard deviation over the seeds ({seeds}) of each system; runs: finished/all; "
        "(k/n): only k of the n seeds finished; missing: not started; unfinished: started, not evaluated; "
        "other recipe: the run folder was made from another recipe and is left out; n/a: not defined "
        "(a text-only model has no multimodal feature to retrieve images with)",
        f"beam {ev.beam}, length penalty {ev.lenpen}, output cap {ev.max_len_a:g}·source + {ev.max_len_b}",
    ]
    if any(r.baseline for r in data.rows):
        boot = data.meta["bootstrap"]
        lines.append(
            f"{MARKS} (column p: the share of samples in which the system is not better; BLEU and chrF only): "
            f"{describe(boot['samples'], boot['seed'])}, over the seeds finished by both systems, as ikd evaluate"
        )
    if "bleu_signature" in data.meta:
        lines.append(f"BLEU: {data.meta['bleu_signature']}")
    if "meteor_method" in data.meta:
        lines.append(f"METEOR: {data.meta['meteor_method']}")
    if any(c.startswith("r@") for _, c in data.columns):
        lines.append("R@K: % of sentences whose own image is among the K images nearest to m (ikd retrieve)")
    if data.published is not None:
        lines.append(f"paper: {data.published.source}; Δ = ours − paper")
        if data.published.note:
            lines.append(data.published.note)
    unfinished = [
        f"{r.system}/seed{seed} ({state})" for r in data.rows for seed, state in r.runs.items() if state != "done"
    ]
    if unfinished:
        lines.append("not finished: " + ", ".join(unfinished))
    return lines


def render_markdown(data: TableData) -> str:
    header, body = grid(data)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |"

    out = [f"{data.experiment.name}", "", fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [fmt(line) for line in body]
    out += [""] + [f"- {line}" for line in legend(data)]
    return "\n".join(out) + "\n"


_LATEX = [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")]  # escapes first
_LATEX += [("±", r"$\pm$"), ("†", r"$^\dagger$"), ("‡", r"$^\ddagger$"), ("↓", r"$^\downarrow$"), ("Δ", r"$\Delta$")]


def _latex_escape(text: str) -> str:
    for a, b in _LATEX:
        text = text.replace(a, b)
    return text


def render_latex(data: TableData) -> str:
    header, body = grid(data)
    out = [r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule"]
    out.append(" & ".join(_latex_escape(h) for h in header) + r" \\")
    out.append(r"\midrule")
    out += [" & ".join(_latex_escape(c) for c in line) + r" \\" for line in body]
    out += [r"\bottomrule", r"\end{tabular}"]
    out += ["% " + line for line in legend(data)]
    return "\n".join(out) + "\n"


def to_records(data: TableData) -> list[dict[str, Any]]:
    """One record per system and column: the numbers behind the table (csv and json)."""
    records = []
    for row in data.rows:
        for split, metric in data.columns:
            cell = row.cells[split, metric]
            ms = cell.mean_std
            records.append(
                {
                    "system": row.system,
                    "label": row.label,
                    "split": split,
                    "metric": metric,
                    "mean": None if ms is None else round(ms[0], 4),
                    "std": None if ms is None else round(ms[1], 4),
                    "runs": len(cell.values),
                    "expected_runs": cell.expected,
                    "seeds": cell.seeds,
                    "values": [round(v, 4) for v in cell.values],
                    "status": cell.status or "ok",
                    "baseline": row.baseline,
                    "p_value": cell.p,
                    "p_worse": cell.p_worse,
                    "mark": cell_mark(cell),
                    "significant": None if cell.p is None else cell.p < 0.05,
                    "worse": None if cell.p_worse is None else cell.p_worse < 0.05,
                    "paper": None if cell.published is None else cell.published[0],
                    "paper_std": None if cell.published is None else cell.published[1],
                    "difference": None if cell.published is None or ms is None else round(ms[0] - cell.published[0], 4),
                }
            )
    return records


def render_csv(data: TableData) -> str:
    import csv
    import io

    records = to_records(data)
    buf = io.StringIO()
    fields = [k for k in records[0] if k not in ("seeds", "values")] + ["seeds", "values"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({**r, "seeds": " ".join(map(str, r["seeds"])), "values": " ".join(map(str, r["values"]))})
    return buf.getvalue()


def render_json(data: TableData) -> str:
    payload = {
        "experiment": data.experiment.name,
        "file": str(data.experiment.path),
        "out": str(data.experiment.out),
        "seeds": data.experiment.seeds,
        "runs": {r.system: {str(s): state for s, state in r.runs.items()} for r in data.rows},
        "cells": to_records(data),
        "legend": legend(data),
        "meta": data.meta,
    }
    return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"


RENDERERS = {"markdown": render_markdown, "latex": render_latex, "csv": render_csv, "json": render_json}


def render(data: TableData, fmt: str) -> str:
    if fmt not in RENDERERS:
        raise IkdError(f"--format {fmt!r}: expected one of {', '.join(RENDERERS)}")
    return RENDERERS[fmt](data)
