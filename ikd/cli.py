"""The `ikd` command line: one Typer app, each command in its own module under ikd.commands."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.text import Text

from ikd.commands import analyze, bpe, degrade, evaluate, export, prepare, retrieve, train, translate
from ikd.errors import IkdError

app = typer.Typer(
    name="ikd",
    help="Image-free multimodal machine translation by inversion knowledge distillation (IKD-MMT).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

for module in (prepare, bpe, train, translate, evaluate, retrieve, degrade, analyze, export):
    module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI. IkdError becomes a one-line message on stderr and exit status 1.

    With `argv` (tests) the exit status is returned; as the console script the process exits with it.
    """
    args = sys.argv[1:] if argv is None else argv
    try:
        app(args=args, prog_name="ikd")  # standalone mode: usage errors print and raise SystemExit
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except IkdError as e:
        # the message as plain text: it may hold brackets ([U], [N, C, H, W]) that markup would eat
        Console(stderr=True).print(Text.assemble(("error:", "bold red"), " ", str(e)), highlight=False, soft_wrap=True)
        code = 1
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
