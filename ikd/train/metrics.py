"""The run's metrics log: OUT/metrics.jsonl, one JSON object per log step and per epoch."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)  # JSON has no NaN; keep the fact readable
        return round(value, 6)
    return value


class MetricsLog:
    """Appends records to OUT/metrics.jsonl (a resumed run continues the same file). Disabled on ranks
    other than 0."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def write(self, kind: str, **fields: Any) -> dict[str, Any]:
        record = {"kind": kind, **{k: _clean(v) for k, v in fields.items()}}
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            except OSError as e:  # a full disk says so without a file name
                if e.filename is not None:
                    raise
                raise OSError(e.errno, e.strerror or str(e), str(self.path)) from None
        return record


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
