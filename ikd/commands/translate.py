"""`ikd translate`: stdin (or --input) -> translations on stdout (or --output), one line per input line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import typer

from ikd.commands import output_file
from ikd.errors import IkdError


def iter_lines(stream: BinaryIO, name: str) -> Iterator[str]:
    """Lines of a byte stream without their newline, strict UTF-8 (errors name the line)."""
    for number, raw in enumerate(stream, start=1):
        try:
            yield raw.decode("utf-8").rstrip("\n").rstrip("\r")
        except UnicodeDecodeError as e:
            raise IkdError(f"{name}:{number}: not valid UTF-8 ({e.reason} at byte {e.start})") from None


def _stdin_lines() -> Iterator[str]:
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is not None:
        yield from iter_lines(buffer, "<stdin>")
    else:  # a text stream without bytes underneath (tests replace sys.stdin with io.StringIO)
        for line in sys.stdin:
            yield line.rstrip("\n").rstrip("\r")


def _stdout_writer():
    def write(text: str) -> None:
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is not None:
            sys.stdout.flush()
            buffer.write(text.encode("utf-8"))
            buffer.flush()
        else:
            sys.stdout.write(text)
            sys.stdout.flush()

    return write


def register(app: typer.Typer) -> None:
    @app.command("translate")
    def translate(
        checkpoint: list[Path] = typer.Option(
            ...,
            "--checkpoint",
            "-c",
            help="A checkpoint written by `ikd train` or a folder from `ikd export`; repeat it to decode with the "
            "ensemble of several models (mean of their probabilities; one vocabulary).",
        ),
        input: Path = typer.Option(None, "--input", "-i", help="Input file (default: stdin)."),
        output: Path = typer.Option(
            None, "--output", "-o", help="Output file (default: stdout).", callback=output_file
        ),
        tokenized: bool = typer.Option(
            False, "--tokenized", help="Input is already lowercased and Moses-tokenised (BPE is still applied)."
        ),
        bpe: bool = typer.Option(False, "--bpe", help='Input is already BPE\'d ("@@ " markers).'),
        detok: bool = typer.Option(
            False, "--detok", help="Detokenise the output (default: tokenised text, as the paper scores)."
        ),
        beam: int = typer.Option(5, "--beam", "-b", help="Beam size; 1 = greedy."),
        lenpen: float = typer.Option(1.0, "--lenpen", help="Length penalty: score = `sum log p / length**lenpen`."),
        max_len_a: float = typer.Option(
            0.0, "--max-len-a", help="Output length cap `a*src_len+b` (the paper's fairseq run: a=0, b=200)."
        ),
        max_len_b: int = typer.Option(200, "--max-len-b", help="See --max-len-a."),
        nbest: int = typer.Option(
            1, "--nbest", help="Output N hypotheses per input line as `LINE ||| TEXT ||| SCORE` (LINE from 0)."
        ),
        batch_size: int = typer.Option(128, "--batch-size", help="Sentences per batch."),
        max_tokens: int = typer.Option(0, "--max-tokens", help="Also cap sentences x source length per batch."),
        buffer_lines: int = typer.Option(
            2000, "--buffer-lines", help="Lines read, sorted by length and translated at a time (bounded memory)."
        ),
        vocab: Path = typer.Option(
            None,
            "--vocab",
            help="Refuse to run unless the checkpoint uses this vocabulary (e.g. DATA/en-de/vocab.txt).",
        ),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
        amp: str = typer.Option(None, "--amp", help="auto|bf16|fp16|off on CUDA (default: the recipe's)."),
        threads: int = typer.Option(0, "--threads", help="CPU threads for decoding (0: 1, the fastest for search)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary on stderr."),
    ) -> None:
        """Translate text with a trained checkpoint, image-free. Raw input is lowercased, normalised and
        Moses-tokenised like Multi30K's lc.norm.tok files, then BPE'd with the checkpoint's codes. Lines are
        translated in length-sorted batches and written in input order; an empty line gives an empty line."""
        from ikd.console import make_console
        from ikd.inference.ensemble import load_ensemble
        from ikd.inference.loading import decoding_threads
        from ikd.inference.translator import SearchOptions, Translator

        if tokenized and bpe:
            raise IkdError("--tokenized and --bpe exclude each other")
        if amp is not None and amp not in ("auto", "bf16", "fp16", "off"):
            raise IkdError(f"--amp {amp!r}: expected auto, bf16, fp16 or off")
        if buffer_lines < 1:
            raise IkdError("--buffer-lines must be at least 1")
        console = make_console(stderr=True)
        options = SearchOptions(beam, lenpen, max_len_a, max_len_b, nbest)
        options.check()
        expected = None
        if vocab is not None:
            from ikd.data.vocab import Vocabulary

            expected = Vocabulary.load(vocab)
        loaded = load_ensemble(checkpoint, device, expected_vocab=expected, amp=amp)
        translator = Translator(
            loaded,
            options,
            input_mode="bpe" if bpe else "tokenized" if tokenized else "raw",
            detok=detok,
            batch_size=batch_size,
            max_tokens=max_tokens,
            warn=lambda message: console.print(f"warning: {message}", markup=False, soft_wrap=True),
        )
        if input is not None and not input.is_file():
            raise IkdError(f"{input}: {'is a folder, not a file' if input.is_dir() else 'input file not found'}")
        with decoding_threads(threads, loaded.device):
            if output is not None:
                from ikd.fileio import atomic_path

                with atomic_path(output) as tmp, open(tmp, "wb") as out:

                    def write(text: str) -> None:
                        out.write(text.encode("utf-8"))
                        out.flush()

                    stats = _run(translator, input, write, buffer_lines)
            else:
                stats = _run(translator, input, _stdout_writer(), buffer_lines)
        if not quiet:
            rate = stats.sentences / stats.seconds if stats.seconds else 0.0
            console.print(
                f"translated {stats.sentences} sentences ({stats.lines} lines) in {stats.seconds:.1f} s: "
                f"{rate:.1f} sentences/s, {stats.target_tokens / max(stats.seconds, 1e-9):.0f} target tokens/s "
                f"on {loaded.device} (beam {beam})"
                + (f"; {stats.truncated} overlong sources truncated" if stats.truncated else ""),
                markup=False,
                soft_wrap=True,
            )


def _run(translator, input: Path | None, write, buffer_lines: int):
    if input is None:
        return translator.stream(_stdin_lines(), write, buffer_lines)
    with open(input, "rb") as f:
        return translator.stream(iter_lines(f, str(input)), write, buffer_lines)
