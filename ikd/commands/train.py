"""`ikd train`."""

from __future__ import annotations

import os
import re
from pathlib import Path

import typer

from ikd.commands import device as device_option
from ikd.commands import output_dir, output_file, quiet
from ikd.errors import IkdError

_OVERRIDE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*=")


def _split_arguments(arguments: list[str]) -> tuple[Path | None, list[str]]:
    """Positional arguments -> (the recipe, overrides): every SECTION.KEY=VALUE is an override, so that
    `--set a=1 b=2` means `--set a=1 --set b=2`; one other argument at most, the recipe."""
    overrides = [a for a in arguments if _OVERRIDE.match(a)]
    others = [a for a in arguments if a not in overrides]
    if len(others) > 1:
        raise IkdError(f"one RECIPE.yaml expected, got {len(others)}: {', '.join(others)}")
    return (Path(others[0]) if others else None), overrides


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        arguments: list[str] = typer.Argument(
            None,
            metavar="RECIPE.yaml [SECTION.KEY=VALUE ...]",
            help="Recipe YAML (see recipes/), optionally followed by overrides as --set takes them.",
            show_default=False,
        ),
        overrides: list[str] = typer.Option(
            None,
            "--set",
            metavar="SECTION.KEY=VALUE",
            help="Override a recipe key: section.key=value (repeatable), e.g. kd.distance=l1.",
        ),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in OUT from checkpoint_last.pt."),
        out: Path = typer.Option(
            None, "--out", metavar="DIR", help="Run folder (default: the recipe's train.out).", callback=output_dir
        ),
        device: str = device_option(),
        tensorboard: bool = typer.Option(
            False,
            "--tensorboard",
            help="Also write the metrics to OUT/tensorboard for TensorBoard (the recipe key train.tensorboard; "
            "needs pip install 'ikd[tensorboard]').",
        ),
        average_only: Path = typer.Option(
            None,
            "--average-only",
            metavar="RUN_DIR",
            help="Only average the last epoch checkpoints of this run folder.",
        ),
        average_last: int = typer.Option(
            None, "--average-last", help="With --average-only: how many epoch checkpoints (default 10)."
        ),
        upper_bound: int = typer.Option(
            None,
            "--upper-bound",
            metavar="EPOCH",
            help="With --average-only: average the last N epochs up to this one (fairseq's --checkpoint-upper-bound); "
            "an error when fewer than N of them are kept (without it, fewer are averaged, with a note).",
        ),
        average_out: Path = typer.Option(
            None,
            "--average-out",
            metavar="PATH",
            help="With --average-only: output file (default RUN/checkpoint_average.pt).",
            callback=output_file,
        ),
        quiet_: bool = quiet(),
    ) -> None:
        """Train an IKD-MMT (or text-only) translator from a recipe: validates every epoch, keeps
        per-epoch/best/last checkpoints, early-stops, and averages the last N epoch checkpoints into
        OUT/checkpoint_average.pt. Several GPUs: `torchrun --nproc_per_node N -m ikd.train RECIPE.yaml ...`."""
        from ikd.console import info, progress_enabled
        recipe, trailing = _split_arguments(list(arguments or []))
        overrides = [*(overrides or []), *trailing]  # so `--set a=1 b=2` means `--set a=1 --set b=2`
        keys = [item.split("=", 1)[0].strip() for item in overrides]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:  # the parser keeps --set values and positional ones apart, so "the last one wins" is unclear
            raise IkdError(f"--set {', '.join(twice)}: given more than once; give each key once")
        for option, value in (("--average-last", average_last), ("--upper-bound", upper_bound)):
            if value is not None and value < 1:
                raise IkdError(f"{option} {value}: must be at least 1")
        if average_only is not None:
            from ikd.train.checkpoints import average_checkpoints

            if recipe is not None:
                raise IkdError("--average-only takes a run folder and no recipe")
            last = 10 if average_last is None else average_last
            path = average_checkpoints(average_only, last, average_out, upper_bound)
            from ikd.checkpoint import load_checkpoint

            epochs = load_checkpoint(path)["averaged_epochs"]
            fewer = f"; only {len(epochs)} of the {last} asked were there" if len(epochs) < last else ""
            info(f"wrote {path} (the average of epochs {', '.join(map(str, epochs))}{fewer})")
            return
        if upper_bound is not None or average_out is not None or average_last is not None:
            raise IkdError("--average-last, --upper-bound and --average-out go with --average-only RUN_DIR")
        if recipe is None:
            raise IkdError("missing RECIPE.yaml (or --average-only RUN_DIR)")
        from ikd.recipe import load_recipe
        from ikd.train.trainer import train as run_train

        if tensorboard:  # as an override, so that it counts as a key given (a resumed run keeps the others)
            overrides.append("train.tensorboard=true")
        loaded = load_recipe(recipe, overrides)
        if loaded.train.tensorboard:
            from ikd.train.tensorboard import require_tensorboard

            require_tensorboard()  # before any work
        result = run_train(
            loaded,
            out=out,
            device=device,
            resume=resume,
            recipe_source=str(recipe),
            progress=progress_enabled(),
            report=info,
        )
        if os.environ.get("RANK", "0") == "0":
            bleu = result.valid.get("bleu")
            bleu_text = f", valid BLEU {bleu:.2f}" if bleu is not None else ""
            info(
                f"done: {result.epochs} epochs, {result.updates} updates (stopped: {result.stopped}), "
                f"best valid {result.best_metric} {result.best:.4f}{bleu_text}; run folder {result.out}"
            )
