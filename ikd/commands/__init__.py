"""One module per `ikd` command; each exposes register(app). Heavy imports (torch, matplotlib, sacrebleu ...)
stay inside the command functions so that `ikd --help` never imports torch and each command loads only what
it uses.

The helpers here give every command the same conventions: `-` means stdin or stdout wherever a file is read
or written, paths are checked before any work so that a wrong one is a one-line error naming it, and the
shared switches (-q, --device, --json) read the same everywhere."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import typer

from ikd.errors import IkdError

STD = "-"
DEVICE_HELP = "auto (a GPU when present), cpu, cuda or cuda:N."
QUIET_HELP = "No progress bars and no summary on stderr."
JSON_HELP = "Write the results as JSON to this file ('-': stdout; the table then goes to stderr)."


def is_std(value: Path | str | None) -> bool:
    return value is not None and str(value) == STD


def _check_writable_below(path: Path, folder: bool = False) -> None:
    """`path` (a file, or with `folder` a folder) can be created: no regular file above it, and the deepest
    existing folder on its way is writable."""
    from ikd.fileio import blocking_file

    blocker = blocking_file(path)
    if blocker is not None:
        raise IkdError(f"{path}: {blocker} is a file, not a folder")
    candidates = [path, *path.parents] if folder else list(path.parents)
    existing = next((p for p in candidates if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise IkdError(f"{path}: permission denied (cannot write in {existing})")


def output_file(value: Path | str | None) -> Path | str | None:
    """Typer callback for options naming a file to write: checked before any work; '-' (stdout) passes."""
    if value is None or is_std(value):
        return value
    path = Path(value)
    if path.is_dir():
        raise IkdError(f"{path}: is a folder; give a file name")
    _check_writable_below(path)
    return value


def output_dir(value: Path | str | None) -> Path | str | None:
    """Typer callback for options naming a folder to write into."""
    if value is None:
        return value
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise IkdError(f"{path}: is a file, not a folder")
    _check_writable_below(path, folder=True)
    return value


def input_file(value: Path | str | None) -> Path | str | None:
    """Typer callback for options naming a file to read: it must exist and be a file; '-' (stdin) passes."""
    if value is None or is_std(value):
        return value
    path = Path(value)
    if path.is_dir():
        raise IkdError(f"{path}: is a folder, not a file")
    if not path.exists():
        raise IkdError(f"{path}: file not found")
    return value


def input_files(values: list[Path] | None) -> list[Path] | None:
    for value in values or []:
        input_file(value)
    if values and sum(is_std(v) for v in values) > 1:
        raise IkdError("'-' (stdin) can be read once only")
    return values


def device_option(value: str | None) -> str | None:
    """Typer callback for --device: the spelling only (whether CUDA is there is checked when it is used)."""
    if value is None or value in ("auto", "cpu", "cuda"):
        return value
    kind, _, index = value.partition(":")
    if kind == "cuda" and index.isdigit():
        return value
    raise IkdError(f"--device {value!r}: expected auto, cpu, cuda or cuda:N")


def quiet_option(value: bool) -> bool:
    """Typer callback for -q/--quiet: silences progress bars and summaries for the whole command."""
    from ikd.console import set_quiet

    set_quiet(value)
    return value


def json_option() -> typer.models.OptionInfo:
    """--json PATH|-. A --json without a value (the old switch of retrieve and degrade) is rewritten to
    `--json -` by `switch_aliases` before parsing."""
    return typer.Option(None, "--json", metavar="PATH|-", help=JSON_HELP, callback=output_file)


def switch_aliases(args: list[str]) -> list[str]:
    """Old spellings that the parser cannot express, rewritten (with a deprecation warning): `--json` given
    as a switch (nothing after it, or another option) means `--json -`."""
    from ikd.console import deprecated

    out = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--":
            out.extend(args[i + 1 :])
            break
        if arg == "--json":
            following = args[i + 1] if i + 1 < len(args) else None
            if following is None or (following.startswith("-") and following != STD):
                deprecated("--json without a value", "--json - (stdout) or --json PATH")
                out.append(STD)
    return out


def quiet() -> typer.models.OptionInfo:
    return typer.Option(False, "--quiet", "-q", help=QUIET_HELP, callback=quiet_option)


def device(default: str | None = "auto") -> typer.models.OptionInfo:
    return typer.Option(default, "--device", metavar="auto|cpu|cuda|cuda:N", help=DEVICE_HELP, callback=device_option)


@contextlib.contextmanager
def open_input(path: Path | str | None) -> Iterator[BinaryIO]:
    """A binary stream of a file, or of stdin for None or '-'."""
    if path is None or is_std(path):
        yield sys.stdin.buffer if hasattr(sys.stdin, "buffer") else _TextAsBytes(sys.stdin)
        return
    with open(path, "rb") as f:
        yield f


class _TextAsBytes:
    """Bytes lines from a text stream (tests replace sys.stdin with io.StringIO)."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def __iter__(self) -> Iterator[bytes]:
        for line in self.stream:
            yield line.encode("utf-8")

    def read(self) -> bytes:
        return self.stream.read().encode("utf-8")


def read_text_lines(path: Path | str, allow_empty: bool = True) -> list[str]:
    """fileio.read_lines, with '-' reading stdin (strict UTF-8; errors name <stdin> and the line)."""
    from ikd.fileio import decode_lines, read_lines

    if not is_std(path):
        return read_lines(path, allow_empty=allow_empty)
    with open_input(STD) as stream:
        return decode_lines(stream.read(), "<stdin>", allow_empty)


def write_stdout(text: str) -> None:
    """UTF-8 text to stdout, flushed (a reader at the other end of a pipe sees it at once)."""
    buffer = getattr(sys.stdout, "buffer", None)
    try:
        if buffer is not None:
            sys.stdout.flush()
            buffer.write(text.encode("utf-8"))
            buffer.flush()
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
    except OSError as e:  # stdout redirected to a file on a full disk
        if e.filename is not None or isinstance(e, BrokenPipeError):
            raise
        raise OSError(e.errno, e.strerror or str(e), "<stdout>") from None


def write_text(path: Path | str, text: str) -> None:
    """Write a whole text file atomically, or to stdout for '-'."""
    if is_std(path):
        write_stdout(text)
        return
    from ikd.fileio import atomic_write_text

    atomic_write_text(path, text)


def write_json(path: Path | str, payload: object) -> None:
    import json

    write_text(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def cleanup_new_folder(path: Path) -> Iterator[None]:
    """If the block fails, remove the empty folders it left at and above `path` that did not exist before
    (a failed run leaves no empty --out behind; a folder with files in it is never touched)."""
    path = Path(path)
    new = [p for p in [path, *path.parents] if not p.exists()]
    try:
        yield
    except BaseException:
        for folder in new:  # deepest first
            with contextlib.suppress(OSError):
                _remove_empty_tree(folder)
        raise


def _remove_empty_tree(folder: Path) -> None:
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            with contextlib.suppress(OSError):
                _remove_empty_tree(child)
    folder.rmdir()  # raises (and stops) when something is left in it
