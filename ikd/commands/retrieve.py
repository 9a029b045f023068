"""`ikd retrieve`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this command to the app (filled in by the retrieve work)."""
