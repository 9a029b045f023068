"""Ranges of numbers: what a recipe key (ikd.recipe.RANGES), an experiment file's key or a command's option
accepts, said the same way in the error messages and in docs/recipes.md."""

from __future__ import annotations

from dataclasses import dataclass

from ikd.errors import IkdError


@dataclass(frozen=True)
class Range:
    """The values a numeric key accepts: from `low` to `high` (None: no bound), each bound included unless
    `*_open`."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def text(self) -> str:
        """In words, as the error messages and docs/recipes.md say it: "at least 1", "from 0 to 1 (1 excluded)"."""
        low, high = _number(self.low), _number(self.high)
        if self.high is None:
            return f"more than {low}" if self.low_open else f"at least {low}"
        if self.low is None:
            return f"less than {high}" if self.high_open else f"at most {high}"
        excluded = [b for b, is_open in ((low, self.low_open), (high, self.high_open)) if is_open]
        return f"from {low} to {high}" + (f" ({' and '.join(excluded)} excluded)" if excluded else "")


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


AT_LEAST_1 = Range(1)
NOT_NEGATIVE = Range(0)
POSITIVE = Range(0, low_open=True)
PROBABILITY = Range(0, 1, high_open=True)  # dropout, label smoothing, Adam's betas
SEEDS = Range(0, 2**31 - 1)  # numpy's RandomState takes seeds below 2**32; training's seed + epoch must stay there


# The search and scoring options of `ikd translate` and `ikd evaluate` (and the experiment file's evaluate:
# section, under the same names with '_' for '-'), checked before a model is loaded.
OPTION_RANGES: dict[str, Range] = {
    "beam": AT_LEAST_1,
    "nbest": AT_LEAST_1,  # and at most --beam
    "lenpen": Range(0, 10),  # score = sum log p / length**lenpen: 0 the plain sum; `ikd serve` allows the same
    "max_len_a": NOT_NEGATIVE,
    "max_len_b": NOT_NEGATIVE,  # the cap a*src_len+b is at least 1 whatever they are
    "batch_size": AT_LEAST_1,
    "max_tokens": NOT_NEGATIVE,  # 0: no cap
    "buffer_lines": AT_LEAST_1,
    "threads": NOT_NEGATIVE,  # 0: one thread
    "bootstrap_samples": AT_LEAST_1,
    "seed": Range(0, 2**32 - 1),  # the bootstrap's numpy generator (`ikd evaluate --seed`)
    "bootstrap_seed": Range(0, 2**32 - 1),  # the same, as the experiment file names it
}


def check_options(where: str = "--", **values: float | None) -> None:
    """IkdError for the first option out of OPTION_RANGES: `--max-len-a -1.0: must be at least 0` (`where` "--",
    the command line) or `FILE: evaluate.max_len_a -1.0: ...` (`where` "FILE: evaluate.")."""
    for name, value in values.items():
        allowed = OPTION_RANGES[name]
        if value is None:
            continue
        if value != value or value in (float("inf"), float("-inf")):
            raise IkdError(f"{_option(where, name)} {value}: must be a finite number")
        if value not in allowed:
            raise IkdError(f"{_option(where, name)} {value}: must be {allowed.text()}")
    beam, nbest = values.get("beam"), values.get("nbest")
    if beam is not None and nbest is not None and nbest > beam:
        raise IkdError(f"{_option(where, 'nbest')} {nbest}: must be between 1 and the beam size ({beam})")


def _option(where: str, name: str) -> str:
    return f"--{name.replace('_', '-')}" if where == "--" else f"{where}{name}"
