"""`ikd prepare multi30k|toy`: collect text (and images) into a prepared data folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ikd.commands import cleanup_new_folder, output_dir, quiet

HELP = """Prepare a data folder (DATA/text, DATA/images, DATA/manifest.json) from Multi30K or the built-in toy
world. Then run `ikd bpe --data DATA --pair en-de`."""


def _summary(out: Path, manifest: dict[str, Any], title: str) -> None:
    from rich.table import Table

    from ikd.console import is_quiet, make_console

    if is_quiet():
        return
    table = Table(title=title)
    for column in ("split", "lines", "languages", "images", "dropped lines"):
        table.add_column(column, justify="left" if column in ("split", "languages") else "right")
    for split, entry in manifest["splits"].items():
        images = entry.get("images")
        shown = f"{images['count']} x {images['size']}px" if images else "-"
        table.add_row(split, str(entry["lines"]), " ".join(entry["langs"]), shown, str(len(entry["dropped_lines"])))
    console = make_console()
    console.print(table)
    console.print(f"wrote {out}; next: ikd bpe --data {out} --pair en-de", highlight=False)


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help=HELP, no_args_is_help=True)
    app.add_typer(sub, name="prepare")

    @sub.command("multi30k")
    def multi30k(
        source: str | None = typer.Option(
            None,
            "--source",
            help="Folder laid out like multi30k/dataset's data/task1 (tok/, raw/, image_splits/), or a URL of "
            "such a folder's raw files. Default: download the public repository's files (needs a network).",
        ),
        out: Path = typer.Option(
            Path("data/multi30k"), "--out", help="Prepared data folder to write.", callback=output_dir
        ),
        pairs: str = typer.Option(
            "en-de,en-fr", "--pairs", help="Comma-separated language pairs (en-de, en-fr, en-cs)."
        ),
        images: Path | None = typer.Option(
            None, "--images", help="Folder of the Flickr30K (and MSCOCO) JPEGs named in `image_splits/*.txt`."
        ),
        image_size: int = typer.Option(
            224, "--image-size", help="Side S of the stored images (resize to `S*256/224`, centre-crop S)."
        ),
        skip_missing_images: bool = typer.Option(
            False,
            "--skip-missing-images",
            help="Drop the lines whose image is missing or unreadable (recorded in the manifest) instead of failing.",
        ),
        workers: int = typer.Option(0, "--workers", help="Image decoding processes (0: all cores)."),
        quiet_: bool = quiet(),
    ) -> None:
        """Collect Multi30K task-1 text (and images) into a prepared data folder."""
        from ikd.console import info
        from ikd.data.multi30k import prepare_multi30k

        with cleanup_new_folder(out):
            manifest = prepare_multi30k(
                out,
                source=source,
                pairs=pairs,
                images_dir=images,
                image_size=image_size,
                skip_missing_images=skip_missing_images,
                workers=workers,
                log=info,
            )
        _summary(out, manifest, f"Multi30K from {manifest['source']}")

    @sub.command("toy")
    def toy(
        out: Path = typer.Option(Path("data/toy"), "--out", help="Prepared data folder to write.", callback=output_dir),
        seed: int = typer.Option(1, "--seed", help="Random seed: the same seed gives the same files, byte for byte."),
        train: int = typer.Option(3000, "--train", help="Training triplets."),
        val: int = typer.Option(200, "--val", help="Validation triplets."),
        test: int = typer.Option(200, "--test", help="Test triplets."),
        image_size: int = typer.Option(64, "--image-size", help="Image side in pixels."),
        quiet_: bool = quiet(),
    ) -> None:
        """Write the synthetic toy world: images of 1-3 coloured shapes with EN/DE/FR captions."""
        from ikd.data.toy import prepare_toy

        with cleanup_new_folder(out):
            manifest = prepare_toy(out, seed=seed, n_train=train, n_val=val, n_test=test, image_size=image_size)
        _summary(out, manifest, f"toy world, seed {seed}")
