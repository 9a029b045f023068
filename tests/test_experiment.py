"""`ikd experiment`: the experiment file's validation, and the table from constructed run folders (no training)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from ikd.cli import main
from ikd.errors import IkdError
from ikd.experiment import steps
from ikd.experiment.layout import IDENTITY, TRAINED, write_json
from ikd.experiment.spec import load_experiment
from ikd.experiment.table import collect, render
from ikd.fileio import atomic_write_lines

REPO = Path(__file__).resolve().parents[1]
TOY = str(REPO / "recipes" / "toy.yaml")
REFS = [f"ein hund läuft über die wiese nummer {i} ." for i in range(60)]


def write_experiment(folder: Path, **changes) -> Path:
    spec = {
        "name": "t",
        "seeds": [1, 2, 3],
        "baseline": "text",
        "systems": {
            "text": {"recipe": TOY, "set": ["model.text_only=true", "kd.lambda_irm=0", "kd.lambda_iam=0"]},
            "ikd": {"recipe": TOY},
        },
        "evaluate": {"data": str(folder / "data"), "splits": ["test"], "metrics": ["bleu", "r@1"]},
        "out": str(folder / "runs"),
    }
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def fake_run(exp, system: str, seed: int, hyps: list[str], bleu: float, r1: float | None = None) -> None:
    """A finished run folder as `ikd experiment run` leaves it, with the given hypotheses and scores."""
    run_dir = exp.run_dir(system, seed)
    write_json(run_dir / IDENTITY, steps.identity(exp, system, seed))
    write_json(run_dir / TRAINED, {"epochs": 1})
    s = exp.systems[system]
    atomic_write_lines(steps.hyp_path(run_dir, "test", "de"), hyps)
    write_json(
        steps.score_path(run_dir, "test"),
        {
            "checkpoint": steps.checkpoint_name(s),
            "data": str(s.eval_data),
            "search": steps.search_settings(exp),
            "scores": {"bleu": bleu},
            "meta": {},
        },
    )
    if r1 is not None:
        write_json(
            steps.retrieval_path(run_dir, "test"),
            {"checkpoint": steps.checkpoint_name(s), "data": str(s.eval_data), "recall": {"R@1": r1}},
        )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    atomic_write_lines(tmp_path / "data" / "text" / "test.de", REFS)
    return tmp_path


# ---------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "changes, message",
    [
        ({"seeds": [1, 10, 1]}, r"seeds: 1 is listed twice"),
        ({"systems": {"a": {"recipe": "recipes/nope.yaml"}}}, r"systems\.a\.recipe: recipes/nope\.yaml: recipe not"),
        ({"systems": {"a": {"recipe": TOY, "set": ["kd.nope=1"]}}}, r"systems\.a: .*unknown key 'kd\.nope'"),
        ({"systems": {"a": {"recipe": TOY, "set": ["kd.distance=l9"]}}}, r"systems\.a: set: kd\.distance: 'l9'"),
        ({"systems": {"a": {"recipe": TOY, "set": ["train.seed=3"]}}}, r"train\.seed is set by the experiment"),
        ({"systems": {"ikd": {"recipe": TOY}, "IKD": {"recipe": TOY}}}, r"systems ikd and IKD would write the same"),
        ({"systems": {"a": {"recipe": TOY, "colour": 1}}}, r"exp\.yaml: systems\.a\.colour: unknown key"),
        ({"seeds": "1"}, r"exp\.yaml: seeds: expected a list"),
        ({"baseline": "nope"}, r"baseline: 'nope' is not a system"),
        ({"evaluate": {"splits": ["test"], "metrics": ["bleu", "ter"]}}, r"evaluate\.metrics: 'ter' is not one of"),
        ({"evaluate": {"splits": ["test"], "beam": "5"}}, r"evaluate\.beam: expected an integer"),
        ({"evaluate": None}, r"exp\.yaml: evaluate: missing \(required\)"),
    ],
)
def test_bad_experiment_files_fail_naming_key_and_file(folder, changes, message):
    path = write_experiment(folder, **changes)
    with pytest.raises(IkdError, match=message):
        load_experiment(path)


def test_two_systems_degrading_into_one_folder_differently(folder):
    degrade = {"kind": "color", "source": str(folder / "data")}
    systems = {
        "a": {"recipe": TOY, "data": str(folder / "dc"), "degrade": degrade},
        "b": {"recipe": TOY, "data": str(folder / "dc"), "degrade": {**degrade, "mask": "[M]"}},
    }
    with pytest.raises(IkdError, match=r"systems a and b both write .*dc with different degrade steps"):
        load_experiment(write_experiment(folder, systems=systems, baseline=None))
    same = {"a": systems["a"], "b": {**systems["b"], "degrade": degrade}}
    exp = load_experiment(write_experiment(folder, systems=same, baseline=None))
    assert exp.systems["b"].data_dir == folder / "dc" and exp.systems["b"].eval_data == folder / "dc"


def test_a_run_folder_of_another_recipe_is_refused_naming_both(folder, capsys):
    exp = load_experiment(write_experiment(folder))
    fake_run(exp, "ikd", 1, REFS, 50.0)
    systems = {"text": {"recipe": TOY, "set": ["model.text_only=true"]}, "ikd": {"recipe": TOY, "set": ["kd.distance=l2"]}}  # noqa: E501
    changed = load_experiment(write_experiment(folder, systems=systems))
    with pytest.raises(IkdError, match=r"ikd/seed1: made from .*toy\.yaml, but .*exp\.yaml now says .*toy\.yaml "
                       r"\[kd\.distance=l2\] \(they differ in kd\.distance\)"):  # fmt: skip
        steps.check_identity(changed.run_dir("ikd", 1), steps.identity(changed, "ikd", 1))
    # the CLI refuses before any training starts
    capsys.readouterr()
    assert main(["experiment", "run", str(folder / "exp.yaml"), "--quiet"]) == 1
    assert "ikd/seed1: made from" in capsys.readouterr().err
    assert not (changed.run_dir("text", 1)).exists()  # nothing started
    # the table leaves that run out and says why
    text = render(collect(changed), "markdown")
    assert "ikd/seed1 (other recipe)" in text


def test_only_selects_runs_and_names_bad_ones(folder):
    from ikd.experiment.runner import select_runs

    exp = load_experiment(write_experiment(folder))
    assert select_runs(exp, ["ikd,2", "text"]) == [("text", 1), ("text", 2), ("text", 3), ("ikd", 2)]
    with pytest.raises(IkdError, match=r"--only ikd,7: seed 7 is not in seeds"):
        select_runs(exp, ["ikd,7"])
    with pytest.raises(IkdError, match=r"--only vis: 'vis' is not a system"):
        select_runs(exp, ["vis"])


# ---------------------------------------------------------------------------------------------- the table
def test_table_mean_std_significance_and_missing_runs(folder):
    exp = load_experiment(write_experiment(folder))
    wrong = [f"eine katze schläft {i}" for i in range(60)]
    half = [r if i % 2 else w for i, (r, w) in enumerate(zip(REFS, wrong))]
    for seed, bleu in zip([1, 2, 3], [30.0, 32.0, 34.0]):
        fake_run(exp, "text", seed, half, bleu)
    for seed, bleu, r1 in zip([1, 2], [40.0, 43.0], [5.0, 7.0]):
        fake_run(exp, "ikd", seed, REFS, bleu, r1)  # seed 3 never ran
    data = collect(exp)
    text_row, ikd_row = data.rows
    cell = text_row.cells["test", "bleu"]
    assert cell.mean_std == pytest.approx((32.0, 2.0))  # (30+32+34)/3; sqrt(((-2)^2+0+2^2)/2)
    ikd = ikd_row.cells["test", "bleu"]
    assert ikd.mean_std == pytest.approx((41.5, math.sqrt(4.5)))
    assert ikd.seeds == [1, 2] and ikd.tested_seeds == [1, 2]
    assert ikd.p is not None and ikd.p < 0.01  # the references themselves against half-wrong outputs
    assert ikd_row.cells["test", "r@1"].mean_std == pytest.approx((6.0, math.sqrt(2.0)))
    assert text_row.cells["test", "r@1"].status == "n/a"
    out = render(data, "markdown")
    assert "| text (baseline) | 3/3  | 32.00 ± 2.00" in out
    assert "41.50 ± 2.12 (2/3)‡" in out
    assert "ikd/seed3 (missing)" in out and "sentence-level cluster bootstrap over the seeds" in out
    records = json.loads(render(data, "json"))["cells"]
    got = {(r["system"], r["metric"]): r for r in records}
    assert got["ikd", "bleu"]["significant"] is True and got["text", "bleu"]["p_value"] is None
    assert got["ikd", "bleu"]["values"] == [40.0, 43.0]
    assert render(data, "csv").splitlines()[0].startswith("system,label,split,metric,mean,std")
    assert r"$\pm$" in render(data, "latex")


def test_identical_outputs_are_not_significant_and_cache(folder):
    exp = load_experiment(write_experiment(folder, seeds=[1]))
    fake_run(exp, "text", 1, REFS[:30] + ["x"] * 30, 20.0)
    fake_run(exp, "ikd", 1, REFS[:30] + ["x"] * 30, 20.0)
    cell = collect(exp).rows[1].cells["test", "bleu"]
    assert cell.p == 1.0 and "†" not in render(collect(exp), "markdown").split("\n")[5]
    cache = json.loads((exp.out / "significance.json").read_text())
    assert list(cache.values()) == [{"p": 1.0, "p_worse": 1.0}]


def test_published_values_and_differences(folder):
    published = folder / "paper.yaml"
    published.write_text(
        yaml.safe_dump(
            {"source": "a paper, Table 9", "pairs": {"en-de": {"IKD": {"test": {"bleu": {"mean": 40.0, "std": 0.3}}}}}}
        ),
        encoding="utf-8",
    )
    systems = {"text": {"recipe": TOY, "set": ["model.text_only=true"]}, "ikd": {"recipe": TOY, "published": "IKD"}}
    exp = load_experiment(write_experiment(folder, systems=systems, published=str(published), seeds=[1]))
    fake_run(exp, "ikd", 1, REFS, 41.25)
    out = render(collect(exp), "markdown")
    assert "| 41.25" in out and "40.00 ± 0.30 | +1.25" in out and "paper: a paper, Table 9" in out


def test_shipped_experiment_files_load(monkeypatch):
    monkeypatch.chdir(REPO)
    from ikd.experiment.published import load_published

    names = []
    for path in sorted((REPO / "experiments").glob("*.yaml")):
        exp = load_experiment(path)
        names.append(exp.name)
        if exp.spec.published:
            published = load_published(exp.spec.published, next(iter(exp.systems.values())).pair)
            for name, system in exp.systems.items():  # every system's row is in the paper's table
                assert (system.spec.published or name) in published.rows, (path.name, name)
    shipped = {"toy", "table1-en-de", "table1-en-fr", "table2-ablations", "table4-retrieval", "table5", "table6-probes"}
    assert shipped <= set(names)


def test_changed_search_settings_invalidate_cached_scores(folder):
    exp = load_experiment(write_experiment(folder, seeds=[1]))
    fake_run(exp, "ikd", 1, REFS, 50.0, 5.0)
    s = exp.systems["ikd"]
    assert steps.scores_current(exp, s, exp.run_dir("ikd", 1), "test") is not None
    assert steps.run_state(exp, "ikd", 1).state == "done"
    wider = load_experiment(write_experiment(folder, seeds=[1], evaluate={
        "data": str(folder / "data"), "splits": ["test"], "metrics": ["bleu", "r@1"], "beam": 12}))  # fmt: skip
    assert steps.scores_current(wider, wider.systems["ikd"], wider.run_dir("ikd", 1), "test") is None
    assert steps.run_state(wider, "ikd", 1).state == "trained"  # training kept, evaluation to redo
    more = load_experiment(write_experiment(folder, seeds=[1], evaluate={
        "data": str(folder / "data"), "splits": ["test"], "metrics": ["bleu", "chrf"]}))  # fmt: skip
    assert steps.scores_current(more, more.systems["ikd"], more.run_dir("ikd", 1), "test") is None


def test_averaging_window_names_the_checkpoint_and_needs_kept_epochs(folder):
    systems = {"a": {"recipe": TOY, "set": ["train.keep_last=20"], "average": {"last": 10, "upper_bound": 39}}}
    exp = load_experiment(write_experiment(folder, systems=systems, baseline=None))
    assert steps.checkpoint_name(exp.systems["a"]) == "checkpoint_avg10_upto39.pt"
    systems["a"]["set"] = ["train.keep_last=3"]
    with pytest.raises(IkdError, match=r"systems\.a\.average: .*train\.keep_last is 3"):
        load_experiment(write_experiment(folder, systems=systems, baseline=None))


def test_degrade_step_makes_the_systems_data_once(toy_data, tmp_path):
    import shutil

    from ikd.data.manifest import load_manifest

    source = tmp_path / "data"
    shutil.copytree(toy_data, source)
    systems = {
        "dc": {"recipe": TOY, "data": str(tmp_path / "dc"), "degrade": {"kind": "color", "source": str(source),
                                                                         "merges": 150}},
    }  # fmt: skip
    path = write_experiment(tmp_path, systems=systems, baseline=None)
    exp = load_experiment(path)
    said: list[str] = []
    steps.prepare_data(exp.systems["dc"], said.append)
    entry = load_manifest(tmp_path / "dc")["degrade"][-1]
    assert entry["kind"] == "color" and entry["total"]["masked"] > 0
    assert (tmp_path / "dc" / "en-de" / "test.bpe.en").is_file()
    assert "[U]" in (tmp_path / "dc" / "text" / "train.en").read_text(encoding="utf-8")
    steps.check_data(exp, exp.systems["dc"])
    steps.prepare_data(exp.systems["dc"], said.append)  # done already: nothing degraded again
    assert len([m for m in said if m.startswith("degrading")]) == 1
    other = {"dc": {**systems["dc"], "degrade": {**systems["dc"]["degrade"], "mask": "[M]"}}}
    changed = load_experiment(write_experiment(tmp_path, systems=other, baseline=None))
    with pytest.raises(IkdError, match=r"dc: a data folder made by another degrade step"):
        steps.prepare_data(changed.systems["dc"], said.append)


def test_slurm_time_limits():
    from ikd.experiment.slurm import parse_time

    assert parse_time("8:00:00") == 480 and parse_time("1-00:30:00") == 1470 and parse_time("90") == 90
    assert parse_time("0:00:30") == 1
    with pytest.raises(IkdError, match=r"--time 'soon'"):
        parse_time("soon")


def test_experiment_help_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from ikd.cli import main; main(['experiment', 'run', '--help']); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.stdout.strip().endswith("False")
