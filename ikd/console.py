"""What the commands print besides their results: rich consoles, warnings, progress bars and the -q switch.

Results go to stdout; everything else (progress, summaries, warnings) to stderr. The consoles are wide when
the output is a pipe or a file, so that tables, titles and messages are not wrapped at 80 columns there."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

PIPE_WIDTH = 200

_quiet = False


def set_quiet(quiet: bool) -> None:
    """-q/--quiet: no progress bars and no summaries for the rest of the command."""
    global _quiet
    _quiet = bool(quiet)


def is_quiet() -> bool:
    return _quiet


def make_console(stderr: bool = False) -> Console:
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    return console


def _line(message: str) -> None:
    if progress_enabled():  # a bar may be drawn on stderr: print above it
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)


def info(message: str) -> None:
    """A summary or note on stderr; silent under -q."""
    if not _quiet:
        _line(message)


def warn(message: str) -> None:
    """`warning: ...` on stderr, also under -q (a warning is never noise)."""
    _line(f"warning: {message}")


def deprecated(old: str, new: str) -> None:
    warn(f"{old} is deprecated and will be removed in the next release; use {new}")


def progress_enabled() -> bool:
    """Progress bars only for a person watching: stderr is a terminal and -q was not given."""
    stream = sys.stderr
    return not _quiet and hasattr(stream, "isatty") and stream.isatty()


def progress(iterable: Iterable[Any] | None = None, *, total: float | None = None, desc: str = "", unit: str = "it"):
    """A tqdm bar on stderr that draws nothing unless progress_enabled(); usable as an iterable or with update()."""
    from tqdm import tqdm

    return tqdm(
        iterable, total=total, desc=desc, unit=unit, disable=not progress_enabled(), leave=False, file=sys.stderr
    )
