"""Translation-only packages: a folder with the translator's weights (safetensors), a JSON config, the
vocabulary and the BPE files, read back by `load_for_inference` like a checkpoint.

Layout of a package folder:

    config.json        {"format": PACKAGE_FORMAT, "recipe": ..., "src", "tgt", "bpe_glossaries", "epoch", "updates"}
    model.safetensors  the translator's state dict (no teacher, no student)
    vocab.txt          the joint vocabulary, one token per line, specials first
    bpe.codes          the subword-nmt codes (absent when the data had no BPE step)
    bpe_vocab.json     the per-language BPE vocabulary filters {lang: {unit: count}} (absent when none)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ikd.checkpoint import DISTILLER_PREFIXES
from ikd.errors import IkdError
from ikd.fileio import atomic_path, atomic_write_lines, atomic_write_text, read_lines, stopped_write

PACKAGE_FORMAT = "ikd-package-1"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
VOCAB = "vocab.txt"
BPE_CODES = "bpe.codes"
BPE_VOCAB = "bpe_vocab.json"


def translator_state_dict(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights translation needs from a checkpoint payload: its "model" state dict (checkpoint format 2
    keeps the teacher and student apart, under "distiller"; the prefix filter also guards a payload that was
    not upgraded). The one place that knows where a checkpoint keeps the translator."""
    state = payload.get("model")
    if not isinstance(state, dict):
        raise IkdError("the checkpoint has no 'model' entry with the weights")
    return {k: v for k, v in state.items() if not k.startswith(DISTILLER_PREFIXES)}


def is_package(path: str | os.PathLike) -> bool:
    return (Path(path) / CONFIG).is_file() and (Path(path) / WEIGHTS).is_file()


def write_package(payload: dict[str, Any], out: str | os.PathLike) -> None:
    """Write the package of a checkpoint payload into the folder `out` (created; its files written
    atomically). Only the translator's weights are kept, contiguous and detached."""
    from safetensors.torch import save_file

    out = Path(out)
    for key in ("model", "recipe", "vocab", "src", "tgt"):
        if key not in payload:
            raise IkdError(f"the checkpoint has no '{key}' entry")
    state = {k: v.detach().cpu().contiguous() for k, v in translator_state_dict(payload).items()}
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "format": PACKAGE_FORMAT,
        "recipe": payload["recipe"],
        "src": payload["src"],
        "tgt": payload["tgt"],
        "bpe_glossaries": list(payload["bpe_glossaries"]) if "bpe_glossaries" in payload else None,
        "feature_shape": list(payload["feature_shape"]) if "feature_shape" in payload else None,
        "epoch": payload.get("epoch"),
        "updates": payload.get("updates"),
    }
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": PACKAGE_FORMAT})
    atomic_write_lines(out / VOCAB, list(payload["vocab"]))
    codes = payload.get("bpe_codes") or ""
    if codes.strip():
        atomic_write_text(out / BPE_CODES, codes)
    if payload.get("bpe_vocab"):
        atomic_write_text(out / BPE_VOCAB, json.dumps(payload["bpe_vocab"], ensure_ascii=False, sort_keys=True))
    atomic_write_text(out / CONFIG, json.dumps(config, indent=2, ensure_ascii=False) + "\n")  # last: marks it done


