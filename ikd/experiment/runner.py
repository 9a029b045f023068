"""Running an experiment's runs on this machine: checks before anything starts, one run after another in this
process, or N at a time in subprocesses (one GPU each when several are visible), and the progress table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ikd.errors import IkdError
from ikd.experiment.layout import check_identity
from ikd.experiment.spec import Experiment
from ikd.experiment.steps import check_data, execute_run, identity, prepare_data, run_state

Print = Callable[[str], None]


def select_runs(exp: Experiment, only: list[str] | None) -> list[tuple[str, int]]:
    """--only SYSTEM or SYSTEM,SEED (repeatable) -> the runs, in the experiment's order."""
    if not only:
        return exp.runs()
    chosen: set[tuple[str, int]] = set()
    for item in only:
        name, _, seed_text = item.partition(",")
        name = name.strip()
        if name not in exp.systems:
            raise IkdError(f"--only {item}: {name!r} is not a system of {exp.path} ({', '.join(exp.systems)})")
        if seed_text.strip():
            try:
                seed = int(seed_text)
            except ValueError:
                raise IkdError(f"--only {item}: expected SYSTEM or SYSTEM,SEED") from None
            if seed not in exp.seeds:
                raise IkdError(f"--only {item}: seed {seed} is not in seeds: {exp.seeds}")
            chosen.add((name, seed))
        else:
            chosen.update((name, s) for s in exp.seeds)
    return [run for run in exp.runs() if run in chosen]


def preflight(exp: Experiment, runs: list[tuple[str, int]]) -> None:
    """Everything that can fail before training: data, evaluation splits, and run folders made from other
    recipes (refused, naming both)."""
    for name, seed in runs:
        check_identity(exp.run_dir(name, seed), identity(exp, name, seed))
    for name in dict.fromkeys(name for name, _ in runs):
        check_data(exp, exp.systems[name])


def progress_table(exp: Experiment, runs: list[tuple[str, int]], extra: dict[tuple[str, int], str] | None = None):
    """A rich table: one row per run with its state (missing, started, trained, done, failed, or `extra`'s),
    the last finished epoch of the most (train.max_epochs) and a detail (validation BLEU, what is left)."""
    from rich.table import Table

    table = Table(title=f"experiment {exp.name}: {exp.out}")
    for column in ("system", "seed", "state", "epochs", "detail"):
        table.add_column(column, justify="right" if column in ("seed", "epochs") else "left")
    for name, seed in runs:
        state = run_state(exp, name, seed)
        shown = (extra or {}).get((name, seed)) or state.state
        epochs = f"{state.epoch}/{exp.systems[name].recipe.train.max_epochs}" if state.epoch else "-"
        table.add_row(name, str(seed), shown, epochs, state.detail)
    return table


def run_local(
    exp: Experiment,
    runs: list[tuple[str, int]],
    jobs: int,
    say: Print,
    show: Callable[[object], None],
    device: str | None = None,
    progress: bool = False,
) -> list[tuple[str, int]]:
    """Run every unfinished run; returns the runs that failed. Finished runs are skipped."""
    for name in dict.fromkeys(name for name, _ in runs):
        prepare_data(exp.systems[name], lambda m, n=name: say(f"[{n}] {m}"))
    todo = [run for run in runs if not run_state(exp, *run).finished]
    done = len(runs) - len(todo)
    if done:
        say(f"{done} of {len(runs)} runs finished already: skipped")
    if jobs <= 1:
        failed = []
        for name, seed in todo:
            try:
                execute_run(exp, name, seed, lambda m, n=name, s=seed: say(f"[{n}/seed{s}] {m}"), device, progress)
            except IkdError as e:
                say(f"[{name}/seed{seed}] failed: {e}")
                failed.append((name, seed))
            show(progress_table(exp, runs))
        return failed
    return _run_parallel(exp, todo, jobs, say, show, device)


def visible_gpus() -> list[str]:
    """The GPU ids a subprocess may be given through CUDA_VISIBLE_DEVICES (none when fewer than two)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        ids = [x.strip() for x in listed.split(",") if x.strip()]
    else:
        try:
            import torch

            ids = [str(i) for i in range(torch.cuda.device_count())]
        except Exception:  # noqa: BLE001 - no torch CUDA: no GPUs to share out
            ids = []
    return ids if len(ids) > 1 else []


def worker_command(exp: Experiment, name: str, seed: int, device: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "ikd.cli", "experiment", "run", str(exp.path), "--out", str(exp.out)]
    cmd += ["--only", f"{name},{seed}", "--jobs", "1", "--quiet"]
    return cmd + (["--device", device] if device else [])


def _package_root() -> str:
    """The folder that holds this ikd package: workers import the same code as the process that starts them."""
    import ikd

    return str(Path(ikd.__file__).resolve().parents[1])


def _die_with_parent() -> None:
    """In a worker, before it starts: ask Linux to kill it when the `run` that started it dies (kill -9
    included), so that a rerun never races an orphaned worker. Elsewhere a no-op (the run lock still holds)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _run_parallel(exp, todo, jobs, say, show, device) -> list[tuple[str, int]]:
    gpus = visible_gpus()
    free = list(range(jobs))
    running: dict[tuple[str, int], tuple[subprocess.Popen, int]] = {}
    failed: list[tuple[str, int]] = []
    queue = list(todo)
    while queue or running:
        while queue and free:
            name, seed = queue.pop(0)
            slot = free.pop(0)
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH")) if p)
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
            log = exp.run_dir(name, seed) / "log.txt"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a", encoding="utf-8") as f:
                proc = subprocess.Popen(
                    worker_command(exp, name, seed, device), stdout=f, stderr=f, env=env, preexec_fn=_die_with_parent
                )
            where = f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if gpus else ""
            say(f"[{name}/seed{seed}] started{where} (log {log})")
            running[name, seed] = (proc, slot)
        time.sleep(1.0)
        for run, (proc, slot) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[run]
            free.append(slot)
            state = run_state(exp, *run)
            say(f"[{run[0]}/seed{run[1]}] {state.state}" + (f": {state.detail}" if state.detail else ""))
            if proc.returncode != 0 or not state.finished:
                failed.append(run)
            show(progress_table(exp, todo, {r: "running" for r in running}))
    return failed
