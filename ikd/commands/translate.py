"""`ikd translate`: stdin (or --input) -> translations on stdout (or --output), one line per input line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import typer

from ikd.commands import device as device_option
from ikd.commands import input_file, is_std, open_input, output_file, quiet, write_stdout
from ikd.errors import IkdError

# Lines per chunk while a progress bar is shown: the bar moves once per chunk written.
PROGRESS_CHUNK = 256


def iter_lines(stream: BinaryIO, name: str) -> Iterator[str]:
    """Lines of a byte stream without their newline, strict UTF-8 (errors name the line)."""
    for number, raw in enumerate(stream, start=1):
        try:
            yield raw.decode("utf-8").rstrip("\n").rstrip("\r")
        except UnicodeDecodeError as e:
            raise IkdError(f"{name}:{number}: not valid UTF-8 ({e.reason} at byte {e.start})") from None


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
        input: Path = typer.Option(
            None, "--input", "-i", help="Input file ('-' or none: stdin).", callback=input_file
        ),
        output: Path = typer.Option(
            None, "--output", "-o", help="Output file ('-' or none: stdout).", callback=output_file
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
            2000,
            "--buffer-lines",
            help="Lines read, sorted by length and translated at a time (bounded memory). Typed on a terminal, "
            "each line is answered as it is entered.",
        ),
        vocab: Path = typer.Option(
            None,
            "--vocab",
            help="Refuse to run unless the checkpoint uses this vocabulary (e.g. DATA/en-de/vocab.txt).",
            callback=input_file,
        ),
        device: str = device_option(),
        amp: str = typer.Option(None, "--amp", help="auto|bf16|fp16|off on CUDA (default: the recipe's)."),
        threads: int = typer.Option(0, "--threads", help="CPU threads for decoding (0: 1, the fastest for search)."),
        quiet_: bool = quiet(),
    ) -> None:
        """Translate text with a trained checkpoint, image-free. Raw input is lowercased, normalised and
        Moses-tokenised like Multi30K's lc.norm.tok files, then BPE'd with the checkpoint's codes. Lines are
        translated in length-sorted batches and written in input order; an empty line gives an empty line."""
        from ikd.console import info, progress, progress_enabled, warn
        from ikd.inference.loading import decoding_threads
        from ikd.inference.translator import Translator

        if tokenized and bpe:
            raise IkdError("--tokenized and --bpe exclude each other")
        if amp is not None and amp not in ("auto", "bf16", "fp16", "off"):
            raise IkdError(f"--amp {amp!r}: expected auto, bf16, fp16 or off")
        from ikd.ranges import check_options

        check_options(beam=beam, nbest=nbest, lenpen=lenpen, max_len_a=max_len_a, max_len_b=max_len_b)
        check_options(batch_size=batch_size, max_tokens=max_tokens, buffer_lines=buffer_lines, threads=threads)
        translator = Translator.from_checkpoint(
            checkpoint,
            device,
            beam,
            lenpen=lenpen,
            max_len_a=max_len_a,
            max_len_b=max_len_b,
            nbest=nbest,
            input_mode="bpe" if bpe else "tokenized" if tokenized else "raw",
            detok=detok,
            batch_size=batch_size,
            max_tokens=max_tokens,
            amp=amp,
            vocab=vocab,
            warn=warn,
        )
        from_stdin = input is None or is_std(input)
        if from_stdin and sys.stdin.isatty():
            buffer_lines = 1  # a person typing: answer each line as it is entered
        total = None
        if not from_stdin and progress_enabled():
            with open(input, "rb") as f:
                total = sum(1 for _ in f)
            buffer_lines = min(buffer_lines, PROGRESS_CHUNK)
        device_used = translator.loaded.device
        with decoding_threads(threads, device_used), progress(total=total, desc="translating", unit="line") as bar:

            def counted(write):
                def write_and_count(text: str) -> None:
                    write(text)
                    bar.update(text.count("\n") // translator.options.nbest)

                return write_and_count

            if output is not None and not is_std(output):
                from ikd.fileio import atomic_path

                with atomic_path(output) as tmp, open(tmp, "wb") as out:

                    def write(text: str) -> None:
                        out.write(text.encode("utf-8"))
                        out.flush()

                    stats = _run(translator, input, counted(write), buffer_lines)
            else:
                stats = _run(translator, input, counted(write_stdout), buffer_lines)
        rate = stats.sentences / stats.seconds if stats.seconds else 0.0
        info(
            f"translated {stats.sentences} sentences ({stats.lines} lines) in {stats.seconds:.1f} s: "
            f"{rate:.1f} sentences/s, {stats.target_tokens / max(stats.seconds, 1e-9):.0f} target tokens/s "
            f"on {device_used} (beam {translator.options.beam})"
            + (f"; {stats.truncated} overlong sources truncated" if stats.truncated else "")
        )


def _run(translator, input: Path | None, write, buffer_lines: int):
    name = "<stdin>" if input is None or is_std(input) else str(input)
    with open_input(input) as stream:
        return translator.stream(iter_lines(stream, name), write, buffer_lines)