def read_package(path: str | os.PathLike) -> dict[str, Any]:
    """A package folder -> a payload with the keys `load_for_inference` reads from a checkpoint."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / CONFIG).is_file():
        hint = ""
        if any(path.glob("checkpoint_*.pt")):
            hint = "; a run folder holds checkpoint_average.pt, checkpoint_best.pt and checkpoint_last.pt"
        raise IkdError(f"{path}: is a folder, not a checkpoint file nor an ikd package (no {CONFIG}){hint}")
    try:
        config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IkdError(f"{path / CONFIG}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != PACKAGE_FORMAT:
        raise IkdError(f"{path / CONFIG}: not an ikd package config (expected format {PACKAGE_FORMAT})")
    for key in ("recipe", "src", "tgt"):
        if key not in config:
            raise IkdError(f"{path / CONFIG}: has no '{key}' entry")
    if not (path / WEIGHTS).is_file():
        raise IkdError(f"{path / WEIGHTS}: weights file not found")
    try:
        state = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError) as e:
        raise IkdError(f"{path / WEIGHTS}: not a readable safetensors file ({e})") from None
    vocab = read_lines(path / VOCAB)
    payload: dict[str, Any] = {
        "format": config["format"],
        "recipe": config["recipe"],
        "vocab": vocab,
        "src": config["src"],
        "tgt": config["tgt"],
        "bpe_codes": (path / BPE_CODES).read_text(encoding="utf-8") if (path / BPE_CODES).is_file() else "",
        "epoch": config.get("epoch"),
        "updates": config.get("updates"),
    }
    if config.get("bpe_glossaries") is not None:
        payload["bpe_glossaries"] = list(config["bpe_glossaries"])
    if (path / BPE_VOCAB).is_file():
        try:
            payload["bpe_vocab"] = json.loads((path / BPE_VOCAB).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise IkdError(f"{path / BPE_VOCAB}: not valid JSON ({e})") from None
    if config.get("feature_shape") is not None:
        payload["feature_shape"] = list(config["feature_shape"])
    payload["model"] = state
    return payload


def _is_earlier_export(folder: Path) -> bool:
    """A folder `ikd export` wrote: a package (its config.json), a CTranslate2 or transformers export (ikd.json)."""
    for name, fmt in ((CONFIG, PACKAGE_FORMAT), ("ikd.json", "ikd-ctranslate2-1"), ("ikd.json", "ikd-transformers-1")):
        try:
            if json.loads((folder / name).read_text(encoding="utf-8")).get("format") == fmt:
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def check_out_dir(out: Path) -> None:
    """--out must be a new or empty folder, or an earlier export (replaced)."""
    if out.exists() and not out.is_dir():
        raise IkdError(f"{out}: is a file; --out names a folder to create")
    if out.is_dir() and any(out.iterdir()) and not _is_earlier_export(out):
        raise IkdError(f"{out}: is a folder with other files in it; give a new or empty folder")


def publish(build, out: Path) -> None:
    """Run `build(tmp_dir)` in a temporary folder beside `out`, then move it to `out` in one rename. An earlier
    export there is kept until the new one is in place: it is moved aside first, restored if the new one cannot
    be moved in, and deleted only after it was."""
    out = Path(out)
    check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        try:
            build(tmp)
        except OSError as e:  # named as the export's file, not the temporary folder's
            raise OSError(e.errno, e.strerror or str(e), _renamed(e.filename, tmp, out)) from None
        except Exception as e:
            failed = stopped_write(e, out)
            if failed is None:
                raise
            raise failed from None
        os.chmod(tmp, 0o777 & ~_umask())
        _move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _renamed(filename, tmp: Path, out: Path) -> str | None:
    """A path inside the temporary folder as the same path inside `out`; None (the whole export) stays `out`."""
    if filename is None:
        return str(out)
    try:
        return str(out / Path(filename).relative_to(tmp))
    except ValueError:
        return str(filename)


def _move_into_place(new: Path, out: Path) -> None:
    if not out.exists():
        try:
            os.replace(new, out)
        except OSError as e:
            raise IkdError(f"{out}: could not move the new export into place ({e})") from None
        return
    old = new.with_name(new.name.removesuffix(".tmp") + ".old")  # as unique as the temporary folder's name
    try:
        os.replace(out, old)
    except OSError as e:
        raise IkdError(f"{out}: could not move the earlier export aside ({e}); it is left as it was") from None
    try:
        os.replace(new, out)
    except OSError as e:
        try:
            os.replace(old, out)
        except OSError:
            raise IkdError(
                f"{out}: could not move the new export into place ({e}); the earlier export is kept in {old}"
            ) from None
        raise IkdError(f"{out}: could not move the new export into place ({e}); the earlier export is kept") from None
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
