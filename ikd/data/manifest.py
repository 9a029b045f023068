"""DATA/manifest.json: what a prepared data folder holds. Written last, so its presence means "complete"."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

from ikd.errors import IkdError
from ikd.fileio import atomic_path, atomic_write_text, sha256_file

MANIFEST = "manifest.json"


def manifest_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / MANIFEST


def load_manifest(data_dir: str | Path) -> dict[str, Any]:
    """Read DATA/manifest.json; IkdError when the folder was never (completely) prepared."""
    path = manifest_path(data_dir)
    if not path.is_file():
        raise IkdError(f"{path}: not found; prepare the data first (`ikd prepare multi30k` or `ikd prepare toy`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IkdError(f"{path}: not a valid manifest ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("splits"), dict):
        raise IkdError(f"{path}: not a valid manifest (no 'splits' object)")
    return manifest


def read_manifest_or_none(data_dir: str | Path) -> dict[str, Any] | None:
    try:
        return load_manifest(data_dir)
    except IkdError:
        return None


def write_manifest(data_dir: str | Path, manifest: dict[str, Any]) -> None:
    """Atomic JSON; dicts built in a fixed order, so identical preparations give identical bytes."""
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    path = manifest_path(data_dir)
    if path.is_file() and path.read_bytes() == text.encode("utf-8"):
        return  # unchanged: keep the file (and its mtime)
    atomic_write_text(path, text)


def file_matches(data_dir: str | Path, rel_path: str | None, digest: str | None) -> bool:
    """True when DATA/rel_path exists and its sha256 is `digest`."""
    if not rel_path or not digest:
        return False
    path = Path(data_dir) / rel_path
    return path.is_file() and sha256_file(path) == digest


class Staging:
    """Files written to temporaries and renamed together when the `with` block exits without error; on an
    error every temporary is removed and the previous files stay as they were."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self.changed = False

    def __enter__(self) -> Staging:
        self._stack.__enter__()
        return self

    def __exit__(self, *exc: object) -> bool:
        return bool(self._stack.__exit__(*exc))

    def path(self, path: Path) -> Path:
        """A temporary path that becomes `path` at the end."""
        self.changed = True
        return self._stack.enter_context(atomic_path(path))

    def bytes(self, path: Path, data: bytes) -> str:
        """Stage `data` for `path`, unless the file already holds exactly these bytes. -> sha256 of data."""
        digest = hashlib.sha256(data).hexdigest()
        if not (path.is_file() and sha256_file(path) == digest):
            self.path(path).write_bytes(data)
        return digest

    def lines(self, path: Path, lines: list[str]) -> str:
        """`bytes` for text lines (UTF-8, each ending in a newline)."""
        return self.bytes(path, "".join(line + "\n" for line in lines).encode("utf-8"))
