"""Training recipes: typed sections, YAML loading with validation, and `--set a.b=c` overrides."""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ikd.errors import IkdError
from ikd.ranges import AT_LEAST_1, NOT_NEGATIVE, POSITIVE, PROBABILITY, SEEDS, Range


@dataclass
class DataConfig:
    dir: str = "data/toy"  # prepared data folder (ikd prepare + ikd bpe); relative to the working directory
    src: str = "en"
    tgt: str = "de"
    train_split: str = "train"
    valid_split: str = "val"
    max_len: int = 250  # BPE tokens per sentence, EOS included; longer training pairs are an error...
    skip_overlong: bool = False  # ...unless this is set, which drops them and reports how many
    num_workers: int = 2


@dataclass
class ModelConfig:
    d_model: int = 128
    heads: int = 4
    ffn: int = 256
    encoder_layers: int = 4
    decoder_layers: int = 4
    dropout: float = 0.3
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    norm: Literal["pre", "post"] = "pre"
    max_positions: int = 1024
    kv_source: Literal["embedding", "states"] = "embedding"  # keys/values of the multimodal encoder layers
    token_layout: Literal["spatial", "raw"] = "spatial"  # m -> pseudo-tokens: H*W regions, or the authors' view
    text_only: bool = False  # baseline: no generator, no pseudo-tokens, no KD
    text_queries: bool = True  # False = paper Table 5 "w/o text feat.": queries are the pseudo-tokens only
    text_feature: Literal["embedding", "dropout"] = "embedding"  # t (eq. 5) before or after embedding dropout


@dataclass
class VisionConfig:
    backbone: Literal["resnet50", "resnet18", "vgg19", "alexnet"] = "resnet50"  # resnet18: small, for CPU runs
    teacher_weights: str = "none"  # torchvision weights name (e.g. IMAGENET1K_V1), a local file, or none
    image_size: int = 224  # the teacher's input size; prepared images are resized to it if they differ


@dataclass
class KDConfig:
    grain: Literal["model", "block", "layer", "image"] = "model"  # image = image-space loss only
    distance: Literal["l2", "l1", "linf", "cosine", "kl"] = "l2"
    lambda_irm: float = 1.0  # IrM-KD weight (eq. 7); 0 = "w/o IrM-KD"
    lambda_iam: float = 1.0  # IaM-KD weight (eq. 8); 0 = "w/o IaM-KD"


@dataclass
class TrainConfig:
    out: str = "runs/toy"  # run folder: checkpoints, metrics.jsonl, recipe.yaml
    seed: int = 1
    max_tokens: int = 1024  # per batch: sentences x max(src, tgt) length, as fairseq counts
    batch_multiple: int = 8
    lr: float = 0.004
    warmup_updates: int = 2000
    warmup_init_lr: float = 1e-7
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    clip_norm: float = 25.0  # 0 disables clipping
    max_epochs: int = 200
    max_updates: int = 70000
    patience: int = 10  # epochs without a better best_metric before stopping; 0 disables
    best_metric: Literal["ce", "loss", "bleu"] = "ce"  # selects checkpoint_best.pt and drives early stopping
    keep_last: int = 10  # epoch checkpoints kept on disk
    average_last: int = 10  # epoch checkpoints averaged into average.pt at the end (paper: 10); 0 disables
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"  # auto: bf16 where supported on CUDA, off on CPU
    channels_last: bool = True
    compile: bool = False
    log_every: int = 50
    valid_bleu: bool = True
    valid_beam: int = 1  # 1 = greedy
    valid_max_sentences: int = 0  # 0 = the whole validation split
    tensorboard: bool = False  # also write metrics.jsonl's scalars to OUT/tensorboard (pip install 'ikd[tensorboard]')


@dataclass
class Recipe:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # The `section.key`s that the recipe file or --set gave (set by recipe_from_dict); None for a recipe built
    # in code, where every key counts as given. A resumed run takes the keys not given from the run itself.
    given_keys: frozenset[str] | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["given_keys"]
        d["train"]["adam_betas"] = list(d["train"]["adam_betas"])
        return d


# Keys added after release 0.1.0, each with the value that gives the behaviour of the versions that lacked it.
# A recipe saved without such a key (in an older checkpoint) ran that way, whatever today's default is.
ADDED_KEYS: dict[str, Any] = {
    "model.text_feature": "dropout",  # 0.1.0 took t after embedding dropout
    "train.best_metric": "loss",  # 0.1.0 chose checkpoint_best.pt and early-stopped on CE + KD
    "train.tensorboard": False,
}


