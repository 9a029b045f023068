"""`ikd recipes`: the recipes shipped with the package, listed, printed or copied to a path to edit."""

from __future__ import annotations

from pathlib import Path

import typer

from ikd.commands import is_std, output_file, quiet
from ikd.errors import IkdError


def recipe_files() -> dict[str, Path]:
    """name (file name without .yaml) -> path of each shipped recipe."""
    here = Path(__file__).resolve().parents[1] / "recipes"  # installed: package data; a checkout: ../recipes
    if not here.is_dir():
        here = Path(__file__).resolve().parents[2] / "recipes"
    return {p.stem: p for p in sorted(here.glob("*.yaml"))}


def _summary(path: Path) -> str:
    """The first comment line of a recipe, without its '#'."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def find_recipe(name: str) -> Path:
    files = recipe_files()
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    if stem not in files:
        raise IkdError(f"recipe {name!r} not found; the shipped recipes are {', '.join(files) or 'none'}")
    return files[stem]


def register(app: typer.Typer) -> None:
    @app.command("recipes")
    def recipes(
        name: str = typer.Argument(None, help="A recipe to print (or copy with -o), e.g. toy or en-de."),
        output: Path = typer.Option(
            None, "--output", "-o", metavar="PATH", help="Copy the recipe to this file ('-': stdout).",
            callback=output_file,
        ),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing --output file."),
        quiet_: bool = quiet(),
    ) -> None:
        """List the recipes shipped with ikd, print one, or copy one to a path to edit and train with:
        `ikd recipes toy -o toy.yaml && ikd train toy.yaml`."""
        from ikd.commands import write_text
        from ikd.console import info, make_console

        if name is None:
            if output is not None:
                raise IkdError("-o/--output needs a recipe NAME (see `ikd recipes`)")
            console = make_console()
            for stem, path in recipe_files().items():
                console.print(f"{stem:<12} {_summary(path)}", markup=False, soft_wrap=True)
            info("copy one to edit it: ikd recipes NAME -o NAME.yaml")
            return
        path = find_recipe(name)
        text = path.read_text(encoding="utf-8")
        if output is None or is_std(output):
            write_text("-", text)
            return
        if Path(output).exists() and not force:
            raise IkdError(f"{output}: exists; give --force to overwrite it")
        write_text(output, text)
        info(f"wrote {output}; train with: ikd train {output}")
