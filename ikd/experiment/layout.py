"""Run folders OUT/SYSTEM/seedN/: what each step leaves there, which recipe made the folder, and the run's state.

A run folder holds `ikd train`'s files (checkpoints, metrics.jsonl, recipe.yaml) and:
  experiment.json            which experiment, system, seed, recipe file and overrides made it (written first)
  train.json                 the training's summary, written when training (and its averaging) finished
  eval/SPLIT.TGT             the hypotheses of a split (de-BPE'd, tokenised, one line per sentence)
  eval/SPLIT.json            their scores, with the checkpoint and search settings that produced them
  eval/SPLIT.retrieval.json  the image retrieval probe of a split (R@K)
  failed.txt                 the error of the last attempt, removed when a step next succeeds
Every file is written atomically, so a killed run leaves finished steps intact and the rest absent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ikd.errors import IkdError
from ikd.fileio import atomic_write_text

IDENTITY = "experiment.json"
TRAINED = "train.json"
FAILED = "failed.txt"
# recipe keys that do not change what a run computes
IGNORED_KEYS = (("train", "out"), ("data", "num_workers"), ("train", "log_every"))


def write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None when it is absent or unreadable (a half-written file never exists: writes
    are atomic)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def comparable(recipe: dict[str, Any]) -> dict[str, Any]:
    """A recipe dict without the keys that do not change a run's result."""
    out = {section: dict(values) for section, values in recipe.items() if isinstance(values, dict)}
    for section, key in IGNORED_KEYS:
        out.get(section, {}).pop(key, None)
    train = out.get("train", {})
    if isinstance(train.get("adam_betas"), tuple):
        train["adam_betas"] = list(train["adam_betas"])
    return out


def recipe_difference(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The section.key names whose values differ between two recipe dicts. A key only one of them has (a
    recipe key added to or removed from ikd since the run was made) is not a difference."""
    a, b = comparable(a), comparable(b)
    keys = []
    for section in sorted(set(a) | set(b)):
        sa, sb = a.get(section, {}), b.get(section, {})
        for key in sorted(set(sa) & set(sb)):
            if sa[key] != sb[key]:
                keys.append(f"{section}.{key}")
    return keys


def describe(identity: dict[str, Any]) -> str:
    """'recipes/x.yaml [kd.distance=l1]' for an identity record."""
    sets = identity.get("set") or []
    return f"{identity.get('recipe_file', '?')}" + (f" [{' '.join(sets)}]" if sets else "")


def make_identity(experiment_path: Path, system: str, seed: int, recipe_file: Path, overrides: list[str], recipe: dict):
    return {
        "experiment": str(experiment_path),
        "system": system,
        "seed": seed,
        "recipe_file": str(recipe_file),
        "set": list(overrides),
        "recipe": comparable(recipe),
    }


def check_identity(run_dir: Path, wanted: dict[str, Any]) -> None:
    """Refuse a run folder made from another recipe than the experiment now gives, naming both."""
    old = read_json(run_dir / IDENTITY)
    if old is None:
        trained = run_dir / "recipe.yaml"
        if not trained.is_file():
            return
        import yaml

        recipe = yaml.safe_load(trained.read_text(encoding="utf-8")) or {}
        old = {"recipe_file": str(trained), "set": [], "recipe": recipe}
    differ = recipe_difference(old.get("recipe") or {}, wanted["recipe"])
    if differ:
        raise IkdError(
            f"{run_dir}: made from {describe(old)}, but {wanted['experiment']} now says {describe(wanted)} "
            f"(they differ in {', '.join(differ[:6])}{', ...' if len(differ) > 6 else ''}); "
            "remove the folder or give another --out"
        )


@dataclass
class RunState:
    """What a run folder holds, for the progress table."""

    state: str  # missing | started | trained | done | failed
    epoch: int = 0  # the last finished epoch
    detail: str = ""

    @property
    def finished(self) -> bool:
        return self.state == "done"


def last_epoch(run_dir: Path) -> tuple[int, float | None]:
    """The last finished epoch in metrics.jsonl and its validation BLEU."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0, None
    epoch, bleu = 0, None
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if isinstance(record, dict) and record.get("kind") == "epoch":
            epoch = int(record.get("epoch", epoch))
            value = record.get("valid_bleu")
            bleu = value if isinstance(value, int | float) else bleu
    return epoch, bleu
