"""`ikd retrieve`: the image retrieval probe of the paper's Table 4."""

from __future__ import annotations

from pathlib import Path

import typer

from ikd.commands import device as device_option
from ikd.commands import input_file, is_std, json_option, quiet


def register(app: typer.Typer) -> None:
    @app.command("retrieve")
    def retrieve(
        checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="Trained ikd checkpoint (.pt)."),
        data: Path = typer.Option(..., "--data", help="Prepared data folder (after `ikd bpe`)."),
        split: str = typer.Option(..., "--split", help="Split whose sentences and images are compared."),
        features: Path | None = typer.Option(
            None,
            "--features",
            help="Precomputed visual features [N, ...] (.npy) instead of the teacher's.",
            callback=input_file,
        ),
        pool: str = typer.Option("none", "--pool", help="none: whole feature maps; avg: spatial average [C]."),
        batch_size: int = typer.Option(64, "--batch-size", help="Sentences / images per forward pass."),
        device: str = device_option(),
        json_out: str = json_option(),
        quiet_: bool = quiet(),
    ) -> None:
        """Image retrieval from text alone (paper Table 4): R@1/5/10/15 next to chance K/N.

        The feature m generated from each source sentence is compared with the teacher's features of the
        split's real images (cosine similarity, every vector normalised on its own)."""
        from rich.table import Table

        from ikd.commands import write_json
        from ikd.console import is_quiet, make_console
        from ikd.probes.retrieve import retrieve as run

        result = run(checkpoint, data, split, features, pool, batch_size, device)
        payload = result.to_dict()
        if json_out is not None:
            write_json(json_out, payload)
            if is_std(json_out) and is_quiet():
                return
        table = Table(title=f"image retrieval from text: {split} ({result.n} sentences, pool {pool})")
        for column in ("K", "R@K %", "chance K/N %", "x chance"):
            table.add_column(column, justify="right")
        for k in result.ks:
            ratio = result.recall(k) / result.chance(k) if result.chance(k) else float("nan")
            table.add_row(str(k), f"{100 * result.recall(k):.2f}", f"{100 * result.chance(k):.2f}", f"{ratio:.1f}")
        console = make_console(stderr=is_std(json_out))
        console.print(table)
        console.print(
            f"median rank {payload['median_rank']:g}, mean rank {payload['mean_rank']:.1f} of {result.n}; "
            f"visual features: {payload['features']}",
            highlight=False,
        )
