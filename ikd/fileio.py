"""File helpers: atomic writes and strict line reading with errors that name file and line."""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ikd.errors import IkdError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only if the block succeeds.

    A crash or kill leaves either the old file or none, never a half-written one that looks complete.
    """
    path = Path(path)
    if path.is_dir():
        raise IkdError(f"{path}: is a folder, not a file")
    with _named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _named(path, tmp_path):
            yield tmp_path
            with open(tmp_path, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def _named(path: Path, tmp: Path | None = None) -> Iterator[None]:
    """An OSError about the temporary file (or about no file: a write that ran out of space) names the file
    the user asked for, so that the one-line error says which output failed."""
    try:
        yield
    except OSError as e:
        ours = e.filename is not None and Path(e.filename).name.startswith(f".{path.name}.")
        writing = e.filename is None and e.errno in _WRITE_ERRORS
        if ours or writing or (tmp is not None and str(e.filename) == str(tmp)):
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_lines(path: str | os.PathLike, lines: list[str]) -> None:
    """Write one line per item, each ending in a newline."""
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_lines(path: str | os.PathLike, allow_empty: bool = False) -> list[str]:
    """Read a UTF-8 text file (optionally .gz) into lines without their newline.

    Raises IkdError naming the file and 1-based line for non-UTF-8 bytes or, unless `allow_empty`,
    for empty (whitespace-only) lines.
    """
    path = Path(path)
    if path.is_dir():
        raise IkdError(f"{path}: is a folder, not a file")
    if not path.is_file():
        raise IkdError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; a cut-off .gz ends in EOFError
        raise IkdError(f"{path}: cannot be read ({e or 'the compressed stream ends early'})") from None
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark is no part of the first token
        raw = raw[3:]
    return decode_lines(raw, str(path), allow_empty)


def decode_lines(raw: bytes, name: str, allow_empty: bool = False) -> list[str]:
    """Bytes -> lines (strict UTF-8, CRLF or LF endings); errors name `name` and the line."""
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out: list[str] = []
    for number, line in enumerate(lines, start=1):
        try:
            text = line.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as e:
            raise IkdError(f"{name}:{number}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
        if not allow_empty and not text.strip():
            raise IkdError(f"{name}:{number}: empty line")
        out.append(text)
    return out
