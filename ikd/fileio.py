"""File helpers: atomic writes and strict line reading with errors that name file and line."""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import re
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _cannot_create(path, e) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _named(path, tmp_path):
            try:
                yield tmp_path
            except Exception as e:
                failed = stopped_write(e, path)
                if failed is None:
                    raise
                raise failed from None
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
# How torch.save reports a write that stopped short (its C++ writer has no errno): "[enforce fail at
# inline_container.cc:672] . unexpected pos 704 vs 598", "PytorchStreamWriter failed writing file data/0: file
# write failed"
_TORCH_WRITE = re.compile(r"inline_container|PytorchStreamWriter|file write failed|unexpected pos")
# safetensors' Rust I/O errors carry the errno: "... Os { code: 28, kind: StorageFull, ... }", "(os error 28)"
_RUST_ERRNO = re.compile(r"code: (\d+)|os error (\d+)")
LOW_SPACE = 16 << 20  # bytes: a folder with less free than this when a write failed is on a full disk


def stopped_write(e: BaseException, path: Path) -> OSError | None:
    """The OSError, naming `path`, that a failed write of `path` amounts to, when `e` is the error
    of a library's writer (torch.save, safetensors) rather than Python's; None for other errors."""
    if isinstance(e, OSError):
        return None
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if type(e).__name__ == "SafetensorError":
        found = _RUST_ERRNO.search(str(e))
        if found:
            number = int(found.group(1) or found.group(2))
            return OSError(number, os.strerror(number), str(path))
        return OSError(errno.EIO, f"safetensors could not write it ({text})", str(path))
    if isinstance(e, RuntimeError) and _TORCH_WRITE.search(str(e)):
        if _nearly_full(path.parent):
            return OSError(errno.ENOSPC, "No space left on device", str(path))
        return OSError(errno.EIO, f"the write stopped short ({text}): a disk quota reached?", str(path))
    return None


def _nearly_full(folder: Path) -> bool:
    """Whether `folder`'s disk is (nearly) full; checked before the partial file is deleted."""
    try:
        stat = os.statvfs(folder)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < LOW_SPACE


def os_error_message(e: OSError) -> str:
    """`PATH: reason` for an OSError, with a plain reason ("no space left on device", not "[Errno 28] ...")."""
    reason = (e.strerror or str(e) or type(e).__name__).rstrip(".")
    reason = reason[:1].lower() + reason[1:]
    if e.errno == errno.ENOSPC:
        reason = "no space left on device"
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def blocking_file(path: Path) -> Path | None:
    """The first ancestor of `path` that exists but is not a folder (then nothing can be written below it)."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def _cannot_create(path: Path, e: OSError) -> Exception:
    """Why the folder of `path` or a file in it cannot be made, in words that name `path`."""
    blocker = blocking_file(path)
    if blocker is not None:
        return IkdError(f"{path}: {blocker} is a file, not a folder")
    if e.errno in (errno.EACCES, errno.EPERM):
        existing = next((p for p in path.parents if p.exists()), path.parent)
        return IkdError(f"{path}: permission denied (cannot write in {existing})")
    return OSError(e.errno, e.strerror or str(e), str(path))


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
