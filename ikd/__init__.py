"""ikd: image-free multimodal machine translation by inversion knowledge distillation.

    from ikd import Translator
    translator = Translator.from_checkpoint("runs/en-de/checkpoint_average.pt")
    translator.translate(["A man rides a horse."])

`import ikd` is cheap: the public names are imported (with torch) when first used."""

from __future__ import annotations

import typing

__version__ = "0.2.0"

__all__ = ["IkdError", "SearchOptions", "Translator", "__version__"]

_LAZY = {
    "Translator": "ikd.inference.translator",
    "SearchOptions": "ikd.inference.translator",
    "IkdError": "ikd.errors",
}

if typing.TYPE_CHECKING:
    from ikd.errors import IkdError
    from ikd.inference.translator import SearchOptions, Translator


def __getattr__(name: str) -> typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ikd' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
