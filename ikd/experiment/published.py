"""Published numbers (experiments/published/*.yaml): the paper's values of a table, to print beside ours.

Layout: `source:` (where the numbers come from), optional `note:`, and `rows:` ROW -> SPLIT -> METRIC -> value,
a value being a number or {mean: x, std: y}; or `pairs:` PAIR (en-de, en-fr) -> rows, when one table covers
several language pairs. SPLIT `avg` is the mean over the test sets (Table 2); METRIC is bleu, meteor, chrf or
r@K."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ikd.errors import IkdError


@dataclass
class Published:
    source: str
    note: str = ""
    rows: dict[str, dict[str, dict[str, tuple[float, float | None]]]] = field(default_factory=dict)

    def value(self, row: str, split: str, metric: str) -> tuple[float, float | None] | None:
        return self.rows.get(row, {}).get(split, {}).get(metric)


def _number(value, where: str) -> tuple[float, float | None]:
    if isinstance(value, dict):
        unknown = set(value) - {"mean", "std"}
        if unknown or "mean" not in value:
            raise IkdError(f"{where}: expected a number or {{mean: x, std: y}}, got {value!r}")
        mean, std = value["mean"], value.get("std")
    else:
        mean, std = value, None
    for x in (mean, std):
        if x is not None and (isinstance(x, bool) or not isinstance(x, int | float)):
            raise IkdError(f"{where}: expected a number, got {x!r}")
    return float(mean), None if std is None else float(std)


def _rows(raw, where: str) -> dict[str, dict[str, dict[str, tuple[float, float | None]]]]:
    if not isinstance(raw, dict):
        raise IkdError(f"{where}: expected a mapping ROW -> SPLIT -> METRIC -> value")
    rows: dict[str, dict[str, dict[str, tuple[float, float | None]]]] = {}
    for row, splits in raw.items():
        if not isinstance(splits, dict):
            raise IkdError(f"{where}.{row}: expected a mapping SPLIT -> METRIC -> value")
        rows[str(row)] = {}
        for split, metrics in splits.items():
            if not isinstance(metrics, dict):
                raise IkdError(f"{where}.{row}.{split}: expected a mapping METRIC -> value")
            rows[str(row)][str(split)] = {
                str(m).lower(): _number(v, f"{where}.{row}.{split}.{m}") for m, v in metrics.items()
            }
    return rows


def load_published(path: str | os.PathLike, pair: str) -> Published:
    """Read a published-numbers file; with `pairs:`, the rows of `pair`."""
    path = Path(path)
    if not path.is_file():
        raise IkdError(f"{path}: published numbers not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise IkdError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise IkdError(f"{path}: expected a mapping with source: and rows: (or pairs:)")
    unknown = set(raw) - {"source", "note", "rows", "pairs", "table"}
    if unknown:
        raise IkdError(f"{path}: unknown key {sorted(unknown)[0]!r} (known: source, note, table, rows, pairs)")
    if not isinstance(raw.get("source"), str):
        raise IkdError(f"{path}: source: say where the numbers come from (a string)")
    if ("rows" in raw) == ("pairs" in raw):
        raise IkdError(f"{path}: give rows: or pairs:, one of them")
    if "pairs" in raw:
        pairs = raw["pairs"]
        if not isinstance(pairs, dict) or pair not in pairs:
            have = ", ".join(pairs) if isinstance(pairs, dict) else "none"
            raise IkdError(f"{path}: pairs: no {pair} (has {have})")
        rows = _rows(pairs[pair], f"{path}: pairs.{pair}")
    else:
        rows = _rows(raw["rows"], f"{path}: rows")
    return Published(raw["source"], str(raw.get("note") or ""), rows)
