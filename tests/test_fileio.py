"""Reading text files: errors that name the file and line, gzip, byte-order marks; atomic writes."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from ikd.errors import IkdError
from ikd.fileio import atomic_path, read_lines


def test_lines_gzip_and_byte_order_mark(tmp_path: Path) -> None:
    plain = tmp_path / "a.en"
    plain.write_bytes(b"\xef\xbb\xbfa dog .\r\ntwo cats .\n")
    assert read_lines(plain) == ["a dog .", "two cats ."]  # no BOM in the first token, no CR
    packed = tmp_path / "a.en.gz"
    with gzip.open(packed, "wb") as f:
        f.write(b"a dog .\ntwo cats .\n")
    assert read_lines(packed) == ["a dog .", "two cats ."]


def test_bad_files_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.de"
    bad.write_bytes(b"ein hund .\n\nzwei katzen .\n")
    with pytest.raises(IkdError, match=r"bad\.de:2: empty line"):
        read_lines(bad)
    assert read_lines(bad, allow_empty=True)[1] == ""
    bad.write_bytes(b"ein hund .\nzwei k\xe4tzchen .\n")
    with pytest.raises(IkdError, match=r"bad\.de:2: not valid UTF-8"):
        read_lines(bad)
    not_gzip = tmp_path / "x.en.gz"
    not_gzip.write_bytes(b"plain text, not gzip\n")
    with pytest.raises(IkdError, match=r"x\.en\.gz: cannot be read"):
        read_lines(not_gzip)
    cut = tmp_path / "cut.en.gz"
    cut.write_bytes(gzip.compress(b"a dog .\n" * 1000)[:40])
    with pytest.raises(IkdError, match=r"cut\.en\.gz: cannot be read"):
        read_lines(cut)
    with pytest.raises(IkdError, match="file not found"):
        read_lines(tmp_path / "nowhere.en")


def test_atomic_path_leaves_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_path(target) as tmp:
        tmp.write_text("new\n")
    assert target.read_text() == "new\n"
