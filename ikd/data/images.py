"""Image decoding for prepared data: resize the shorter side to round(S*256/224), centre-crop S, uint8 CHW.

Images are decoded in parallel into a memory-mapped .npy file (np.lib.format), one row per text line.
Workers write their rows straight into the memmap, so no pixels travel through pipes.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ikd.console import progress_enabled
from ikd.errors import IkdError

MAX_LISTED = 20


def strip_name(name: str) -> str:
    """Image-list entry -> file name: MSCOCO entries look like `COCO_..._000000117071.jpg#367178`."""
    return name.split("#", 1)[0].strip()


def resize_size(image_size: int) -> int:
    """Shorter-side length before the centre crop (256 for 224, as in ImageNet evaluation)."""
    return int(round(image_size * 256 / 224))


def resize_crop(img: Image.Image, image_size: int) -> np.ndarray:
    """PIL image -> uint8 [3, S, S]: RGB, shorter side resized (bilinear), centre crop (torchvision's rounding)."""
    img = img.convert("RGB")
    w, h = img.size
    short = resize_size(image_size)
    if w <= h:
        new_w, new_h = short, int(short * h / w)  # torchvision truncates the long side
    else:
        new_w, new_h = int(short * w / h), short
    img = img.resize((new_w, new_h), Image.BILINEAR)
    top = int(round((new_h - image_size) / 2.0))
    left = int(round((new_w - image_size) / 2.0))
    img = img.crop((left, top, left + image_size, top + image_size))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def load_image(path: Path, image_size: int) -> np.ndarray:
    """Decode one file fully (a truncated JPEG raises instead of being padded with grey)."""
    with Image.open(path) as img:
        img.load()
        return resize_crop(img, image_size)


def _reason(error: Exception) -> str:
    if isinstance(error, UnidentifiedImageError):
        return "unreadable (not an image file PIL can identify)"
    if "truncat" in str(error).lower():
        return f"truncated ({error})"
    return f"unreadable ({type(error).__name__}: {error})"


def _decode_chunk(npy_path: str, start: int, paths: list[str], image_size: int) -> list[tuple[int, str]]:
    """Worker: decode `paths` into rows start.. of the memmap; return (row, reason) for failures."""
    out = np.load(npy_path, mmap_mode="r+")
    failures: list[tuple[int, str]] = []
    for offset, path in enumerate(paths):
        try:
            out[start + offset] = load_image(Path(path), image_size)
        except Exception as e:  # noqa: BLE001 - any decoder error means "unreadable"; reported by name
            failures.append((start + offset, _reason(e)))
    out.flush()
    del out
    return failures


def usable_cpus() -> int:
    """The cores this process may run on (its affinity mask, which containers narrow), not the machine's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def decode_images(
    npy_path: Path, paths: Sequence[Path], image_size: int, workers: int = 0, desc: str = "images"
) -> list[tuple[int, str]]:
    """Decode `paths` into a new uint8 [N,3,S,S] .npy at `npy_path`; return (row, reason) per failed file.

    `workers` <= 0 means all cores. Failed rows are left zero.
    """
    n = len(paths)
    arr = np.lib.format.open_memmap(npy_path, mode="w+", dtype=np.uint8, shape=(n, 3, image_size, image_size))
    del arr
    workers = workers if workers > 0 else usable_cpus()
    workers = max(1, min(workers, n))
    chunk = max(1, min(256, -(-n // (workers * 8)))) if n else 1
    jobs = [(str(npy_path), s, [str(p) for p in paths[s : s + chunk]], image_size) for s in range(0, n, chunk)]
    failures: list[tuple[int, str]] = []
    with tqdm(total=n, desc=desc, unit="img", disable=not progress_enabled(), leave=False) as bar:
        if workers == 1:
            for job in jobs:
                failures += _decode_chunk(*job)
                bar.update(len(job[2]))
        else:
            # spawn, not fork: the parent may hold torch/OpenMP threads, which fork can deadlock.
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = [(pool.submit(_decode_chunk, *job), len(job[2])) for job in jobs]
                for future, count in futures:
                    failures += future.result()
                    bar.update(count)
    return sorted(failures)


def compact_rows(src_npy: Path, dst_npy: Path, keep: np.ndarray, block: int = 1024) -> None:
    """Copy rows `keep` (sorted) of src into a new .npy at dst, block by block (bounded memory)."""
    src = np.load(src_npy, mmap_mode="r")
    dst = np.lib.format.open_memmap(dst_npy, mode="w+", dtype=src.dtype, shape=(len(keep),) + src.shape[1:])
    for s in range(0, len(keep), block):
        dst[s : s + block] = src[keep[s : s + block]]
    dst.flush()
    del dst, src


def files_fingerprint(paths: Sequence[Path]) -> str:
    """sha256 over (name, size, mtime) of every file: cheap evidence that the image folder is unchanged."""
    h = hashlib.sha256()
    for p in paths:
        try:
            st = p.stat()
            h.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\tmissing\n".encode())
    return h.hexdigest()


def format_failures(what: str, failures: Sequence[tuple[int, str, str]]) -> str:
    """'(line, name, reason)' list -> one message: the first 20 by name plus the count of the rest."""
    shown = [f"  line {line}: {name}: {reason}" for line, name, reason in failures[:MAX_LISTED]]
    more = len(failures) - MAX_LISTED
    tail = [f"  ... and {more} more"] if more > 0 else []
    return "\n".join([f"{what}: {len(failures)} image(s) missing or unreadable:"] + shown + tail)


def check_image_size(image_size: int) -> None:
    if not 8 <= image_size <= 1024:
        raise IkdError(f"--image-size {image_size}: must be between 8 and 1024 pixels")
