"""Experiment files: systems (a recipe plus overrides, optionally their own data and how it is degraded) x
seeds, and how the runs are evaluated. Loading validates everything that can be checked before any training:
types and unknown keys, recipes and their overrides, seeds, output folders, baselines, metrics."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ikd.errors import IkdError
from ikd.experiment.schema import from_mapping
from ikd.ranges import SEEDS, check_options
from ikd.recipe import Recipe, apply_overrides, recipe_from_dict

METRICS = ("bleu", "meteor", "chrf", "retrieval", "r@1", "r@5", "r@10", "r@15")
RETRIEVAL_KS = (1, 5, 10, 15)
TESTED = ("bleu", "chrf")  # the metrics `ikd evaluate` tests for significance
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# set by the experiment itself, per run: a `set:` line may not fix them
RESERVED = ("train.seed", "train.out")


@dataclass
class DegradeSpec:
    """How a system's data folder is made from another one (paper Table 6): `ikd degrade`, then `ikd bpe`."""

    kind: Literal["color", "entity"]
    source: str  # the prepared data folder to degrade
    words: str | None = None  # color: a word list (default: the built-in English colour terms)
    positions: list[str] = field(default_factory=list)  # entity: per-line token positions files
    mask: str = "[U]"
    lang: str | None = None  # the language masked (default: the recipe's source language)
    merges: int = 10000  # BPE merges of the `ikd bpe` step on the new folder


@dataclass
class AverageSpec:
    """Average other epoch checkpoints than the training's last N (`ikd train --average-only`)."""

    last: int = 10
    upper_bound: int | None = None  # the newest epoch averaged (fairseq's --checkpoint-upper-bound)


@dataclass
class SystemSpec:
    recipe: str
    set: list[str] = field(default_factory=list)
    data: str | None = None  # the system's own data folder (training and evaluation)
    degrade: DegradeSpec | None = None  # makes `data` from another folder
    average: AverageSpec | None = None
    label: str | None = None  # the row's name in the table (default: the system's key)
    published: str | None = None  # the row of the published file to print beside (default: the key)
    baseline: str | None = None  # another system to test this one against (default: the experiment's)


@dataclass
class EvaluateSpec:
    splits: list[str]
    metrics: list[str] = field(default_factory=lambda: ["bleu", "meteor"])
    data: str | None = None  # default: each system's data folder
    beam: int = 5
    lenpen: float = 1.0
    max_len_a: float = 0.0
    max_len_b: int = 200
    batch_size: int = 128
    average: list[str] = field(default_factory=list)  # a column group "avg": the mean over these splits (Table 2)
    meteor_jar: str | None = None
    require_meteor: bool = False
    bootstrap_samples: int = 1000
    bootstrap_seed: int = 12345


@dataclass
class TableSpec:
    """What `ikd experiment table` shows (default: every split, then avg when evaluate.average is given)."""

    splits: list[str] = field(default_factory=list)  # column groups in this order; "avg" is evaluate.average's mean


@dataclass
class ExperimentSpec:
    name: str
    seeds: list[int]
    systems: dict[str, SystemSpec]
    evaluate: EvaluateSpec
    baseline: str | None = None
    published: str | None = None
    out: str | None = None  # default runs/NAME
    description: str | None = None
    table: TableSpec = field(default_factory=TableSpec)


@dataclass
class System:
    """A system with its recipe resolved (seed-independent; `run_recipe` adds the seed)."""

    name: str
    spec: SystemSpec
    recipe_path: Path
    overrides: list[str]  # the `set:` lines, then data.dir when the system names its own data
    recipe: Recipe
    data_dir: Path
    eval_data: Path
    baseline: str | None

    @property
    def label(self) -> str:
        return self.spec.label or self.name

    @property
    def pair(self) -> str:
        return f"{self.recipe.data.src}-{self.recipe.data.tgt}"


