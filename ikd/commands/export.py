"""`ikd export`: a checkpoint as a translation-only package (safetensors + JSON) or a CTranslate2 model."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        checkpoint: Path = typer.Argument(..., help="A checkpoint written by `ikd train`."),
        out: Path = typer.Option(..., "--out", "-o", help="Folder to write (created; an earlier export is replaced)."),
        format: str = typer.Option(
            "ikd",
            "--format",
            help="ikd: translator weights (safetensors), config, vocabulary and BPE, for `ikd translate -c DIR`; "
            "ctranslate2: a CTranslate2 model of a text-only checkpoint (needs `pip install 'ikd[ctranslate2]'`).",
        ),
    ) -> None:
        """Export a checkpoint for translation only: no teacher, no student, no training state. The export
        must translate a few check sentences exactly as the checkpoint does before it is written."""
        from ikd.console import make_console
        from ikd.export.exporter import export_checkpoint

        summary = export_checkpoint(checkpoint, out, format)
        extra = f", {summary['parameters']:,} parameters" if "parameters" in summary else ""
        make_console(stderr=True).print(
            f"wrote {summary['out']} ({summary['format']}{extra}); {summary['checked']} check sentences "
            "translated as by the checkpoint",
            markup=False,
            soft_wrap=True,
        )
