"""Slurm through submitit (the optional extra `ikd[slurm]`): one job per unfinished run; `ikd experiment run`
again collects: finished runs are skipped, queued or running jobs are left alone, failed ones resubmitted.
Each job runs the same steps as a local run, in the same run folder, so a job that is killed (time limit,
preemption) resumes from its last epoch checkpoint when submitted again."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from ikd.errors import IkdError
from ikd.experiment.layout import read_json, write_json
from ikd.experiment.spec import Experiment
from ikd.experiment.steps import run_state

JOB = "slurm.json"
ACTIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED", "UNKNOWN")


def parse_time(text: str) -> int:
    """Slurm's [D-]HH:MM:SS, HH:MM or MM -> minutes (rounded up)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise IkdError(f"--time {text!r}: expected [D-]HH:MM:SS, HH:MM or minutes")
    days, a, b, c = m.groups()
    if b is None:
        minutes, seconds = int(a), 0
    elif c is None:
        minutes, seconds = int(a) * 60 + int(b), 0
    else:
        minutes, seconds = int(a) * 60 + int(b), int(c)
    total = int(days or 0) * 24 * 60 + minutes + (1 if seconds else 0)
    if total < 1:
        raise IkdError(f"--time {text!r}: must be at least a minute")
    return total


def _submitit():
    try:
        import submitit
    except ImportError:
        raise IkdError("--executor slurm needs submitit: pip install 'ikd[slurm]'") from None
    return submitit


def job_main(experiment: str, out: str, system: str, seed: int, cwd: str) -> str:
    """What a job runs: one run of the experiment, to the end (picklable by name), in the folder it was
    submitted from (the experiment's paths are relative to it)."""
    import os

    from ikd.experiment.spec import load_experiment

    os.chdir(cwd)
    from ikd.experiment.steps import execute_run

    exp = load_experiment(experiment, out)
    execute_run(exp, system, seed, lambda msg: print(f"[{system}/seed{seed}] {msg}", flush=True))
    return run_state(exp, system, seed).state


def _job_state(submitit, folder: Path, record: dict[str, Any]) -> str:
    """The Slurm state of a recorded job (sacct through submitit); UNKNOWN when it cannot be asked."""
    if record.get("cluster") != "slurm":
        return "DONE"  # local and debug jobs do not outlive the submitting process
    try:
        return str(submitit.SlurmJob(folder=folder, job_id=str(record["job_id"])).state).upper()
    except Exception:  # noqa: BLE001 - sacct unavailable: leave the job alone
        return "UNKNOWN"


def submit(
    exp: Experiment,
    runs: list[tuple[str, int]],
    say,
    partition: str | None,
    gpus_per_run: int,
    time_limit: str,
    cluster: str = "slurm",
) -> dict[tuple[str, int], str]:
    """Submit a job per unfinished run without an active job; returns run -> its job's id or state."""
    submitit = _submitit()
    if gpus_per_run < 0:
        raise IkdError("--gpus-per-run must not be negative")
    if gpus_per_run > 1:
        raise IkdError("--gpus-per-run: a run takes one GPU (several GPUs for one run: torchrun -m ikd.train)")
    minutes = parse_time(time_limit)
    folder = exp.out / ".submitit"
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params: dict[str, Any] = {"timeout_min": minutes, "gpus_per_node": gpus_per_run, "tasks_per_node": 1}
    if cluster == "slurm" and partition:
        params["slurm_partition"] = partition
    result: dict[tuple[str, int], str] = {}
    jobs = []
    for name, seed in runs:
        run_dir = exp.run_dir(name, seed)
        if run_state(exp, name, seed).finished:
            result[name, seed] = "done"
            continue
        record = read_json(run_dir / JOB)
        if isinstance(record, dict):
            state = _job_state(submitit, folder, record)
            if state.split()[0] in ACTIVE:
                result[name, seed] = f"job {record['job_id']} {state.lower()}"
                continue
            say(f"[{name}/seed{seed}] job {record['job_id']} ended ({state.lower()}) unfinished: submitting again")
        executor.update_parameters(name=f"ikd-{exp.name}-{name}-s{seed}", **params)
        job = executor.submit(job_main, str(exp.path), str(exp.out), name, seed, os.getcwd())
        write_json(run_dir / JOB, {"job_id": str(job.job_id), "cluster": cluster, "submitted": time.time()})
        say(f"[{name}/seed{seed}] submitted job {job.job_id}")
        result[name, seed] = f"job {job.job_id} submitted"
        jobs.append(job)
    if cluster == "debug":  # the debug executor runs a job when its result is asked, here and now
        for job in jobs:
            job.result()
    return result
