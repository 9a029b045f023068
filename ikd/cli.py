"""The `ikd` command line: one Typer app, each command in its own module under ikd.commands.

Importing this module (and building any help text) never imports torch: the commands import what they
use inside their functions."""

from __future__ import annotations

import os
import sys

import typer

from ikd import __version__
from ikd.commands import (
    analyze,
    bpe,
    degrade,
    evaluate,
    experiment,
    export,
    prepare,
    recipes,
    retrieve,
    serve,
    train,
    translate,
)
from ikd.errors import IkdError, Terminated
from ikd.fileio import os_error_message


def _hide_flag_types() -> None:
    """Help shows a switch as `--detok`, not `--detok <bool>`: a switch takes no value."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "_ikd", False):
        return

    def display_type_rich(self, ctx):
        if self.is_flag and not self.count and self.metavar is None:
            return None
        return shown(self, ctx)

    display_type_rich._ikd = True
    TyperOption.display_type_rich = display_type_rich


_hide_flag_types()

COMMANDS = {
    "prepare": prepare,
    "bpe": bpe,
    "train": train,
    "translate": translate,
    "evaluate": evaluate,
    "retrieve": retrieve,
    "degrade": degrade,
    "analyze": analyze,
    "recipes": recipes,
    "experiment": experiment,
    "export": export,
    "serve": serve,
}


def _version(value: bool) -> None:
    if value:
        print(f"ikd {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_version, is_eager=True
    ),
) -> None:
    """Image-free multimodal machine translation by inversion knowledge distillation (IKD-MMT)."""


def make_app(names: list[str] | None = None) -> typer.Typer:
    """The Typer app with the given commands (default: all of them)."""
    new = typer.Typer(
        name="ikd",
        help="Image-free multimodal machine translation by inversion knowledge distillation (IKD-MMT).",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="markdown",
    )
    new.callback()(_root)
    for name in names or list(COMMANDS):
        COMMANDS[name].register(new)
    return new


app = make_app()


def _app_for(args: list[str]) -> typer.Typer:
    """Only the command asked for: Typer converts every parameter of every command it holds before
    running one, and a start-up of `ikd translate` need not pay for the others."""
    if args and args[0] in COMMANDS:
        return make_app([args[0]])
    return app


def _error(message: str) -> None:
    from rich.console import Console
    from rich.text import Text

    # the message as plain text: it may hold brackets ([U], [N, C, H, W]) that markup would eat
    Console(stderr=True).print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI. IkdError and OSError become a one-line message on stderr and exit status 1; Ctrl-C
    exits 130 with one line, SIGTERM during training 143 with one line.

    With `argv` (tests) the exit status is returned; as the console script the process exits with it.
    """
    from ikd.commands import switch_aliases
    from ikd.console import set_quiet

    args = sys.argv[1:] if argv is None else argv
    set_quiet(False)
    try:
        args = switch_aliases(list(args))
        _app_for(args)(args=args, prog_name="ikd")  # standalone mode: usage errors print and raise SystemExit
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code == 130:  # Typer turns KeyboardInterrupt into exit status 130, without a word
            print("ikd: interrupted", file=sys.stderr)
    except KeyboardInterrupt:
        print("ikd: interrupted", file=sys.stderr)
        code = 130
    except Terminated as e:  # SIGTERM while training (Slurm's preemption): what is kept and how to go on
        print(f"ikd: {e}", file=sys.stderr, flush=True)
        code = 143
        if argv is None:  # the run is saved and its lock released; skip the interpreter's shutdown, where
            sys.stdout.flush()  # multiprocessing's helper threads print tracebacks once their peers are gone
            os._exit(code)
    except IkdError as e:
        _error(str(e))
        code = 1
    except OSError as e:
        _error(os_error_message(e))
        code = 1
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
