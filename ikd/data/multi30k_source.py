"""Where Multi30K task-1 text comes from: a local folder laid out like multi30k/dataset's data/task1, or that
repository's public files at a pinned commit, downloaded into a cache folder keyed by the URL."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from ikd.errors import IkdError
from ikd.fileio import atomic_path

SPLITS = ("train", "val", "test_2016_flickr", "test_2017_flickr", "test_2017_mscoco")
TOK_SUFFIX = "lc.norm.tok"
# Files the public dataset does not have (Czech was only translated for train, val and test 2016).
TRAINING_SPLITS = ("train", "val")  # the splits distillation reads images of: --images must cover them
KNOWN_ABSENT = {("test_2017_flickr", "cs"), ("test_2017_mscoco", "cs")}
DATASET_COMMIT = "a3d2e0d26b56f3846f66a952536ffed4e401d05a"
DEFAULT_URL = f"https://raw.githubusercontent.com/multi30k/dataset/{DATASET_COMMIT}/data/task1"
LANGS = ("en", "de", "fr", "cs")


def _fetch(url: str, dest: Path) -> bool:
    """Download url -> dest atomically; False on HTTP 404; IkdError when the network is unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_path(dest) as tmp:
            tmp.write_bytes(response.read())
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return False
        raise IkdError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise IkdError(
            f"cannot download {url} ({reason}); this machine seems offline. Clone "
            "https://github.com/multi30k/dataset elsewhere and pass --source PATH/TO/dataset/data/task1"
        ) from None
    return True


def download_task1(base_url: str, dest: Path, langs: list[str]) -> Path:
    """Fetch tok/ and image_splits/ files of data/task1 into dest (kept as a cache: files are complete)."""
    base_url = base_url.rstrip("/")
    for split in SPLITS:
        wanted = [f"tok/{split}.{TOK_SUFFIX}.{lang}" for lang in langs if (split, lang) not in KNOWN_ABSENT]
        wanted.append(f"image_splits/{split}.txt")
        for rel in wanted:
            target = dest / rel
            if not target.is_file() and not _fetch(f"{base_url}/{rel}", target):
                raise IkdError(f"{base_url}/{rel}: not found (HTTP 404); is {base_url} a Multi30K data/task1 folder?")
    return dest


def locate_source(source: str | None, out_dir: Path, langs: list[str]) -> tuple[Path, str]:
    """--source -> (local task1 folder, description for the manifest)."""
    if source is None or source.startswith(("http://", "https://")):
        url = source or DEFAULT_URL
        # one cache folder per URL: files fetched from another source are never taken for this one's
        key = hashlib.sha256(url.rstrip("/").encode("utf-8")).hexdigest()[:16]
        return download_task1(url, out_dir / ".download" / f"multi30k-{key}", langs), url
    path = Path(source).expanduser()
    if not path.is_dir():
        raise IkdError(f"--source {source}: no such folder")
    if not (path / "tok").is_dir() and not (path / "raw").is_dir():
        raise IkdError(
            f"--source {source}: not a Multi30K task-1 folder (expected tok/ or raw/ inside, as in "
            "multi30k/dataset's data/task1)"
        )
    return path, str(path.resolve())
