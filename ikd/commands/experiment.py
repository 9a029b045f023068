"""`ikd experiment run|table|plot|status`: the paper's tables from one experiment file."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ikd.commands import output_file

HELP = """Run the paper's tables from one experiment file (experiments/*.yaml): every system x seed trained as
`ikd train` does into OUT/SYSTEM/seedN/, averaged, evaluated, then tabulated with mean ± std over seeds,
significance against the baseline and the published numbers beside."""

_OUT_HELP = "Folder of the run folders (default: the file's out:, else runs/NAME)."


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help=HELP, no_args_is_help=True)
    app.add_typer(sub, name="experiment")

    @sub.command("run")
    def run(
        experiment: Path = typer.Argument(..., metavar="EXP.yaml", help="Experiment file."),
        out: Path = typer.Option(None, "--out", metavar="DIR", help=_OUT_HELP),
        only: list[str] = typer.Option(None, "--only", metavar="SYSTEM[,SEED]", help="Only these runs (repeatable)."),
        executor: str = typer.Option("local", "--executor", metavar="local|slurm", help="Where the runs run."),
        jobs: int = typer.Option(1, "--jobs", "-j", help="Local runs at a time (subprocesses; one GPU each)."),
        device: str = typer.Option(None, "--device", metavar="cpu|cuda", help="Default: cuda when available."),
        partition: str = typer.Option(None, "--partition", help="Slurm partition."),
        gpus_per_run: int = typer.Option(1, "--gpus-per-run", help="Slurm: GPUs per job (0 or 1)."),
        time_limit: str = typer.Option("8:00:00", "--time", help="Slurm: time limit per job, [D-]HH:MM:SS."),
        cluster: str = typer.Option("slurm", "--submitit-cluster", hidden=True),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars and tables."),
    ) -> None:
        """Train, average and evaluate every (system, seed) run; finished runs are skipped, interrupted ones
        resumed. With --executor slurm, submit one job per unfinished run; run again to collect."""
        from ikd.console import make_console
        from ikd.errors import IkdError
        from ikd.experiment.runner import preflight, progress_table, run_local, select_runs
        from ikd.experiment.spec import load_experiment

        console = make_console(stderr=True)

        def say(message: str) -> None:
            console.print(message, markup=False, highlight=False, soft_wrap=True)

        def show(table) -> None:
            if not quiet:
                console.print(table)

        exp = load_experiment(experiment, out)
        runs = select_runs(exp, list(only or []))
        if jobs < 1:
            raise IkdError("--jobs must be at least 1")
        if executor not in ("local", "slurm"):
            raise IkdError(f"--executor {executor!r}: expected local or slurm")
        preflight(exp, runs)
        show(progress_table(exp, runs))
        if executor == "slurm":
            from ikd.experiment.slurm import submit
            from ikd.experiment.steps import prepare_data

            for name in dict.fromkeys(name for name, _ in runs):
                prepare_data(exp.systems[name], say)
            states = submit(exp, runs, say, partition, gpus_per_run, time_limit, cluster)
            show(progress_table(exp, runs, {r: s for r, s in states.items() if s != "done"}))
            waiting = [r for r, s in states.items() if s != "done"]
            again = "; run again to collect" if waiting else ""
            say(f"{len(runs) - len(waiting)} of {len(runs)} runs finished{again}")
            return
        failed = run_local(exp, runs, jobs, say, show, device, progress=not quiet)
        show(progress_table(exp, runs))
        if failed:
            names = ", ".join(f"{n}/seed{s}" for n, s in failed)
            raise IkdError(f"{len(failed)} of {len(runs)} runs failed ({names}); see failed.txt in their folders")
        say(f"all {len(runs)} runs finished; next: ikd experiment table {experiment}")

    @sub.command("status")
    def status(
        experiment: Path = typer.Argument(..., metavar="EXP.yaml", help="Experiment file."),
        out: Path = typer.Option(None, "--out", metavar="DIR", help=_OUT_HELP),
    ) -> None:
        """The progress table: each run's state, epochs and detail."""
        from ikd.console import make_console
        from ikd.experiment.runner import progress_table
        from ikd.experiment.spec import load_experiment

        exp = load_experiment(experiment, out)
        make_console().print(progress_table(exp, exp.runs()))

    @sub.command("table")
    def table(
        experiment: Path = typer.Argument(..., metavar="EXP.yaml", help="Experiment file."),
        out: Path = typer.Option(None, "--out", metavar="DIR", help=_OUT_HELP),
        fmt: str = typer.Option("markdown", "--format", "-f", metavar="markdown|latex|csv|json", help="Output."),
        output: Path = typer.Option(
            None, "--output", "-o", metavar="FILE", help="Write here instead of stdout.", callback=output_file
        ),
    ) -> None:
        """The paper's layout: one row per system, one column per split x metric, mean ± std over seeds,
        † / ‡ where the difference to the baseline is significant, the published values beside."""
        from ikd.errors import IkdError
        from ikd.experiment.spec import load_experiment
        from ikd.experiment.table import RENDERERS, collect, render

        if fmt not in RENDERERS:
            raise IkdError(f"--format {fmt!r}: expected one of {', '.join(RENDERERS)}")
        exp = load_experiment(experiment, out)
        text = render(collect(exp), fmt)
        if output is None:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            from ikd.fileio import atomic_write_text

            atomic_write_text(output, text)

    @sub.command("plot")
    def plot(
        experiment: Path = typer.Argument(..., metavar="EXP.yaml", help="Experiment file."),
        out: Path = typer.Option(None, "--runs", metavar="DIR", help=_OUT_HELP),
        figure: Path = typer.Option(
            ..., "--out", metavar="FILE", help="Figure to write (pdf, png or svg).", callback=output_file
        ),
    ) -> None:
        """Validation curves of every run (metrics.jsonl), mean ± one std band per system."""
        from ikd.console import make_console
        from ikd.experiment.plot import plot_experiment
        from ikd.experiment.spec import load_experiment

        exp = load_experiment(experiment, out)
        runs = plot_experiment(exp, figure)
        make_console(stderr=True).print(f"wrote {figure} ({runs} runs)", highlight=False)
