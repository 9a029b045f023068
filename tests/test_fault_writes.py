"""A write that fails (full disk, quota, no permission, a file where a folder should be) is one line naming the
file; what was there before stays whole, and a training continues with --resume."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch
from fixtures_train import TINY_MODEL, one_thread, toy_recipe

import ikd.fileio as fileio
from ikd.checkpoint import load_checkpoint, save_checkpoint
from ikd.cli import main
from ikd.fileio import atomic_path, stopped_write
from ikd.recipe import dump_recipe
from ikd.train.lock import LOCK

# torch.save's own words when the file it writes does not grow (seen writing to /dev/full)
TORCH_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
SAFETENSORS_FULL = (
    'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
)
SAFETENSORS_BIG = 'Error while serializing: IoError(Os { code: 27, kind: FileTooLarge, message: "File too large" })'
TWO_EPOCHS = [*TINY_MODEL, "model.text_only=true", "train.max_epochs=2", "train.valid_bleu=false",
              "train.keep_last=2", "train.average_last=2"]  # fmt: skip


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def test_library_write_errors_become_os_errors_naming_the_file(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    target = tmp_path / "model.pt"
    monkeypatch.setattr(fileio, "_nearly_full", lambda folder: True)
    full = stopped_write(RuntimeError(TORCH_FULL), target)
    assert (full.errno, full.filename) == (errno.ENOSPC, str(target))
    monkeypatch.setattr(fileio, "_nearly_full", lambda folder: False)  # space left: a quota, or another fault
    short = stopped_write(RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"), target)
    assert short.errno == errno.EIO and "the write stopped short" in short.strerror and "quota" in short.strerror
    for text, number in ((SAFETENSORS_FULL, errno.ENOSPC), (SAFETENSORS_BIG, errno.EFBIG)):
        mapped = stopped_write(SafetensorError(text), target)
        assert (mapped.errno, mapped.strerror, mapped.filename) == (number, os.strerror(number), str(target))
    assert stopped_write(RuntimeError("CUDA out of memory"), target) is None  # not a write failure
    assert stopped_write(ValueError("bad"), target) is None


def test_nearly_full_reads_the_free_space_of_the_folder(tmp_path, monkeypatch):
    class Stat:
        f_frsize = 4096
        f_bavail = 100  # 400 KiB free

    monkeypatch.setattr(os, "statvfs", lambda folder: Stat)
    assert fileio._nearly_full(tmp_path)
    Stat.f_bavail = 1 << 20  # 4 GiB
    assert not fileio._nearly_full(tmp_path)


def _failing_save(monkeypatch, error: BaseException, after: int = 0):
    """torch.save (as ikd.checkpoint calls it) writes part of the file, then fails, from call `after` + 1 on."""
    import ikd.checkpoint

    real = torch.save
    calls = {"n": 0}

    def save(obj, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= after:
            return real(obj, path, *args, **kwargs)
        Path(path).write_bytes(b"PK\x03\x04 cut short")
        raise error

    monkeypatch.setattr(ikd.checkpoint.torch, "save", save)
    monkeypatch.setattr(fileio, "_nearly_full", lambda folder: True)
    return calls


@pytest.mark.parametrize(
    "error, reason",
    [
        (RuntimeError(TORCH_FULL), "no space left on device"),
        (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk quota exceeded"),
    ],
    ids=["torch", "enospc", "quota"],
)
def test_a_checkpoint_that_cannot_be_written_leaves_the_earlier_one_whole(tmp_path, monkeypatch, error, reason):
    path = tmp_path / "checkpoint_average.pt"
    save_checkpoint({"epoch": 1, "model": {"w": torch.ones(3)}}, path)
    _failing_save(monkeypatch, error)
    with pytest.raises(OSError) as err:
        save_checkpoint({"epoch": 2, "model": {"w": torch.zeros(3)}}, path)
    assert err.value.filename == str(path)
    from ikd.cli import os_error_message

    assert os_error_message(err.value) == f"{path}: {reason}"
    assert load_checkpoint(path)["epoch"] == 1 and leftovers(tmp_path) == []


@pytest.fixture()
def recipe_file(toy_data, tmp_path) -> Path:
    path = tmp_path / "two.yaml"
    path.write_text(dump_recipe(toy_recipe(toy_data, *TWO_EPOCHS)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(toy_data, tmp_path_factory) -> Path:
    """The same two epochs, uninterrupted."""
    from ikd.train.trainer import train

    out = tmp_path_factory.mktemp("reference") / "run"
    with one_thread():
        train(toy_recipe(toy_data, *TWO_EPOCHS), out=out, device="cpu", progress=False, report=lambda _m: None)
    return out


def test_a_full_disk_at_a_checkpoint_stops_training_in_one_line_and_resume_ends_as_uninterrupted(
    recipe_file, reference, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    _failing_save(monkeypatch, RuntimeError(TORCH_FULL), after=1)  # epoch 1 is written, epoch 2 is not
    assert main(["train", str(recipe_file), "--out", str(run), "--device", "cpu", "-q"]) == 1
    line = one_line_error(capsys.readouterr().err)
    assert line == (
        f"error: {run / 'checkpoint2.pt'}: no space left on device; {run / 'checkpoint_last.pt'} (epoch 1) is kept: "
        "make room and continue with ikd train --resume"
    )
    assert load_checkpoint(run / "checkpoint_last.pt")["epoch"] == 1
    assert not (run / "checkpoint2.pt").exists() and leftovers(run) == [] and not (run / LOCK).exists()
    monkeypatch.undo()  # room made
    assert main(["train", str(recipe_file), "--out", str(run), "--device", "cpu", "-q", "--resume"]) == 0
    want, got = load_checkpoint(reference / "checkpoint_last.pt"), load_checkpoint(run / "checkpoint_last.pt")
    assert got["epoch"] == 2 and got["updates"] == want["updates"]
    for name, value in want["model"].items():
        assert torch.equal(got["model"][name], value), name
    assert load_checkpoint(run / "checkpoint_average.pt")["averaged_epochs"] == [1, 2]


def test_a_full_disk_while_averaging_keeps_the_earlier_average(reference, tmp_path, monkeypatch, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    before = load_checkpoint(run / "checkpoint_average.pt")["model"]
    _failing_save(monkeypatch, RuntimeError(TORCH_FULL))
    assert main(["train", "--average-only", str(run), "--average-last", "1"]) == 1
    assert one_line_error(capsys.readouterr().err) == f"error: {run / 'checkpoint_average.pt'}: no space left on device"
    after = load_checkpoint(run / "checkpoint_average.pt")
    assert after["averaged_epochs"] == [1, 2] and all(torch.equal(after["model"][k], v) for k, v in before.items())
    assert leftovers(run) == []


def test_a_full_disk_while_exporting_keeps_the_earlier_export(reference, tmp_path, monkeypatch, capsys):
    import safetensors.torch
    from safetensors import SafetensorError

    out = tmp_path / "export"
    checkpoint = reference / "checkpoint_average.pt"
    assert main(["export", str(checkpoint), "--out", str(out)]) == 0
    capsys.readouterr()
    files = {p.name: p.read_bytes() for p in out.iterdir()}

    def full(*args, **kwargs):
        raise SafetensorError(SAFETENSORS_FULL)

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    assert main(["export", str(checkpoint), "--out", str(out)]) == 1
    assert one_line_error(capsys.readouterr().err) == f"error: {out / 'model.safetensors'}: no space left on device"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files  # the earlier export, as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temporary folder left


def test_a_full_disk_while_translating_to_a_file_keeps_the_earlier_file(reference, tmp_path, monkeypatch, capsys):
    import builtins

    import ikd.commands.translate as translate_command

    source, output = tmp_path / "in.en", tmp_path / "out.de"
    source.write_text("a red circle .\na blue square .\n", encoding="utf-8")
    output.write_text("earlier translations\n", encoding="utf-8")

    class FullFile:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def full_open(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        return FullFile(f) if "w" in mode else f

    monkeypatch.setattr(translate_command, "open", full_open, raising=False)
    args = ["translate", "-c", str(reference / "checkpoint_average.pt"), "-i", str(source), "-o", str(output), "-q"]
    assert main(args) == 1
    assert one_line_error(capsys.readouterr().err) == f"error: {output}: no space left on device"
    assert output.read_text(encoding="utf-8") == "earlier translations\n" and leftovers(tmp_path) == []


def test_output_paths_under_a_file_or_without_permission_are_one_line(reference, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file\n")
    checkpoint = str(reference / "checkpoint_average.pt")
    for args, named in (
        (["export", checkpoint, "--out", str(blocker / "export")], blocker / "export"),
        (["train", "--average-only", str(reference), "--average-out", str(blocker / "a" / "avg.pt")],
         blocker / "a" / "avg.pt"),
        (["translate", "-c", checkpoint, "-o", str(blocker / "out.de")], blocker / "out.de"),
    ):  # fmt: skip
        assert main(args) == 1
        assert one_line_error(capsys.readouterr().err) == f"error: {named}: {blocker} is a file, not a folder"
    # the library's own writes, below the command-line checks
    with pytest.raises(Exception, match=rf"{blocker}/x/y\.pt: {blocker} is a file, not a folder"):
        save_checkpoint({"epoch": 1}, blocker / "x" / "y.pt")

    def refused(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", dir)

    monkeypatch.setattr(fileio.tempfile, "mkstemp", refused)
    with pytest.raises(Exception, match=rf"{tmp_path}/y\.pt: permission denied \(cannot write in {tmp_path}\)"):
        with atomic_path(tmp_path / "y.pt"):
            pass
