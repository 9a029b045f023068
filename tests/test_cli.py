"""The command-line conventions every command shares: help without torch, --version, switches without a
type, Ctrl-C and OS errors as one line, paths checked before work, '-' for stdin/stdout, --json PATH|-,
-q, --device, `ikd recipes`."""

from __future__ import annotations

import errno
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ikd.cli import main

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def feed_stdin(monkeypatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8"))))


def test_help_never_imports_torch() -> None:
    code = """
import sys
from ikd.cli import main
for args in (["--help"], ["translate", "--help"], ["train", "--help"], ["evaluate", "--help"],
             ["analyze", "curves", "--help"], ["prepare", "multi30k", "--help"], ["degrade", "color", "--help"],
             ["retrieve", "--help"], ["bpe", "--help"], ["recipes", "--help"], ["--version"]):
    assert main(args) == 0, args
heavy = [m for m in ("torch", "torchvision", "matplotlib", "numpy", "sacrebleu", "nltk") if m in sys.modules]
print("HEAVY", heavy)
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


def test_import_ikd_is_cheap_and_translator_is_lazy() -> None:
    result = run_python("import sys, ikd; print('torch' in sys.modules, ikd.__version__)")
    assert result.stdout.split() == ["False", "0.2.0"]
    result = run_python("import sys, ikd; T = ikd.Translator; print('torch' in sys.modules, T.__name__)")
    assert result.stdout.split() == ["True", "Translator"]
    result = run_python("import ikd; ikd.nothing")
    assert result.returncode == 1 and "has no attribute 'nothing'" in result.stderr


def test_version(capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "ikd 0.2.0"


def test_switches_show_no_type_in_help(capsys) -> None:
    assert main(["translate", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--detok" in text and "<bool>" not in text
    assert "auto|cpu|cuda|cuda:N" in text


def test_ctrl_c_is_exit_130_with_one_line(monkeypatch, capsys) -> None:
    from ikd.commands import recipes

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(recipes, "recipe_files", interrupted)
    assert main(["recipes"]) == 130
    captured = capsys.readouterr()
    assert captured.err.strip() == "ikd: interrupted"


@pytest.mark.parametrize(
    "error,expected",
    [
        (PermissionError(errno.EACCES, "Permission denied", "/d/out.txt"), "error: /d/out.txt: permission denied"),
        (OSError(errno.ENOSPC, "No space left on device", "/d/a.npy"), "error: /d/a.npy: no space left on device"),
        (OSError(errno.EIO, "Input/output error"), "error: input/output error"),
    ],
)
def test_os_errors_are_one_line_naming_the_path(monkeypatch, capsys, error: OSError, expected: str) -> None:
    from ikd.commands import recipes

    def fail():
        raise error

    monkeypatch.setattr(recipes, "recipe_files", fail)
    assert main(["recipes"]) == 1
    assert one_line_error(capsys.readouterr().err) == expected


@pytest.fixture()
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "FILE"
    path.write_text("not a folder\n")
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["translate", "-c", "x.pt", "-o", "{F}/x"],
        ["evaluate", "--hyp", "{H}", "--ref", "{H}", "--json", "{F}/x"],
        ["analyze", "curves", "--run", "{T}", "-o", "{F}/x.png"],
        ["prepare", "toy", "--out", "{F}/x"],
        ["train", "recipe.yaml", "--out", "{F}/x"],
        ["degrade", "color", "--input", "{H}", "--output", "{F}/x"],
        ["recipes", "toy", "-o", "{F}/x"],
    ],
)
def test_an_output_below_a_regular_file_is_one_line(tmp_path: Path, a_file: Path, capsys, args: list[str]) -> None:
    hyp = tmp_path / "hyp.de"
    hyp.write_text("a red car .\n")
    filled = [a.format(F=a_file, H=hyp, T=tmp_path) for a in args]
    assert main(filled) == 1
    line = one_line_error(capsys.readouterr().err)
    assert line == f"error: {a_file}/x{'.png' if 'analyze' in args else ''}: {a_file} is a file, not a folder"


def test_a_file_where_a_folder_is_expected_and_the_reverse(tmp_path: Path, a_file: Path, capsys) -> None:
    assert main(["prepare", "toy", "--out", str(a_file)]) == 1
    assert one_line_error(capsys.readouterr().err) == f"error: {a_file}: is a file, not a folder"
    assert main(["evaluate", "--hyp", str(tmp_path), "--ref", str(a_file)]) == 1
    assert one_line_error(capsys.readouterr().err) == f"error: {tmp_path}: is a folder, not a file"
    assert main(["translate", "-c", "x.pt", "-o", str(tmp_path)]) == 1
    assert one_line_error(capsys.readouterr().err) == f"error: {tmp_path}: is a folder; give a file name"
    assert main(["evaluate", "--hyp", str(tmp_path / "none.de"), "--ref", str(a_file)]) == 1
    assert one_line_error(capsys.readouterr().err) == f"error: {tmp_path / 'none.de'}: file not found"


def test_a_failed_prepare_leaves_no_empty_folders(tmp_path: Path, capsys) -> None:
    out = tmp_path / "new" / "multi30k"
    args = ["prepare", "multi30k", "--source", str(tmp_path / "missing"), "--out", str(out), "-q"]
    assert main(args) == 1
    one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine\n")
    assert main(["prepare", "multi30k", "--source", str(tmp_path / "missing"), "--out", str(kept / "m"), "-q"]) == 1
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]


def test_bad_device_spelling_is_one_line(capsys) -> None:
    retrieve = ["retrieve", "-c", "x", "--data", "d", "--split", "t"]
    for command in (["translate", "-c", "x.pt"], ["train", "x.yaml"], retrieve):
        assert main([*command, "--device", "gpu"]) == 1
        assert one_line_error(capsys.readouterr().err) == "error: --device 'gpu': expected auto, cpu, cuda or cuda:N"


def test_evaluate_reads_hypotheses_from_stdin(tmp_path: Path, monkeypatch, capsys) -> None:
    ref = tmp_path / "ref.de"
    ref.write_text("ein roter wagen .\nzwei hunde .\n")
    feed_stdin(monkeypatch, "ein roter wagen .\nzwei katzen .\n")
    assert main(["evaluate", "--hyp", "-", "--ref", str(ref), "--metrics", "bleu", "--json", "-", "-q"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # stdout is the JSON alone
    assert report["meta"]["sentences"] == 2 and 0 < report["systems"][0]["bleu"] < 100
    assert main(["evaluate", "--hyp", "-", "--ref", "-"]) == 1
    assert "can be read once only" in capsys.readouterr().err


def test_degrade_pipes_stdin_to_stdout(monkeypatch, capsys) -> None:
    feed_stdin(monkeypatch, "a red car .\na dog .\n")
    assert main(["degrade", "color", "--input", "-", "--output", "-"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "a [U] car .\na dog .\n"  # the degraded text alone on stdout
    assert "masked" in captured.err
    feed_stdin(monkeypatch, "a red car .\n")
    assert main(["degrade", "color", "--input", "-", "--output", "-", "--json", "-"]) == 1
    assert "both want stdout" in capsys.readouterr().err


def test_json_path_and_the_old_switch(tmp_path: Path, capsys) -> None:
    src = tmp_path / "in.en"
    src.write_text("a red car .\n")
    report = tmp_path / "counts.json"
    assert main(["degrade", "color", "-i", str(src), "-o", str(tmp_path / "o1"), "--json", str(report), "-q"]) == 0
    assert capsys.readouterr().out == ""
    assert json.loads(report.read_text())[str(src)]["masked"] == 1
    assert main(["degrade", "color", "-i", str(src), "-o", str(tmp_path / "o2"), "--json"]) == 0  # old switch
    captured = capsys.readouterr()
    assert json.loads(captured.out)[str(src)]["masked"] == 1
    assert "--json without a value is deprecated" in captured.err


def test_recipes_list_print_and_copy(tmp_path: Path, capsys) -> None:
    assert main(["recipes"]) == 0
    listed = capsys.readouterr().out
    assert {line.split()[0] for line in listed.splitlines()} >= {"toy", "en-de", "en-fr", "en-de-text"}
    assert main(["recipes", "toy"]) == 0
    assert capsys.readouterr().out == (REPO / "recipes" / "toy.yaml").read_text()
    copy = tmp_path / "mine.yaml"
    assert main(["recipes", "toy.yaml", "-o", str(copy)]) == 0
    assert copy.read_text() == (REPO / "recipes" / "toy.yaml").read_text()
    assert main(["recipes", "toy", "-o", str(copy)]) == 1
    assert "exists; give --force" in capsys.readouterr().err
    assert main(["recipes", "nope"]) == 1
    assert one_line_error(capsys.readouterr().err).startswith("error: recipe 'nope' not found; the shipped recipes are")


def test_the_shipped_recipe_loads(tmp_path: Path, capsys) -> None:
    from ikd.recipe import load_recipe

    copy = tmp_path / "toy.yaml"
    assert main(["recipes", "toy", "-o", str(copy), "-q"]) == 0
    assert load_recipe(copy, []).train.tensorboard is False
    assert load_recipe(copy, ["train.tensorboard=true"]).train.tensorboard is True


def test_no_space_left_names_the_output_file(tmp_path: Path, monkeypatch, capsys) -> None:
    """A write that fails without a file name (ENOSPC) is reported for the file the user asked for."""
    import ikd.commands

    def full_disk(path, text):
        from ikd.fileio import atomic_path

        with atomic_path(path):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ikd.commands, "write_text", full_disk)
    out = tmp_path / "toy.yaml"
    assert main(["recipes", "toy", "-o", str(out)]) == 1
    assert one_line_error(capsys.readouterr().err) == f"error: {out}: no space left on device"
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_changelog_has_a_dated_section_for_this_version() -> None:
    import re

    from ikd import __version__

    changelog = (Path(__file__).resolve().parents[1] / "CHANGELOG.md").read_text(encoding="utf-8")
    first = re.search(r"^## (.+)$", changelog, re.M)
    assert first is not None
    assert re.fullmatch(rf"{re.escape(__version__)} \(\d{{4}}-\d{{2}}-\d{{2}}\)", first.group(1)), first.group(1)
