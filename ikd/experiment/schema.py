"""Typed validation of nested YAML mappings against dataclasses, in the style of ikd.recipe: unknown keys and
wrong types are errors that name the key (as a dotted path) and the file."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

from ikd.errors import IkdError
from ikd.recipe import check_scalar

MISSING = dataclasses.MISSING


def join(where: str, key: str) -> str:
    """'FILE:' + key -> 'FILE: key'; 'FILE: a' + key -> 'FILE: a.key'."""
    return f"{where} {key}" if where.endswith(":") else f"{where}.{key}"


def _is_optional(annotation: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return True, args[0]
        raise TypeError(f"unsupported annotation {annotation}")
    return False, annotation


def check_value(value: Any, annotation: Any, where: str) -> Any:
    """`value` converted to `annotation` (scalars, Literal, list, dict[str, X], dataclasses, X | None), or an
    IkdError naming `where` ("FILE: key.path")."""
    optional, annotation = _is_optional(annotation)
    if value is None:
        if optional:
            return None
        raise IkdError(f"{where}: a value is required")
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        return from_mapping(value, annotation, where)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise IkdError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin is list:
        (item,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise IkdError(f"{where}: expected a list, got {value!r}")
        return [check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(annotation)
        if not isinstance(value, dict):
            raise IkdError(f"{where}: expected a mapping, got {value!r}")
        out = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise IkdError(f"{where}: key {key!r} is not a string")
            out[key] = check_value(v, item, join(where, key))
        return out
    return check_scalar(value, annotation, where)


def from_mapping(raw: Any, cls: type, where: str) -> Any:
    """A dataclass instance from a mapping: unknown keys, missing required keys and wrong types name the key."""
    if not isinstance(raw, dict):
        raise IkdError(f"{where}: expected a mapping of {', '.join(f.name for f in dataclasses.fields(cls))}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            raise IkdError(f"{join(where, key)}: unknown key (known: {', '.join(fields)})")
        kwargs[key] = check_value(value, hints[key], join(where, key))
    for name, f in fields.items():
        if name not in kwargs and f.default is MISSING and f.default_factory is MISSING:
            raise IkdError(f"{join(where, name)}: missing (required)")
    return cls(**kwargs)