def complete_saved_recipe(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of a saved recipe (a checkpoint's) with the keys its version did not have filled in as that
    version behaved (ADDED_KEYS), not with today's defaults."""
    out = {name: dict(values) if isinstance(values, dict) else values for name, values in raw.items()}
    for dotted, value in ADDED_KEYS.items():
        section, key = dotted.split(".")
        if isinstance(out.get(section, {}), dict):
            out.setdefault(section, {}).setdefault(key, value)
    return out


# The range of every numeric key (adam_betas: of each of its two values). Cross-key rules are in _check_together.
RANGES: dict[str, Range] = {
    "data.max_len": Range(2),  # EOS and one token
    "data.num_workers": NOT_NEGATIVE,
    "model.d_model": Range(4),  # and even: sinusoidal positions pair sines with cosines
    "model.heads": AT_LEAST_1,  # and dividing model.d_model
    "model.ffn": AT_LEAST_1,
    "model.encoder_layers": AT_LEAST_1,
    "model.decoder_layers": AT_LEAST_1,
    "model.dropout": PROBABILITY,
    "model.attention_dropout": PROBABILITY,
    "model.activation_dropout": PROBABILITY,
    "model.max_positions": Range(2),  # and at least data.max_len
    "vision.image_size": Range(32),  # alexnet: 63 (smaller maps shrink to nothing)
    "kd.lambda_irm": NOT_NEGATIVE,
    "kd.lambda_iam": NOT_NEGATIVE,
    "train.seed": SEEDS,
    "train.max_tokens": AT_LEAST_1,
    "train.batch_multiple": AT_LEAST_1,
    "train.lr": POSITIVE,
    "train.warmup_updates": NOT_NEGATIVE,
    "train.warmup_init_lr": NOT_NEGATIVE,  # and at most train.lr
    "train.adam_betas": PROBABILITY,
    "train.adam_eps": POSITIVE,
    "train.weight_decay": NOT_NEGATIVE,
    "train.label_smoothing": PROBABILITY,
    "train.clip_norm": NOT_NEGATIVE,
    "train.max_epochs": AT_LEAST_1,
    "train.max_updates": AT_LEAST_1,
    "train.patience": NOT_NEGATIVE,
    "train.keep_last": AT_LEAST_1,
    "train.average_last": NOT_NEGATIVE,
    "train.log_every": AT_LEAST_1,
    "train.valid_beam": AT_LEAST_1,
    "train.valid_max_sentences": NOT_NEGATIVE,
}
# Keys whose strings must not be empty (a folder, a language, a split, a file or weights name).
NON_EMPTY = ("data.dir", "data.src", "data.tgt", "data.train_split", "data.valid_split", "vision.teacher_weights",
             "train.out")  # fmt: skip
MIN_IMAGE_SIZE = {"alexnet": 63}  # the others: RANGES["vision.image_size"].low


# What the rules between keys add to a key's range, as docs/recipes.md states it.
RULES: dict[str, str] = {
    "model.d_model": "even, a multiple of model.heads",
    "model.heads": "dividing model.d_model",
    "model.max_positions": "at least data.max_len",
    "data.max_len": "at most model.max_positions",
    "vision.image_size": "alexnet: at least 63",
    "train.warmup_init_lr": "at most train.lr",
}


def accepted(dotted: str) -> str:
    """What key `section.key` accepts, in the words of docs/recipes.md's table (a test keeps them equal)."""
    section, key = dotted.split(".")
    annotation = typing.get_type_hints(_sections()[section])[key]
    if typing.get_origin(annotation) is Literal:
        return ", ".join(map(str, typing.get_args(annotation)))
    if annotation is bool:
        return "true, false"
    if annotation is str:
        return "not empty" if dotted in NON_EMPTY else "any text"
    text = RANGES[dotted].text()
    if typing.get_origin(annotation) is tuple:
        text = f"{len(typing.get_args(annotation))} numbers, each {text}"
    return f"{text}; {RULES[dotted]}" if dotted in RULES else text


def check_range(value: Any, dotted: str, where: str) -> None:
    """IkdError naming `where` unless `value` (a number, or each number of a tuple) lies in RANGES[dotted]."""
    allowed = RANGES.get(dotted)
    if allowed is not None:
        for item in value if isinstance(value, tuple) else (value,):
            if item not in allowed:
                shown = f"{list(value)!r}" if isinstance(value, tuple) else repr(value)
                raise IkdError(f"{where}: {shown} is out of range (must be {allowed.text()})")
    if dotted in NON_EMPTY and not str(value).strip():
        raise IkdError(f"{where}: must not be empty")


def _check_together(recipe: Recipe, source: str, overridden: set[str]) -> None:
    """The rules between keys: `FILE: model.heads=3 does not divide model.d_model=128`, or `--set model.heads=3 ...`
    when one of the keys came from --set."""
    m, d, t, v = recipe.model, recipe.data, recipe.train, recipe.vision

    def fail(keys: tuple[str, ...], message: str) -> None:
        raise IkdError(f"{'--set ' if any(k in overridden for k in keys) else source + ': '}{message}")

    if m.d_model % 2:
        fail(("model.d_model",), f"model.d_model={m.d_model} must be even (sinusoidal positions)")
    if m.d_model % m.heads:
        fail(("model.heads", "model.d_model"), f"model.heads={m.heads} does not divide model.d_model={m.d_model}")
    if d.max_len > m.max_positions:
        fail(
            ("data.max_len", "model.max_positions"),
            f"data.max_len={d.max_len} is more than model.max_positions={m.max_positions} (the positions a sentence "
            "can use)",
        )
    if t.warmup_init_lr > t.lr:
        fail(
            ("train.warmup_init_lr", "train.lr"),
            f"train.warmup_init_lr={t.warmup_init_lr:g} is more than train.lr={t.lr:g} (the warm-up rises to train.lr)",
        )
    low = MIN_IMAGE_SIZE.get(v.backbone)
    if low is not None and v.image_size < low:
        fail(
            ("vision.image_size", "vision.backbone"),
            f"vision.image_size={v.image_size} is too small for vision.backbone={v.backbone} (at least {low})",
        )


def _check_value(value: Any, annotation: Any, where: str) -> Any:
    """Return `value` converted to `annotation`, or raise IkdError naming `where`."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value is False and "off" in choices:  # YAML 1.1 reads a bare `off` as false
            value = "off"
        if value not in choices:
            raise IkdError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise IkdError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_check_value(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported annotation {annotation}")
    return check_scalar(value, annotation, where)


def check_scalar(value: Any, annotation: Any, where: str) -> Any:
    """`value` as a bool, int, float or str `annotation` (YAML's types, no coercion but int -> float), or an
    IkdError naming `where`."""
    if annotation is bool:
        if not isinstance(value, bool):
            raise IkdError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise IkdError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise IkdError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise IkdError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise IkdError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {annotation}")


def recipe_from_dict(
    raw: dict[str, Any], source: str = "recipe", overridden: set[str] | None = None, check_ranges: bool = True
) -> Recipe:
    """Validate a nested dict against the Recipe sections. Unknown keys and wrong types are errors
    naming the key and `source` (the file), or `--set` for the `section.key`s in `overridden`; so are values
    out of their range (RANGES, NON_EMPTY and the rules between keys) unless `check_ranges` is False (a
    checkpoint's recipe, which trained as it is). The keys present in `raw` are the recipe's `given_keys`."""
    overridden = overridden or set()
    if not isinstance(raw, dict):
        raise IkdError(f"{source}: a recipe is a mapping of sections ({', '.join(_sections())})")
    sections = {}
    given: set[str] = set()
    for name, cls in _sections().items():
        values = raw.get(name, {}) or {}
        if not isinstance(values, dict):
            raise IkdError(f"{source}: section '{name}' must be a mapping")
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in values.items():
            if key not in hints:
                known = ", ".join(hints)
                raise IkdError(f"{source}: unknown key '{name}.{key}' (known keys of '{name}': {known})")
            where = f"--set {name}.{key}" if f"{name}.{key}" in overridden else f"{source}: {name}.{key}"
            kwargs[key] = _check_value(value, hints[key], where)
            if check_ranges:
                check_range(kwargs[key], f"{name}.{key}", where)
        sections[name] = cls(**kwargs)
        given.update(f"{name}.{key}" for key in kwargs)
    for name in raw:
        if name not in sections:
            raise IkdError(f"{source}: unknown section '{name}' (known: {', '.join(_sections())})")
    recipe = Recipe(**sections, given_keys=frozenset(given))
    if check_ranges:
        _check_together(recipe, source, overridden)
    return recipe


def _sections() -> dict[str, type]:
    fields = dataclasses.fields(Recipe)
    return {f.name: f.default_factory for f in fields if f.default_factory is not dataclasses.MISSING}  # type: ignore[misc]


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` strings (values parsed as YAML) to a raw recipe dict, in place; in one
    ordered list the last value of a key wins."""
    for item in overrides:
        if "=" not in item:
            raise IkdError(f"--set {item!r}: expected section.key=value")
        dotted, text = item.split("=", 1)
        parts = dotted.strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise IkdError(f"--set {item!r}: expected section.key=value, e.g. kd.distance=l1")
        section, key = parts
        sections = _sections()
        if section not in sections:
            raise IkdError(f"--set {item!r}: unknown section '{section}' (known: {', '.join(sections)})")
        hints = typing.get_type_hints(sections[section])
        if key not in hints:
            known = ", ".join(hints)
            raise IkdError(f"--set {item!r}: unknown key '{section}.{key}' (known keys of '{section}': {known})")
        value = yaml.safe_load(text) if text.strip() else ""
        node = raw.setdefault(section, {})
        if not isinstance(node, dict):
            raise IkdError(f"--set {item!r}: section '{section}' is not a mapping")
        node[key] = value
    return raw


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe, apply overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise IkdError(f"{path}: {'is a folder, not a recipe file' if Path(path).is_dir() else 'recipe not found'}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise IkdError(f"{path}: not valid YAML: {e}") from None
    apply_overrides(raw, overrides or [])
    overridden = {item.split("=", 1)[0].strip() for item in overrides or []}
    return recipe_from_dict(raw, source=str(path), overridden=overridden)


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
