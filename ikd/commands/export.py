"""`ikd export`: a checkpoint as a translation-only package (safetensors + JSON), a CTranslate2 model or a
Hugging Face transformers folder."""

from __future__ import annotations

from pathlib import Path

import typer

from ikd.commands import input_file, output_dir


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        checkpoint: Path = typer.Argument(..., help="A checkpoint written by `ikd train`."),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Folder to write (created; an earlier export is replaced).", callback=output_dir
        ),
        format: str = typer.Option(
            "ikd",
            "--format",
            help="ikd: translator weights (safetensors), config, vocabulary and BPE, for `ikd translate -c DIR`; "
            "ctranslate2: a CTranslate2 model of a text-only checkpoint (needs `pip install 'ikd[ctranslate2]'`); "
            "transformers: a Hugging Face model folder with tokenizer and model card (needs "
            "`pip install 'ikd[transformers]'`).",
        ),
        scores: Path = typer.Option(
            None,
            "--scores",
            help="With --format transformers: an `ikd evaluate --json` report whose BLEU (and signature) the model "
            "card shows.",
            callback=input_file,
        ),
        push_to_hub: str = typer.Option(
            None,
            "--push-to-hub",
            metavar="REPO",
            help="With --format transformers: then upload the folder to this Hugging Face Hub model repository "
            "(created if new; the token from `hf auth login` or HF_TOKEN).",
        ),
    ) -> None:
        """Export a checkpoint for translation only: no teacher, no student, no training state. The export
        must translate a few check sentences exactly as the checkpoint does before it is written (a CTranslate2
        model: score the checkpoint's translations of them token by token as the checkpoint does)."""
        from ikd.console import make_console
        from ikd.export.exporter import export_checkpoint

        summary = export_checkpoint(checkpoint, out, format, scores=scores, push_to_hub=push_to_hub)
        extra = f", {summary['parameters']:,} parameters" if "parameters" in summary else ""
        console = make_console(stderr=True)
        console.print(
            f"wrote {summary['out']} ({summary['format']}{extra}); {summary['checked']} check sentences "
            f"{summary['verified']}",
            markup=False,
            soft_wrap=True,
        )
        if "pushed" in summary:
            console.print(f"uploaded to {summary['pushed']}", markup=False, soft_wrap=True)
