"""Every numeric recipe key and search option has a range, checked before anything runs: a value outside it is one
line naming the key (or option) and the file; docs/recipes.md states each range as the code checks it."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from ikd.cli import main
from ikd.errors import IkdError
from ikd.ranges import OPTION_RANGES, Range, check_options
from ikd.recipe import NON_EMPTY, RANGES, _sections, accepted, load_recipe, recipe_from_dict

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "recipes" / "toy.yaml"


def _keys(kind: tuple[type, ...]) -> list[str]:
    out = []
    for section, cls in _sections().items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            annotation = hints[f.name]
            if annotation in kind or (typing.get_origin(annotation) is tuple and kind != (str,)):
                out.append(f"{section}.{f.name}")
    return out


NUMERIC = _keys((int, float))


def outside(allowed: Range, integer: bool) -> list[float]:
    """Values just outside `allowed`: below its low bound, above its high one."""
    values = []
    if allowed.low is not None:
        values.append(allowed.low if allowed.low_open else allowed.low - (1 if integer else 0.5))
    if allowed.high is not None:
        values.append(allowed.high if allowed.high_open else allowed.high + 1)
    return values


def test_every_numeric_key_has_a_range_and_every_range_a_key():
    assert sorted(RANGES) == sorted(NUMERIC)
    assert all(key in _keys((str,)) for key in NON_EMPTY)


def _cases() -> list[tuple[str, float]]:
    cases = []
    for key in NUMERIC:
        section, name = key.split(".")
        default = getattr(getattr(__import__("ikd.recipe").recipe.Recipe(), section), name)
        integer = isinstance(default, int) and not isinstance(default, bool)
        for value in outside(RANGES[key], integer):
            cases.append((key, value))
    return cases


def _recipe_with(tmp_path: Path, key: str, value) -> Path:
    raw = yaml.safe_load(TOY.read_text(encoding="utf-8"))
    section, name = key.split(".")
    raw.setdefault(section, {})[name] = [value, 0.98] if key == "train.adam_betas" else value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.mark.parametrize("key, value", _cases())
def test_a_value_out_of_range_names_the_key_and_the_file(tmp_path, key, value):
    path = _recipe_with(tmp_path, key, value)
    with pytest.raises(IkdError) as err:
        load_recipe(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {key}: ") and "out of range (must be" in message and "\n" not in message
    with pytest.raises(IkdError, match=rf"^--set {key}: .*out of range"):
        load_recipe(TOY, [f"{key}={[value, 0.98] if key == 'train.adam_betas' else value}"])


@pytest.mark.parametrize("key", NUMERIC)
def test_the_bounds_themselves_are_accepted(key):
    allowed = RANGES[key]
    for bound, is_open in ((allowed.low, allowed.low_open), (allowed.high, allowed.high_open)):
        if bound is None or is_open:
            continue
        value = [bound, bound] if key == "train.adam_betas" else bound
        overrides = [f"{key}={value}"]
        if key == "model.d_model":
            overrides.append("model.heads=1")
        if key == "model.max_positions":
            overrides.append("data.max_len=2")
        if key == "train.lr":
            overrides.append("train.warmup_init_lr=0")
        if key == "vision.image_size":
            overrides.append("vision.backbone=resnet18")  # the toy recipe's alexnet needs 63
        load_recipe(TOY, overrides)


@pytest.mark.parametrize("key", ["model.dropout", "train.lr", "kd.lambda_irm", "train.adam_betas"])
@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf"])
def test_nan_and_infinity_are_refused(tmp_path, key, text):
    value = f"[{text}, 0.98]" if key == "train.adam_betas" else text
    with pytest.raises(IkdError, match=rf"--set {key}(\[0\])?: expected a finite number"):
        load_recipe(TOY, [f"{key}={value}"])


@pytest.mark.parametrize("key", NON_EMPTY)
def test_empty_names_are_refused(key):
    with pytest.raises(IkdError, match=rf"^--set {key}: must not be empty"):
        load_recipe(TOY, [f"{key}=''"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.heads=3"], "model.heads=3 does not divide model.d_model=128"),
        (["model.d_model=33", "model.heads=3"], "model.d_model=33 must be even"),
        (["data.max_len=300", "model.max_positions=256"], "data.max_len=300 is more than model.max_positions=256"),
        (["train.warmup_init_lr=0.01", "train.lr=0.001"], "train.warmup_init_lr=0.01 is more than train.lr=0.001"),
        (["vision.backbone=alexnet", "vision.image_size=32"], "vision.image_size=32 is too small for"),
    ],
)
def test_rules_between_keys_name_the_keys_and_the_file(tmp_path, overrides, message):
    raw = yaml.safe_load(TOY.read_text(encoding="utf-8"))
    for item in overrides:
        dotted, value = item.split("=")
        section, name = dotted.split(".")
        raw.setdefault(section, {})[name] = yaml.safe_load(value)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(IkdError) as err:
        load_recipe(path)
    assert str(err.value).startswith(f"{path}: {message}")
    with pytest.raises(IkdError, match=rf"^--set {message}"):
        load_recipe(TOY, overrides)


def test_train_refuses_heads_that_do_not_divide_d_model_in_one_line(tmp_path, capsys):
    """Today's first example: it was a traceback from the attention layer."""
    path = _recipe_with(tmp_path, "model.heads", 3)
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--device", "cpu"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [f"error: {path}: model.heads=3 does not divide model.d_model=128"]
    assert not (tmp_path / "run").exists()


def test_a_checkpoints_recipe_is_read_as_it_trained():
    raw = {"model": {"heads": 3, "d_model": 128}, "train": {"log_every": 0}}
    recipe = recipe_from_dict(raw, "ckpt (recipe)", check_ranges=False)
    assert recipe.model.heads == 3 and recipe.train.log_every == 0


