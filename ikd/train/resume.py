"""The recipe `ikd train --resume` continues with: the run's own, as far as the user's recipe leaves it open, and
never one that changes the model's parameters."""

from __future__ import annotations

from typing import Any

from ikd.errors import IkdError
from ikd.recipe import Recipe, recipe_from_dict

# Recipe sections that fix the model's parameters: a resumed run must not change them...
MODEL_SECTIONS = ("data", "model", "vision", "kd")
# ...except these keys of theirs, which change what is read, not what is trained
FREE_KEYS = frozenset({"data.num_workers", "data.skip_overlong", "data.max_len", "data.dir"})


def resumed_recipe(recipe: Recipe, saved: dict[str, Any], where: str) -> tuple[Recipe, list[str]]:
    """(the recipe the resumed run trains with, the keys it took from the run, as `key: value`).

    `saved` is the run's recipe from its checkpoint `where` (keys its version lacked already read as that
    version behaved, ikd.checkpoint.load_checkpoint). A key the recipe was given (its file or --set) keeps its
    value; any other key takes the run's, so that a recipe written for an older version resumes the run as it
    was trained, not with today's defaults. A recipe built in code (no given_keys) is taken as it is. A value
    that changes a key of MODEL_SECTIONS is an IkdError naming the key, the run's value and the new one."""
    mine = recipe.to_dict()
    resolved = recipe
    taken: list[str] = []
    if recipe.given_keys is not None:
        merged = {section: dict(values) for section, values in saved.items() if isinstance(values, dict)}
        for dotted in recipe.given_keys:
            section, key = dotted.split(".")
            merged.setdefault(section, {})[key] = mine[section][key]
        # the user's keys were checked with their recipe; the run's trained as they are
        resolved = recipe_from_dict(merged, f"{where} (recipe)", check_ranges=False)
        resolved.given_keys = recipe.given_keys
        ours = resolved.to_dict()
        taken = [
            f"{section}.{key}: {value}"
            for section, values in ours.items()
            for key, value in values.items()
            if value != mine[section][key]
        ]
    changed = changed_model_keys(saved, resolved.to_dict())
    if changed:
        raise IkdError(
            f"{where}: --resume with a recipe that changes {', '.join(changed)}; "
            "only train.* settings may change when resuming"
        )
    return resolved, taken


def changed_model_keys(saved: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`section.key (the run's VALUE, now VALUE)` for each key of MODEL_SECTIONS (but FREE_KEYS) that differs."""
    out = []
    for section in MODEL_SECTIONS:
        a, b = saved.get(section, {}), new.get(section, {})
        for key in sorted(set(a) | set(b)):
            if f"{section}.{key}" not in FREE_KEYS and a.get(key) != b.get(key):
                out.append(f"{section}.{key} (the run's {a.get(key)!r}, now {b.get(key)!r})")
    return out
