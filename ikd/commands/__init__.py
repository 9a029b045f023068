"""One module per `ikd` command; each exposes register(app). Heavy imports (torch) stay inside the
command functions so that `ikd --help` is quick."""

from pathlib import Path

import typer


def output_file(value: Path | str | None) -> Path | str | None:
    """Typer callback for options naming a file to write: a folder there is a usage error before any work
    (instead of a traceback after it); '-' (stdout, where an option allows it) passes."""
    if value is not None and str(value) != "-" and Path(value).is_dir():
        raise typer.BadParameter(f"{value} is a folder; give a file name")
    return value