@dataclass
class Experiment:
    path: Path
    spec: ExperimentSpec
    systems: dict[str, System]
    out: Path

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def seeds(self) -> list[int]:
        return self.spec.seeds

    def run_dir(self, system: str, seed: int) -> Path:
        return self.out / system / f"seed{seed}"

    def runs(self) -> list[tuple[str, int]]:
        return [(name, seed) for name in self.systems for seed in self.seeds]

    def run_recipe(self, system: str, seed: int) -> Recipe:
        """The recipe of one run: the system's, with train.seed and train.out set."""
        s = self.systems[system]
        raw = _read_recipe(s.recipe_path, f"{self.path}: systems.{system}.recipe")
        extra = [f"train.seed={seed}", f"train.out={self.run_dir(system, seed)}"]
        apply_overrides(raw, [*s.overrides, *extra])
        return recipe_from_dict(raw, str(s.recipe_path), overridden=_keys(s.overrides))

    def metric_columns(self) -> list[str]:
        """The table's metric names in order, `retrieval` expanded to R@1, R@5, R@10, R@15."""
        out: list[str] = []
        for m in self.spec.evaluate.metrics:
            for name in [f"r@{k}" for k in RETRIEVAL_KS] if m == "retrieval" else [m]:
                if name not in out:
                    out.append(name)
        return out


def _keys(overrides: list[str]) -> set[str]:
    return {item.split("=", 1)[0].strip() for item in overrides}


