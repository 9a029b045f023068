"""Request counts and latencies of the server, written in Prometheus' text format (no client library: a few
counters and histograms are all the server keeps)."""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

# seconds: from a cached short answer to a long batch on a slow CPU
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# sentences per batched search
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass
class Histogram:
    """Cumulative-bucket histogram: counts[i] observations <= buckets[i]; the last count is +Inf."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out, running = [], 0
        for bound, count in zip([*map(_number, self.buckets), "+Inf"], self.counts):
            running += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {running}')
        braces = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{braces} {self.total:.6f}", f"{name}_count{braces} {self.n}"]
        return out


def _number(value: float) -> str:
    return f"{value:g}"


class Metrics:
    """Thread-safe counters: requests by (path, status), latency by path, sentences translated, batches and
    their sizes. `paths` is the fixed set of labels; any other path counts as "other" (a scanner requesting
    random URLs cannot grow the label set)."""

    def __init__(self, paths: tuple[str, ...]) -> None:
        self.paths = paths
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.sentences = 0
        self.batches = Histogram(BATCH_BUCKETS)

    def label(self, path: str) -> str:
        return path if path in self.paths else "other"

    def request(self, path: str, status: int, seconds: float) -> None:
        label = self.label(path)
        with self._lock:
            self.requests[(label, status)] += 1
            self.latency.setdefault(label, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def batch(self, sentences: int) -> None:
        with self._lock:
            self.sentences += sentences
            self.batches.observe(sentences)

    def render(self, pending: int) -> str:
        """The Prometheus text exposition (version 0.0.4)."""
        with self._lock:
            lines = ["# HELP ikd_requests_total HTTP requests answered, by path and status.",
                     "# TYPE ikd_requests_total counter"]
            for (path, status), count in sorted(self.requests.items()):
                lines.append(f'ikd_requests_total{{path="{path}",status="{status}"}} {count}')
            lines += ["# HELP ikd_request_seconds Time from request to response, by path.",
                      "# TYPE ikd_request_seconds histogram"]
            for path, hist in sorted(self.latency.items()):
                lines += hist.lines("ikd_request_seconds", f'path="{path}"')
            lines += ["# HELP ikd_sentences_total Sentences translated (empty ones included).",
                      "# TYPE ikd_sentences_total counter", f"ikd_sentences_total {self.sentences}",
                      "# HELP ikd_batch_sentences Sentences per batched search.",
                      "# TYPE ikd_batch_sentences histogram", *self.batches.lines("ikd_batch_sentences"),
                      "# HELP ikd_pending_sentences Sentences waiting for or in a search.",
                      "# TYPE ikd_pending_sentences gauge", f"ikd_pending_sentences {pending}",
                      "# HELP ikd_uptime_seconds Seconds since the server started.",
                      "# TYPE ikd_uptime_seconds gauge", f"ikd_uptime_seconds {time.monotonic() - self.started:.3f}"]
        return "\n".join(lines) + "\n"
