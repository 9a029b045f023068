"""The optimiser's state in a checkpoint, keyed by parameter name.

torch's `Optimizer.state_dict()` numbers the parameters by their position in the list it was built with, and
`load_state_dict` gives entry i to whatever parameter is i-th now: when the model lists its parameters in
another order, each Adam moment lands on another parameter (or fails on its shape). ikd saves the entries
under the parameters' names and maps them back by name. A checkpoint of an older version holds the
position-numbered form; its positions are read in the order that version listed the parameters."""

from __future__ import annotations

from typing import Any

import torch

# 0.1.0's model held every module in one nn.Module, registered in this order (the frozen teacher, between the
# generator and the student, had no trainable parameters); today the translator holds embed, encoder,
# decoder, generator and pseudo_tokens, the Distiller the student.
FORMAT_1_ORDER = ("embed", "encoder", "decoder", "generator", "student", "pseudo_tokens")


def named_state(optimizer: torch.optim.Optimizer, names: list[str]) -> dict[str, Any]:
    """`optimizer.state_dict()` with each position replaced by the name of the parameter at that position
    (`names` lists the optimiser's parameters in order)."""
    saved = optimizer.state_dict()
    return {
        "state": {names[i]: entry for i, entry in saved["state"].items()},
        "param_groups": [{**group, "params": [names[i] for i in group["params"]]} for group in saved["param_groups"]],
    }


def is_named(saved: dict[str, Any]) -> bool:
    groups = saved.get("param_groups") or []
    return all(isinstance(p, str) for group in groups for p in group["params"])


def format_1_names(names: list[str]) -> list[str]:
    """Today's parameter names (translator.*, distiller.student.*) in the order 0.1.0's model listed the
    same parameters: the position of each in a 0.1.0 optimiser state."""

    def module(name: str) -> str:  # translator.embed.embed.weight -> embed, distiller.student.x -> student
        return name.split(".")[1]

    return sorted(names, key=lambda name: FORMAT_1_ORDER.index(module(name)))  # stable: in-module order kept


def load_named_state(
    optimizer: torch.optim.Optimizer, names: list[str], saved: dict[str, Any], positions: list[str] | None = None
) -> None:
    """Restore a state saved by `named_state`, or a position-numbered one whose position i held the parameter
    `positions[i]` (default: `names`, today's order). Raises ValueError naming a parameter that is missing from
    either side."""
    if not is_named(saved):
        order = positions or names
        if len(order) != sum(len(g["params"]) for g in saved["param_groups"]):
            raise ValueError(
                f"the optimiser state holds {sum(len(g['params']) for g in saved['param_groups'])} parameters, "
                f"the model {len(order)}"
            )
        saved = {
            "state": {order[i]: entry for i, entry in saved["state"].items()},
            "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in saved["param_groups"]],
        }
    listed = [name for group in saved["param_groups"] for name in group["params"]]
    missing = sorted(set(names) - set(listed))
    extra = sorted(set(listed) - set(names))
    if missing or extra:
        what = f"no state for parameter {missing[0]}" if missing else f"a state for an unknown parameter {extra[0]}"
        raise ValueError(f"the optimiser state has {what}")
    position = {name: i for i, name in enumerate(names)}
    # torch pairs the saved ids, in the order listed, with the current parameters in theirs: list them so
    optimizer.load_state_dict(
        {
            "state": {position[name]: entry for name, entry in saved["state"].items()},
            "param_groups": [
                {**g, "params": sorted(position[name] for name in g["params"])} for g in saved["param_groups"]
            ],
        }
    )