def _read_recipe(path: Path, where: str) -> dict[str, Any]:
    if not path.is_file():
        raise IkdError(f"{where}: {path}: {'is a folder, not a recipe file' if path.is_dir() else 'recipe not found'}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise IkdError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise IkdError(f"{path}: a recipe is a mapping of sections")
    return raw


def _resolve_system(path: Path, name: str, spec: SystemSpec, evaluate: EvaluateSpec) -> System:
    where = f"{path}: systems.{name}"
    keys = [item.split("=", 1)[0].strip() for item in spec.set]
    for key in sorted(set(keys)):
        if keys.count(key) > 1:
            raise IkdError(f"{where}.set: {key} is given more than once; give each key once")
        if key in RESERVED:
            raise IkdError(f"{where}.set: {key} is set by the experiment (seeds: and the run folder OUT/SYSTEM/seedN)")
        if key == "data.dir" and spec.data is not None:
            raise IkdError(f"{where}: give the data folder once, as data: or as set: data.dir=..., not both")
    recipe_path = Path(spec.recipe)
    raw = _read_recipe(recipe_path, f"{where}.recipe")
    overrides = list(spec.set)
    if spec.data is not None:
        overrides.append(f"data.dir={spec.data}")
    try:
        apply_overrides(raw, overrides)
        recipe = recipe_from_dict(raw, str(recipe_path), overridden=_keys(overrides))
    except IkdError as e:  # the recipe's errors name --set for an override: here it is a set: line
        raise IkdError(f"{where}: {str(e).replace('--set ', 'set: ', 1)}") from None
    if spec.degrade is not None and spec.data is None:
        raise IkdError(f"{where}.degrade: needs data: FOLDER, the folder the degraded copy is written to")
    if spec.degrade is not None:
        d = spec.degrade
        if d.kind == "color" and d.positions:
            raise IkdError(f"{where}.degrade.positions: goes with kind: entity")
        if d.kind == "entity" and not d.positions:
            raise IkdError(f"{where}.degrade.positions: kind entity needs positions files (as --positions)")
        if d.kind == "entity" and d.words is not None:
            raise IkdError(f"{where}.degrade.words: goes with kind: color")
        if Path(d.source).resolve() == Path(spec.data).resolve():  # type: ignore[arg-type]
            raise IkdError(f"{where}.degrade.source: must differ from data: {spec.data} (degrading never overwrites)")
    if spec.degrade is not None and spec.degrade.merges < 1:
        raise IkdError(f"{where}.degrade.merges {spec.degrade.merges}: must be at least 1")
    if spec.average is not None:
        a = spec.average
        if a.last < 1:
            raise IkdError(f"{where}.average.last {a.last}: must be at least 1")
        if a.upper_bound is not None and a.upper_bound < 1:
            raise IkdError(f"{where}.average.upper_bound {a.upper_bound}: must be at least 1 (an epoch)")
        if a.upper_bound is not None and recipe.train.keep_last < a.last:
            raise IkdError(
                f"{where}.average: averaging {a.last} epochs up to {a.upper_bound} needs them kept; "
                f"train.keep_last is {recipe.train.keep_last} (set train.keep_last=100)"
            )
    data_dir = Path(recipe.data.dir)
    eval_data = Path(spec.data) if spec.data is not None else Path(evaluate.data or recipe.data.dir)
    return System(name, spec, recipe_path, overrides, recipe, data_dir, eval_data, spec.baseline)


def load_experiment(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Experiment:
    """Read and validate an experiment file; `out` overrides its out: (default runs/NAME)."""
    path = Path(path)
    if not path.is_file():
        raise IkdError(f"{path}: {'is a folder, not an experiment file' if path.is_dir() else 'experiment not found'}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise IkdError(f"{path}: not valid YAML: {e}") from None
    spec: ExperimentSpec = from_mapping(raw, ExperimentSpec, f"{path}:")
    if not _NAME.match(spec.name):
        raise IkdError(f"{path}: name: {spec.name!r} must be letters, digits, '.', '_' or '-'")
    if not spec.seeds:
        raise IkdError(f"{path}: seeds: give at least one seed")
    for seed in spec.seeds:
        if spec.seeds.count(seed) > 1:
            raise IkdError(f"{path}: seeds: {seed} is listed twice")
        if not 1 <= seed <= SEEDS.high:
            raise IkdError(f"{path}: seeds: {seed} must be from 1 to {SEEDS.high} (train.seed)")
    if not spec.systems:
        raise IkdError(f"{path}: systems: give at least one system")
    folders: dict[str, str] = {}
    for name in spec.systems:
        if not _NAME.match(name):
            raise IkdError(f"{path}: systems.{name}: a system's name is its folder: letters, digits, '.', '_' or '-'")
        if name.lower() in folders:  # OUT/Name and OUT/name are one folder on case-insensitive file systems
            raise IkdError(f"{path}: systems {folders[name.lower()]} and {name} would write the same folder")
        folders[name.lower()] = name
    ev = spec.evaluate
    where = f"{path}: evaluate"
    if not ev.splits:
        raise IkdError(f"{where}.splits: give at least one split")
    for what, items in (("splits", ev.splits), ("metrics", ev.metrics)):
        for item in items:
            if items.count(item) > 1:
                raise IkdError(f"{where}.{what}: {item} is listed twice")
    for split in ev.average:
        if split not in ev.splits:
            raise IkdError(f"{where}.average: {split!r} is not one of evaluate.splits")
    for m in ev.metrics:
        if m not in METRICS:
            raise IkdError(f"{where}.metrics: {m!r} is not one of {', '.join(METRICS)}")
    check_options(f"{where}.", beam=ev.beam, lenpen=ev.lenpen, max_len_a=ev.max_len_a, max_len_b=ev.max_len_b)
    check_options(f"{where}.", batch_size=ev.batch_size, bootstrap_samples=ev.bootstrap_samples,
                  bootstrap_seed=ev.bootstrap_seed)  # fmt: skip
    for split in spec.table.splits:
        if split not in ev.splits and not (split == "avg" and ev.average):
            raise IkdError(f"{path}: table.splits: {split!r} is not in evaluate.splits (nor avg with evaluate.average)")
    systems = {name: _resolve_system(path, name, s, ev) for name, s in spec.systems.items()}
    for name, s in systems.items():
        base = s.baseline if s.baseline is not None else spec.baseline
        if base is not None and base not in systems:
            key = f"systems.{name}.baseline" if s.baseline is not None else "baseline"
            raise IkdError(f"{path}: {key}: {base!r} is not a system (systems: {', '.join(systems)})")
        s.baseline = base if base != name else None
    _check_data_writers(path, systems)
    out_dir = Path(out) if out is not None else Path(spec.out or f"runs/{spec.name}")
    return Experiment(path, spec, systems, out_dir)


def _check_data_writers(path: Path, systems: dict[str, System]) -> None:
    """Two systems may share a degraded folder only when they make it the same way; no system may train on a
    folder another one degrades into something else."""
    writers: dict[Path, tuple[str, DegradeSpec]] = {}
    for name, s in systems.items():
        if s.spec.degrade is None:
            continue
        target = s.data_dir.resolve()
        if target in writers and writers[target][1] != s.spec.degrade:
            raise IkdError(
                f"{path}: systems {writers[target][0]} and {name} both write {s.spec.data} with different degrade steps"
            )
        writers.setdefault(target, (name, s.spec.degrade))
    for name, s in systems.items():
        if s.spec.degrade is None and s.data_dir.resolve() in writers:
            raise IkdError(
                f"{path}: system {name} trains on {s.data_dir}, which system {writers[s.data_dir.resolve()][0]} "
                "writes with its degrade step; give it data: of its own or the same degrade step"
            )
