"""RUN/.lock: one training per run folder; a lock of a training that no longer runs is taken over."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_train import TINY_MODEL, one_thread, toy_recipe

from ikd.checkpoint import load_checkpoint
from ikd.cli import main
from ikd.errors import IkdError
from ikd.recipe import dump_recipe
from ikd.train.lock import LOCK, RunLock, this_process

REPO = Path(__file__).resolve().parents[1]
SHORT = [*TINY_MODEL, "model.text_only=true", "train.max_updates=2", "train.valid_bleu=false", "train.average_last=0"]


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def _write_lock(folder: Path, **changes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    holder = dataclasses.replace(this_process(), **changes)
    (folder / LOCK).write_text(json.dumps(dataclasses.asdict(holder)), encoding="utf-8")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@contextlib.contextmanager
def held_by_child(run: Path) -> Iterator[subprocess.Popen]:
    """A child process holding RUN/.lock until it is killed with SIGKILL (its lock stays behind, stale)."""
    code = f"from ikd.train.lock import RunLock\nRunLock({str(run)!r}).acquire()\nprint('held', flush=True)\n"
    child = subprocess.Popen(
        [sys.executable, "-c", code + "import time\ntime.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "held"
        yield child
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()


def test_a_second_lock_is_refused_naming_the_folder_and_holder(tmp_path):
    run = tmp_path / "run"
    with held_by_child(run) as child:
        assert json.loads((run / LOCK).read_text())["pid"] == child.pid
        with pytest.raises(IkdError) as err:
            RunLock(run).acquire()
        message = str(err.value)
        assert message.startswith(f"{run}: another ikd process is working in this run folder")
        assert f"host {socket.gethostname()}, PID {child.pid}" in message and "\n" not in message
    with RunLock(run) as lock:  # the child was killed: its lock is stale
        assert lock.taken_over.pid == child.pid
        lock.check()
    assert not (run / LOCK).exists()


def test_the_folder_a_lock_made_is_removed_with_it_when_nothing_was_written(tmp_path):
    with RunLock(tmp_path / "run"):
        assert (tmp_path / "run" / LOCK).is_file()
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("how", ["dead PID", "PID reused", "rebooted"])
def test_a_stale_lock_of_this_host_is_taken_over(tmp_path, how):
    run = tmp_path / "run"
    changes = {
        "dead PID": {"pid": _dead_pid()},
        "PID reused": {"process_start": this_process().process_start - 1},  # our PID, an earlier process
        "rebooted": {"boot_id": "another-boot"},
    }[how]
    if how != "dead PID" and not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc")
    _write_lock(run, **changes)
    lock = RunLock(run).acquire()
    try:
        assert lock.taken_over is not None and lock.taken_over.pid == changes.get("pid", os.getpid())
        assert json.loads((run / LOCK).read_text())["pid"] == os.getpid()
    finally:
        lock.release()
    assert not (run / LOCK).exists() and run.is_dir()  # the folder was there before


def test_a_lock_of_another_host_is_refused_with_how_to_free_it(tmp_path):
    run = tmp_path / "run"
    _write_lock(run, host="gpu-node-17", pid=4242)
    with pytest.raises(IkdError, match=r"host gpu-node-17, PID 4242.*remove .*\.lock") as err:
        RunLock(run).acquire()
    assert str(err.value).startswith(f"{run}: this run folder is held by an ikd process of another host")
    (run / LOCK).write_text("not json")
    with pytest.raises(IkdError, match=r"\.lock: not a lock that ikd wrote"):
        RunLock(run).acquire()


def test_a_lock_this_process_holds_is_held_again_until_the_last_release(tmp_path):
    """`ikd experiment` holds a run's lock and trains in the run folder, which takes the lock again."""
    outer = RunLock(tmp_path / "run").acquire()
    inner = RunLock(tmp_path / "run").acquire()
    inner.release()
    outer.check()
    assert (outer.path).exists()
    outer.release()
    assert not (outer.path).exists()


def test_an_empty_lock_file_of_an_older_version_is_taken_over_unless_flocked(tmp_path):
    import fcntl

    run = tmp_path / "run"
    run.mkdir()
    with open(run / LOCK, "a") as f:  # how 0.2.0's `ikd experiment` held a run
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(IkdError, match="another ikd process is working in this run folder"):
            RunLock(run).acquire()
    with RunLock(run) as lock:  # the file stays, nobody holds it
        assert lock.taken_over is not None
        assert json.loads((run / LOCK).read_text())["pid"] == os.getpid()


def test_a_lock_removed_or_taken_meanwhile_stops_the_holder(tmp_path):
    lock = RunLock(tmp_path / "run").acquire()
    (lock.path).unlink()
    with pytest.raises(IkdError, match="lock was removed"):
        lock.check()
    _write_lock(tmp_path / "run", host="other", pid=7)
    with pytest.raises(IkdError, match="now held by host other, PID 7"):
        lock.check()
    lock.release()
    assert (lock.path).exists()  # not ours: left alone


@pytest.fixture()
def recipe_file(toy_data, tmp_path) -> Path:
    path = tmp_path / "short.yaml"
    path.write_text(dump_recipe(toy_recipe(toy_data, *SHORT)), encoding="utf-8")
    return path


def test_train_refuses_a_folder_another_training_holds_then_resumes_once_it_died(recipe_file, tmp_path, capsys):
    run = tmp_path / "run"
    with held_by_child(run) as holder:
        for resume in ([], ["--resume"]):
            code = main(["train", str(recipe_file), "--out", str(run), "--device", "cpu", "-q", *resume])
            assert code == 1
            line = one_line_error(capsys.readouterr().err)
            assert f"{run}: another ikd process is working in this run folder" in line
            assert f"PID {holder.pid}" in line and f"host {socket.gethostname()}" in line
    assert (run / LOCK).exists()
    with one_thread():
        assert main(["train", str(recipe_file), "--out", str(run), "--device", "cpu", "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"took over the lock of a process that no longer runs (host {socket.gethostname()}, PID {holder.pid}" in err
    assert load_checkpoint(run / "checkpoint_last.pt")["updates"] == 2
    assert not (run / LOCK).exists()  # released at the end


def test_the_lock_is_released_when_training_fails(recipe_file, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint1.pt").write_bytes(b"")  # an earlier run: refused without --resume
    assert main(["train", str(recipe_file), "--out", str(run), "--device", "cpu", "-q"]) == 1
    assert "--resume" in one_line_error(capsys.readouterr().err)
    assert not (run / LOCK).exists()
