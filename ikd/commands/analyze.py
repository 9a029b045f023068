"""`ikd analyze attention|imagine|curves`: the paper's Figure 4, the student's imagined images, and
learning curves, as PNG files (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import typer

from ikd.commands import output_file

HELP = """Analyses of a trained model or run, drawn as PNG: pseudo-token attention maps (paper Figure 4),
the images the student imagines for a sentence, and learning curves from a run's metrics log."""


def _load(checkpoint: Path, device: str, with_distiller: bool = False):
    from ikd.inference.loading import load_for_inference

    loaded = load_for_inference(checkpoint, device, with_distiller=with_distiller)
    loaded.model.eval()
    if loaded.recipe.model.text_only:
        from ikd.errors import IkdError

        raise IkdError(f"{checkpoint}: a text-only model has no multimodal feature, pseudo-tokens or student")
    return loaded


def _sentences(sentence: list[str] | None, file: Path | None) -> list[str]:
    from ikd.errors import IkdError
    from ikd.fileio import read_lines

    items = list(sentence or [])
    if file is not None:
        items += read_lines(file)
    if not items:
        raise IkdError("give at least one --sentence (or --file with one sentence per line)")
    return items


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help=HELP, no_args_is_help=True)
    app.add_typer(sub, name="analyze")

    @sub.command("attention")
    def attention(
        checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="Trained ikd checkpoint (.pt)."),
        sentence: list[str] | None = typer.Option(None, "--sentence", help="Source sentence (repeatable)."),
        file: Path | None = typer.Option(None, "--file", help="More sentences, one per line."),
        tokenized: bool = typer.Option(
            False, "--tokenized", help="Sentences are already lowercased and Moses-tokenised (BPE still applied)."
        ),
        eos: bool = typer.Option(True, "--eos/--no-eos", help="Show the `</s>` key column (rows sum to 1 with it)."),
        out: Path = typer.Option(..., "--out", help="PNG file to write.", callback=output_file),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
    ) -> None:
        """Pseudo-token attention heat maps (paper Figure 4), one per head.

        The first multimodal encoder layer's P pseudo-token query rows over the source tokens."""
        from ikd.probes.attention import plot_attention, pseudo_token_attention
        from ikd.probes.sentences import batch_ids, source_pieces

        loaded = _load(checkpoint, device)
        panels = []
        for text in _sentences(sentence, file):
            pieces = source_pieces(loaded, text, tokenized)
            probs = pseudo_token_attention(loaded.model, batch_ids(loaded, [pieces]))
            panels.append((text, pieces, probs))
        _, _, grid_w = loaded.model.feature_shape
        w, h = plot_attention(panels, out, grid_w, eos, loaded.recipe.model.token_layout)
        heads, p, _ = panels[0][2].shape
        print(f"wrote {out} ({w}x{h}): {len(panels)} sentence(s), {heads} heads, {p} pseudo-tokens")

    @sub.command("imagine")
    def imagine(
        checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="Trained ikd checkpoint (.pt)."),
        sentence: list[str] | None = typer.Option(None, "--sentence", help="Source sentence (repeatable)."),
        file: Path | None = typer.Option(None, "--file", help="More sentences, one per line."),
        tokenized: bool = typer.Option(False, "--tokenized", help="Sentences are already Moses-tokenised."),
        out: Path = typer.Option(
            ..., "--out", help="PNG file: the image, or a captioned grid for several.", callback=output_file
        ),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
    ) -> None:
        """The student's synthetic image I_s for each sentence (de-normalised, clipped) as a PNG."""
        from ikd.probes.imagine import imagined_images, save_images
        from ikd.probes.sentences import batch_ids, source_pieces

        loaded = _load(checkpoint, device, with_distiller=True)
        texts = _sentences(sentence, file)
        pictures = [
            imagined_images(loaded.model, loaded.distiller, batch_ids(loaded, [source_pieces(loaded, t, tokenized)]))
            for t in texts
        ]
        import numpy as np

        w, h = save_images(np.concatenate(pictures), texts, out)
        print(f"wrote {out} ({w}x{h}): {len(texts)} imagined image(s)")

    @sub.command("curves")
    def curves(
        run: Path = typer.Option(..., "--run", help="Run folder of `ikd train` (holds metrics.jsonl)."),
        out: Path = typer.Option(..., "--out", help="PNG file to write.", callback=output_file),
    ) -> None:
        """Training and validation loss, the KD terms (irm, iam) and validation BLEU per epoch."""
        from ikd.probes.curves import epoch_curves, plot_curves, read_records

        series = epoch_curves(read_records(run))
        w, h = plot_curves(series, out, title=str(run))
        epochs = sorted({e for s in series.values() for e in s})
        last = series.get("valid_bleu", {})
        bleu = f", last validation BLEU {last[max(last)]:.2f}" if last else ""
        print(f"wrote {out} ({w}x{h}): {len(epochs)} epoch(s){bleu}")
