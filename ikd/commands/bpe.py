"""`ikd bpe`: joint BPE (subword-nmt) on a prepared pair, applied to every split, plus the joint vocabulary."""

from __future__ import annotations

from pathlib import Path

import typer

from ikd.commands import quiet


def register(app: typer.Typer) -> None:
    @app.command("bpe")
    def bpe(
        data: Path = typer.Option(..., "--data", help="Prepared data folder (from `ikd prepare`)."),
        pair: str = typer.Option("en-de", "--pair", help="SRC-TGT language pair, e.g. en-de."),
        merges: int = typer.Option(10000, "--merges", help="BPE merge operations, learned on train SRC+TGT."),
        glossary: list[str] = typer.Option(
            ["[U]"], "--glossary", help="Token never split by BPE (repeatable); the mask token [U] by default."
        ),
        quiet_: bool = quiet(),
    ) -> None:
        """Learn a joint BPE on the training text of a pair, apply it to every split, build the vocabulary.

        Writes DATA/SRC-TGT/{bpe.codes, vocab.txt, SPLIT.bpe.SRC, SPLIT.bpe.TGT}.
        """
        from rich.table import Table

        from ikd.console import is_quiet, make_console
        from ikd.data.bpe import count_merges, learn_and_apply
        from ikd.errors import IkdError

        parts = pair.split("-")
        if len(parts) != 2 or not all(parts):
            raise IkdError(f"--pair {pair!r}: expected SRC-TGT, e.g. en-de")
        src, tgt = parts
        result = learn_and_apply(data, src, tgt, merges=merges, glossaries=tuple(glossary))
        if is_quiet():
            return
        learned = count_merges((result.pair_dir / "bpe.codes").read_text(encoding="utf-8"))
        table = Table(title=f"BPE {pair}: {learned:,} merges, vocabulary {len(result.vocab):,} entries")
        for column in ("split", "lines", f"{src} tokens (+EOS)", f"{tgt} tokens (+EOS)"):
            table.add_column(column, justify="left" if column == "split" else "right")
        for split, counts in result.tokens.items():
            table.add_row(split, str(result.lines[split]), f"{counts[src]:,}", f"{counts[tgt]:,}")
        console = make_console()
        console.print(table)
        if learned < merges:
            console.print(
                f"{learned:,} of the {merges:,} merges asked: no pair of symbols occurs twice more in the "
                "training text",
                highlight=False,
            )
        note = " (unchanged: outputs already up to date)" if result.reused else ""
        console.print(f"wrote {result.pair_dir}{note}", highlight=False)