def test_docs_state_every_key_and_option_as_the_code_checks_it():
    doc = (REPO / "docs" / "recipes.md").read_text(encoding="utf-8")
    for section, cls in _sections().items():
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            row = next((line for line in doc.splitlines() if line.startswith(f"| `{key}` |")), None)
            assert row is not None, key
            assert row.split(" | ")[2] == accepted(key), key
    for name, allowed in OPTION_RANGES.items():
        if name == "bootstrap_seed":
            continue  # the experiment file's name of --seed
        row = next(line for line in doc.splitlines() if line.startswith(f"| `--{name.replace('_', '-')}` |"))
        assert row.split(" | ")[1] == allowed.text(), name
    assert "docs/recipes.md" in (REPO / "README.md").read_text(encoding="utf-8")


OPTION_CASES = [
    (["--beam", "0"], "--beam 0: must be at least 1"),
    (["--beam", "2", "--nbest", "3"], "--nbest 3: must be between 1 and the beam size (2)"),
    (["--nbest", "0"], "--nbest 0: must be at least 1"),
    (["--lenpen", "-0.5"], "--lenpen -0.5: must be from 0 to 10"),
    (["--lenpen", "11"], "--lenpen 11.0: must be from 0 to 10"),
    (["--lenpen", "nan"], "--lenpen nan: must be a finite number"),
    (["--max-len-a", "-1"], "--max-len-a -1.0: must be at least 0"),
    (["--max-len-b", "-1"], "--max-len-b -1: must be at least 0"),
    (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
    (["--max-tokens", "-1"], "--max-tokens -1: must be at least 0"),
    (["--buffer-lines", "0"], "--buffer-lines 0: must be at least 1"),
    (["--threads", "-2"], "--threads -2: must be at least 0"),
]


@pytest.mark.parametrize("args, message", OPTION_CASES)
def test_translate_options_are_checked_before_the_model_is_loaded(tmp_path, capsys, args, message):
    missing = tmp_path / "no-such.pt"  # never read: the options fail first
    assert main(["translate", "-c", str(missing), *args]) == 1
    assert capsys.readouterr().err.strip() == f"error: {message}"


EVALUATE_CASES = [
    (["--beam", "0"], "--beam 0: must be at least 1"),
    (["--lenpen", "-1"], "--lenpen -1.0: must be from 0 to 10"),
    (["--max-len-a", "-1"], "--max-len-a -1.0: must be at least 0"),
    (["--max-len-b", "-5"], "--max-len-b -5: must be at least 0"),
    (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
    (["--threads", "-1"], "--threads -1: must be at least 0"),
    (["--bootstrap-samples", "0"], "--bootstrap-samples 0: must be at least 1"),
    (["--seed", "-1"], "--seed -1: must be from 0 to 4294967295"),
    (["--seed", str(2**32)], f"--seed {2**32}: must be from 0 to 4294967295"),
]


@pytest.mark.parametrize("args, message", EVALUATE_CASES)
def test_evaluate_options_are_checked_before_the_model_is_loaded(tmp_path, capsys, args, message):
    data = tmp_path / "data"
    data.mkdir()
    command = ["evaluate", "-c", str(tmp_path / "no-such.pt"), "--data", str(data), "--split", "test", *args]
    assert main(command) == 1
    assert capsys.readouterr().err.strip() == f"error: {message}"


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("beam", 0, "beam 0: must be at least 1"),
        ("lenpen", -1.0, "lenpen -1.0: must be from 0 to 10"),
        ("max_len_a", -0.5, "max_len_a -0.5: must be at least 0"),
        ("max_len_b", -1, "max_len_b -1: must be at least 0"),
        ("batch_size", 0, "batch_size 0: must be at least 1"),
        ("bootstrap_samples", 0, "bootstrap_samples 0: must be at least 1"),
        ("bootstrap_seed", -3, "bootstrap_seed -3: must be from 0 to 4294967295"),
    ],
)
def test_an_experiments_evaluate_section_takes_the_same_ranges(tmp_path, key, value, message):
    from ikd.experiment.spec import load_experiment

    spec = {
        "name": "t",
        "seeds": [1],
        "systems": {"text": {"recipe": str(TOY), "set": ["model.text_only=true"]}},
        "evaluate": {"splits": ["test"], key: value},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    with pytest.raises(IkdError) as err:
        load_experiment(path)
    assert str(err.value) == f"{path}: evaluate.{message}"


def test_an_experiments_seeds_and_recipes_are_checked_at_load(tmp_path):
    from ikd.experiment.spec import load_experiment

    def experiment(seeds, sets) -> Path:
        spec = {"name": "t", "seeds": seeds, "systems": {"a": {"recipe": str(TOY), "set": sets}},
                "evaluate": {"splits": ["test"]}}  # fmt: skip
        path = tmp_path / "exp.yaml"
        path.write_text(yaml.safe_dump(spec), encoding="utf-8")
        return path

    with pytest.raises(IkdError, match=r"seeds: 2147483648 must be from 1 to 2147483647"):
        load_experiment(experiment([2**31], []))
    path = experiment([1], ["model.heads=3"])
    with pytest.raises(IkdError, match=rf"^{path}: systems.a: set: model.heads=3 does not divide model.d_model=128"):
        load_experiment(path)


def test_check_options_names_the_file_for_an_experiment():
    with pytest.raises(IkdError, match=r"^x.yaml: evaluate.beam 0: must be at least 1$"):
        check_options("x.yaml: evaluate.", beam=0)
    check_options(beam=1, nbest=1, lenpen=0.0, max_len_a=0.0, max_len_b=0)  # the bounds themselves
