"""Self-contained checkpoints: weights, recipe, vocabulary and BPE codes in one file, written atomically
and loaded without executing pickled code (torch.load(weights_only=True))."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ikd import __version__
from ikd.errors import IkdError
from ikd.fileio import atomic_path
from ikd.recipe import complete_saved_recipe

FORMAT = "ikd-checkpoint-2"
FORMAT_1 = "ikd-checkpoint-1"  # release 0.1.0: one state dict, the teacher and student under "model"
DISTILLER_PREFIXES = ("teacher.", "student.")

# Keys of a checkpoint (a plain dict of tensors, numbers, strings, lists and dicts):
#   format      FORMAT
#   ikd_version the version of ikd that wrote the file (absent before 0.2.0; "0.1.0" once a format 1 file is read)
#   model       the translator's state_dict: all that translation reads (generator and pseudo-tokens included)
#   distiller   (IKD only) the Distiller's state_dict: teacher.* and student.*, for training, retrieve, imagine
#   feature_shape  (IKD only) [C, H, W] of the teacher's last map, so the translator is built without a CNN
#   recipe      the resolved recipe as a dict (ikd.recipe.Recipe.to_dict()); on loading, keys that the
#               writing version lacked are filled in as that version behaved (ikd.recipe.ADDED_KEYS)
#   vocab       the joint vocabulary's token list, specials first
#   bpe_codes   the text of the subword-nmt codes file ("" when the data had no BPE step)
#   bpe_vocab   the per-language BPE vocabulary filters {lang: {unit: count}}
#   bpe_glossaries  the tokens BPE never splits (`ikd bpe --glossary`; the mask token [U] by default)
#   src, tgt    language codes
#   epoch, updates
#   train_state (optional, absent from averaged checkpoints) optimiser, scheduler, scaler, RNG, early stopping
# load_checkpoint adds `read_format`, the format the file was written in (before an upgrade to FORMAT).


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> None:
    """torch.save to a temporary file, then rename: a kill never leaves a truncated checkpoint."""
    payload = {k: v for k, v in payload.items() if k != "read_format"}
    payload = {**payload, "format": FORMAT, "ikd_version": __version__}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _load_failure(e: Exception) -> str:
    """Why torch.load refused a file, in one line. torch's own message for pickled objects advises loading
    with weights_only=False, which would run code from the file: never repeat that advice."""
    text = str(e)
    if "weights_only" in text or "Unsupported global" in text or type(e).__name__ == "UnpicklingError":
        return "it holds pickled Python objects besides tensors, which ikd never loads (another program's file?)"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        hint = "; a run folder holds checkpoint_average.pt, checkpoint_best.pt and checkpoint_last.pt"
        raise IkdError(f"{path}: is a folder, not a checkpoint file{hint if (path / 'metrics.jsonl').exists() else ''}")
    if not path.is_file():
        raise IkdError(f"{path}: checkpoint not found")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # torch.save writes a zip archive
        raise IkdError(f"{path}: not a checkpoint (torch.save writes a zip archive; this file is something else)")
    try:
        # memory-mapped: tensors a caller never touches (the distiller's, when translating) are never read
        payload = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except Exception as e:  # corrupt file, or one that needs pickled code
        raise IkdError(f"{path}: not a readable ikd checkpoint ({_load_failure(e)})") from None
    if not isinstance(payload, dict) or "format" not in payload:
        raise IkdError(f"{path}: not an ikd checkpoint (no format entry)")
    read_format = payload["format"]
    if read_format == FORMAT_1:
        payload = upgrade_format_1(payload)
    elif read_format != FORMAT:
        raise IkdError(
            f"{path}: checkpoint format {payload['format']!r} is not one this version of ikd reads "
            f"({FORMAT}, {FORMAT_1})"
        )
    if isinstance(payload.get("recipe"), dict):
        payload["recipe"] = complete_saved_recipe(payload["recipe"])
    payload["read_format"] = read_format
    return payload


def upgrade_format_1(payload: dict[str, Any]) -> dict[str, Any]:
    """A 0.1.0 checkpoint in today's layout: its teacher.* and student.* weights move to "distiller"."""
    model, distiller = {}, {}
    for key, value in payload.get("model", {}).items():
        if key.startswith(DISTILLER_PREFIXES):
            distiller[key] = value
        else:
            model[key] = value
    out = {"ikd_version": "0.1.0", **payload, "format": FORMAT, "model": model}  # format 1: only 0.1.0 wrote it
    if distiller:
        out["distiller"] = distiller
    return out
