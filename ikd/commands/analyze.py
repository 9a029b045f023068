"""`ikd analyze attention|imagine|curves`: the paper's Figure 4, the student's imagined images, and
learning curves, as PNG, PDF or SVG files (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import typer

from ikd.commands import device as device_option
from ikd.commands import input_file, output_file, quiet

HELP = """Analyses of a trained model or run, drawn as PNG, PDF or SVG (the -o file's suffix decides):
pseudo-token attention maps (paper Figure 4), the images the student imagines for a sentence, and learning
curves from a run's metrics log."""

_OUTPUT_HELP = "Figure to write: .png, .pdf or .svg."
_DPI_HELP = "Resolution of a PNG in dots per inch."


def _output(value: Path | None, old: Path | None) -> Path:
    """-o/--output, or the deprecated --out; checked (suffix, folder) before any work."""
    from ikd.console import deprecated
    from ikd.errors import IkdError
    from ikd.probes.figures import figure_format

    if old is not None:
        deprecated("--out", "-o/--output")
        if value is not None:
            raise IkdError("give -o/--output only (--out is its old spelling)")
        value = output_file(old)
    if value is None:
        raise IkdError("missing -o/--output FILE (.png, .pdf or .svg)")
    figure_format(value)
    return value


def _written(out: Path, size: tuple[float, float], dpi: int, what: str) -> None:
    from ikd.console import info
    from ikd.probes.figures import describe

    info(f"wrote {out} ({describe(out, size, dpi)}): {what}")


def _load(checkpoint: Path, device: str, with_distiller: bool = False):
    from ikd.inference.loading import load_for_inference

    loaded = load_for_inference(checkpoint, device, with_distiller=with_distiller)
    loaded.model.eval()
    if loaded.recipe.model.text_only:
        from ikd.errors import IkdError

        raise IkdError(f"{checkpoint}: a text-only model has no multimodal feature, pseudo-tokens or student")
    return loaded


def _sentences(sentence: list[str] | None, file: Path | None) -> list[str]:
    from ikd.commands import read_text_lines
    from ikd.errors import IkdError

    items = list(sentence or [])
    if file is not None:
        items += read_text_lines(file, allow_empty=False)
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
        file: Path | None = typer.Option(
            None, "--file", help="More sentences, one per line ('-': stdin).", callback=input_file
        ),
        tokenized: bool = typer.Option(
            False, "--tokenized", help="Sentences are already lowercased and Moses-tokenised (BPE still applied)."
        ),
        eos: bool = typer.Option(True, "--eos/--no-eos", help="Show the `</s>` key column (rows sum to 1 with it)."),
        output: Path = typer.Option(None, "--output", "-o", help=_OUTPUT_HELP, callback=output_file),
        out: Path = typer.Option(None, "--out", hidden=True),
        width: float = typer.Option(
            None, "--width", help="Figure width in inches (default: as wide as the maps need)."
        ),
        dpi: int = typer.Option(300, "--dpi", help=_DPI_HELP),
        device: str = device_option(),
        quiet_: bool = quiet(),
    ) -> None:
        """Pseudo-token attention heat maps (paper Figure 4), one per head.

        The first multimodal encoder layer's P pseudo-token query rows over the source tokens."""
        from ikd.probes.attention import plot_attention, pseudo_token_attention
        from ikd.probes.figures import check_size
        from ikd.probes.sentences import batch_ids, source_pieces

        out = _output(output, out)
        check_size(width, dpi)
        loaded = _load(checkpoint, device)
        panels = []
        for text in _sentences(sentence, file):
            pieces = source_pieces(loaded, text, tokenized)
            probs = pseudo_token_attention(loaded.model, batch_ids(loaded, [pieces]))
            panels.append((text, pieces, probs))
        _, _, grid_w = loaded.model.feature_shape
        size = plot_attention(panels, out, grid_w, eos, loaded.recipe.model.token_layout, width, dpi)
        heads, p, _ = panels[0][2].shape
        _written(out, size, dpi, f"{len(panels)} sentence(s), {heads} heads, {p} pseudo-tokens")

    @sub.command("imagine")
    def imagine(
        checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="Trained ikd checkpoint (.pt)."),
        sentence: list[str] | None = typer.Option(None, "--sentence", help="Source sentence (repeatable)."),
        file: Path | None = typer.Option(
            None, "--file", help="More sentences, one per line ('-': stdin).", callback=input_file
        ),
        tokenized: bool = typer.Option(False, "--tokenized", help="Sentences are already Moses-tokenised."),
        output: Path = typer.Option(
            None,
            "--output",
            "-o",
            help="Figure to write (.png, .pdf or .svg): the image, or a captioned grid for several.",
            callback=output_file,
        ),
        out: Path = typer.Option(None, "--out", hidden=True),
        width: float = typer.Option(
            None, "--width", help="Figure width in inches (default: one .png image at its own resolution)."
        ),
        dpi: int = typer.Option(300, "--dpi", help=_DPI_HELP),
        device: str = device_option(),
        quiet_: bool = quiet(),
    ) -> None:
        """The student's synthetic image I_s for each sentence (de-normalised, clipped) as a PNG."""
        from ikd.probes.figures import check_size
        from ikd.probes.imagine import imagined_images, save_images
        from ikd.probes.sentences import batch_ids, source_pieces

        out = _output(output, out)
        check_size(width, dpi)
        loaded = _load(checkpoint, device, with_distiller=True)
        texts = _sentences(sentence, file)
        pictures = [
            imagined_images(loaded.model, loaded.distiller, batch_ids(loaded, [source_pieces(loaded, t, tokenized)]))
            for t in texts
        ]
        import numpy as np

        size = save_images(np.concatenate(pictures), texts, out, width, dpi)
        _written(out, size, dpi, f"{len(texts)} imagined image(s)")

    @sub.command("curves")
    def curves(
        run: Path = typer.Option(..., "--run", help="Run folder of `ikd train` (holds metrics.jsonl)."),
        output: Path = typer.Option(None, "--output", "-o", help=_OUTPUT_HELP, callback=output_file),
        out: Path = typer.Option(None, "--out", hidden=True),
        width: float = typer.Option(3.3, "--width", help="Figure width in inches (3.3: one column of a paper)."),
        dpi: int = typer.Option(300, "--dpi", help=_DPI_HELP),
        title: bool = typer.Option(True, "--title/--no-title", help="The run folder as the figure's title."),
        quiet_: bool = quiet(),
    ) -> None:
        """Training and validation loss, the KD terms (irm, iam) and validation BLEU per epoch, one panel
        each, stacked; a panel with nothing to show (the KD terms of a text-only run) is left out."""
        from ikd.probes.curves import epoch_curves, plot_curves, read_records
        from ikd.probes.figures import check_size

        out = _output(output, out)
        check_size(width, dpi)
        series = epoch_curves(read_records(run))
        size = plot_curves(series, out, title=str(run) if title else "", width=width, dpi=dpi)
        epochs = sorted({e for s in series.values() for e in s})
        last = series.get("valid_bleu", {})
        bleu = f", last validation BLEU {last[max(last)]:.2f}" if last else ""
        _written(out, size, dpi, f"{len(epochs)} epoch(s){bleu}")
