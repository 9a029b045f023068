"""The rich consoles of the commands: wide when the output is a pipe or a file, so that tables, titles and
messages are not wrapped at 80 columns there."""

from __future__ import annotations

from rich.console import Console

PIPE_WIDTH = 200


def make_console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    return console
