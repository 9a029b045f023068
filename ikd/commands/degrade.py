"""`ikd degrade color|entity`: mask colour words or visually depictable entities in source text (paper
Table 6), in single files or in a whole prepared data folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ikd.commands import input_file, is_std, json_option, output_dir, output_file, quiet
from ikd.errors import IkdError

HELP = """Degrade source text for the probes of the paper's Table 6: colour words or entities become a mask
token. Works on single files (--input/--output) or a whole prepared data folder (--data/--out: every split's
source text masked, targets copied, images linked, manifest updated; then run `ikd bpe` and `ikd train` on it)."""

_MASK_HELP = "Mask token; one token without spaces. The BPE step keeps it whole ([U] is in its glossary)."


def _target(data: Path | None, out: Path | None, input_: Path | None, output: Path | None) -> str:
    from ikd.errors import IkdError

    if data is not None or out is not None:
        if input_ is not None or output is not None:
            raise IkdError("give either --data and --out (a prepared folder) or --input and --output (one file)")
        if data is None or out is None:
            raise IkdError("--data and --out go together: the prepared folder and the new folder to write")
        return "folder"
    if input_ is None or output is None:
        raise IkdError("give --data DATA --out NEWDATA (a prepared folder) or --input FILE --output FILE")
    return "file"


def _check_streams(output: Path | None, json_out: str | None) -> None:
    if is_std(output) and is_std(json_out):
        raise IkdError("--output - and --json - both want stdout; write one of them to a file")


def _degrade_file(input_: Path, output: Path, masker, mask: str):
    """probes.degrade.degrade_file, with '-' for stdin and stdout."""
    from ikd.commands import read_text_lines, write_text
    from ikd.probes.degrade import degrade_file, degrade_lines

    if not is_std(input_) and not is_std(output):
        return degrade_file(input_, output, masker, mask)
    masked, count = degrade_lines(read_text_lines(input_, allow_empty=False), masker, mask)
    write_text(output, "".join(line + "\n" for line in masked))
    return count


def _name(path: Path) -> str:
    return "<stdin>" if is_std(path) else str(path)


def _report(
    title: str,
    rows: dict[str, Any],
    extra: dict[str, list[int]] | None = None,
    json_out: str | None = None,
    folder: Path | None = None,
    output: Path | None = None,
) -> None:
    """rows: name -> MaskCount. Prints a rich table (on stderr when stdout carries JSON or the degraded
    text), and the JSON to `json_out`."""
    from rich.table import Table

    from ikd.commands import write_json
    from ikd.console import is_quiet, make_console
    from ikd.probes.degrade import MaskCount

    if json_out is not None:
        payload = {name: count.to_dict() for name, count in rows.items()}
        if extra:
            for name, lines in extra.items():
                payload[name]["unmatched_lines"] = lines
        write_json(json_out, payload)
    if is_quiet():
        return
    console = make_console(stderr=is_std(json_out) or is_std(output))
    table = Table(title=title)
    for column in ("file", "lines", "lines masked", "masked tokens", "tokens", "masked %"):
        table.add_column(column, justify="left" if column == "file" else "right", overflow="fold")
    if extra:
        table.add_column("unmatched lines", justify="right")
    total = MaskCount()
    for name, count in rows.items():
        total = total.add(count)
        cells = [name, str(count.lines), str(count.lines_masked), str(count.masked), str(count.tokens)]
        cells.append(f"{count.percent:.2f}")
        if extra:
            cells.append(str(len(extra.get(name, []))))
        table.add_row(*cells)
    if len(rows) > 1:
        cells = ["total", str(total.lines), str(total.lines_masked), str(total.masked), str(total.tokens)]
        cells.append(f"{total.percent:.2f}")
        if extra:
            cells.append(str(sum(len(v) for v in extra.values())))
        table.add_row(*cells, style="bold")
    console.print(table)
    if folder is not None:
        console.print(f"wrote {folder}; next: ikd bpe --data {folder}, then train on it", highlight=False)


def _input_option():
    return typer.Option(
        None, "--input", "-i", help="One tokenised text file to degrade ('-': stdin).", callback=input_file
    )


def _output_option():
    return typer.Option(
        None,
        "--output",
        "-o",
        help="Where to write the degraded file (with --input; '-': stdout).",
        callback=output_file,
    )


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help=HELP, no_args_is_help=True)
    app.add_typer(sub, name="degrade")

    @sub.command("color")
    def color(
        words: Path | None = typer.Option(
            None, "--words", help="Word list, one per line (default: the toolkit's built-in English colour terms)."
        ),
        mask: str = typer.Option("[U]", "--mask", help=_MASK_HELP),
        data: Path | None = typer.Option(None, "--data", help="Prepared data folder to degrade (every split)."),
        out: Path | None = typer.Option(
            None, "--out", help="New prepared data folder to write (with --data).", callback=output_dir
        ),
        lang: str = typer.Option("en", "--lang", help="Language of the text to mask (the source)."),
        input_: Path | None = _input_option(),
        output: Path | None = _output_option(),
        json_out: str | None = json_option(),
        quiet_: bool = quiet(),
    ) -> None:
        """Mask colour words (whole tokens, case-insensitive) by the mask token."""
        from ikd.errors import IkdError
        from ikd.probes.degrade import (
            BUILTIN_COLOURS,
            ColourMasker,
            check_mask_token,
            degrade_folder,
            load_word_list,
        )

        check_mask_token(mask)
        mode = _target(data, out, input_, output)
        _check_streams(output, json_out)
        if words is None and lang != "en":
            raise IkdError(f"--lang {lang}: the built-in colour list is English; give --words FILE for {lang} text")
        word_set = load_word_list(words) if words is not None else BUILTIN_COLOURS
        masker = ColourMasker(word_set)
        source = str(words) if words is not None else "builtin"
        if mode == "file":
            count = _degrade_file(input_, output, masker, mask)
            title = f"colour words ({source}, {len(word_set)} words) -> {mask}"
            _report(title, {_name(input_): count}, json_out=json_out, output=output)
            return
        settings = {"kind": "color", "words": source, "word_list": sorted(word_set)}
        counts = degrade_folder(data, out, lang, lambda split, info, lines: masker, mask, settings)
        title = f"colour words ({source}, {len(word_set)} words) -> {mask}: {out}"
        _report(title, counts, json_out=json_out, folder=out)

    @sub.command("entity")
    def entity(
        entities: Path | None = typer.Option(
            None, "--entities", help="Flickr30K Entities folder (Sentences/<image id>.txt annotation files)."
        ),
        types: str | None = typer.Option(
            None, "--types", help="Comma-separated phrase types to mask (default: every type but notvisual)."
        ),
        span: str = typer.Option("all", "--span", help="all: every token of a phrase; last: its last (head) token."),
        image_list: Path | None = typer.Option(
            None,
            "--image-list",
            help="Image name per line of --input; with --data a folder of SPLIT.names or SPLIT.txt files "
            "(default: DATA/images/SPLIT.names).",
        ),
        allow_unmatched: bool = typer.Option(
            False, "--allow-unmatched", help="Leave lines without an annotated caption unmasked instead of failing."
        ),
        positions: list[Path] | None = typer.Option(
            None, "--positions", help="Per-line token positions file (0-based, -1 = none); repeat to unite files."
        ),
        offset: int | None = typer.Option(
            None, "--offset", help="With --input: the positions file's line where this file starts (0-based)."
        ),
        mask: str = typer.Option("[U]", "--mask", help=_MASK_HELP),
        data: Path | None = typer.Option(None, "--data", help="Prepared data folder to degrade (every split)."),
        out: Path | None = typer.Option(
            None, "--out", help="New prepared data folder to write (with --data).", callback=output_dir
        ),
        lang: str = typer.Option("en", "--lang", help="Language of the text to mask (the source)."),
        input_: Path | None = _input_option(),
        output: Path | None = _output_option(),
        json_out: str | None = json_option(),
        quiet_: bool = quiet(),
    ) -> None:
        """Mask the tokens of visually depictable entities, from Flickr30K Entities annotations or a positions file."""
        from ikd.errors import IkdError
        from ikd.probes.degrade import check_mask_token

        check_mask_token(mask)
        mode = _target(data, out, input_, output)
        _check_streams(output, json_out)
        if (entities is None) == (not positions):
            raise IkdError("give either --entities DIR (Flickr30K Entities) or --positions FILE")
        if span not in ("all", "last"):
            raise IkdError(f"--span {span!r}: expected all or last")
        if positions:
            _entity_positions(positions, offset, mask, mode, data, out, lang, input_, output, json_out)
        else:
            if offset is not None:
                raise IkdError("--offset goes with --positions, not --entities")
            _entity_annotations(
                entities, types, span, image_list, allow_unmatched, mask, mode, data, out, lang, input_, output,
                json_out,
            )


def _entity_positions(positions, offset, mask, mode, data, out, lang, input_, output, json_out) -> None:
    from ikd.commands import read_text_lines
    from ikd.probes.degrade import (
        PositionMasker,
        degrade_folder,
        kept_line_numbers,
        read_manifest,
        read_positions,
        split_offsets,
    )

    rows = read_positions(positions)
    source = " + ".join(str(p) for p in positions)
    title = f"entity positions ({source}) -> {mask}"
    if mode == "file":
        if is_std(input_):
            raise IkdError("--positions needs --input FILE (its lines are counted before masking), not '-'")
        n = len(read_text_lines(input_, allow_empty=False))
        if offset is None:
            if len(rows) != n:
                raise IkdError(
                    f"{source}: {len(rows)} lines but {input_} has {n}; give --offset N to use the {n} lines "
                    "starting at line N (0-based) of the positions file"
                )
            offset = 0
        masker = PositionMasker(rows, offset, source, range(n), str(input_))
        count = _degrade_file(input_, output, masker, mask)
        _report(title, {_name(input_): count}, json_out=json_out, output=output)
        return
    if offset is not None:
        raise IkdError("--offset applies to --input; for a data folder the split offsets come from the manifest")
    offsets = split_offsets(read_manifest(data), len(rows), source)

    def masker_for(split, info, lines):
        return PositionMasker(rows, offsets[split], source, kept_line_numbers(info), f"split '{split}'")

    settings = {"kind": "entity", "method": "positions", "positions": [str(p) for p in positions], "offsets": offsets}
    counts = degrade_folder(data, out, lang, masker_for, mask, settings)
    _report(f"{title}: {out}", counts, json_out=json_out, folder=out)


def _entity_annotations(
    entities, types, span, image_list, allow_unmatched, mask, mode, data, out, lang, input_, output, json_out
) -> None:
    from ikd.probes.degrade import degrade_folder, read_manifest
    from ikd.probes.entities import (
        CheckedMasker,
        EntityMasker,
        default_tokenizer,
        find_sentences_dir,
        parse_types,
        read_image_list,
        split_image_names,
    )

    selected = parse_types(types)
    sentences = find_sentences_dir(entities)
    tokenize = default_tokenizer(lang)
    title = f"entities ({', '.join(sorted(selected))}; span {span}) -> {mask}"

    def check(masker: EntityMasker, name: str) -> None:
        if masker.unmatched and not allow_unmatched:
            first = ", ".join(map(str, masker.unmatched[:5]))
            raise IkdError(
                f"{name}: {len(masker.unmatched)} line(s) have no annotation file or no caption sharing at least "
                f"half their tokens in {sentences} (lines {first}...); --allow-unmatched leaves them unmasked"
            )

    if mode == "file":
        if image_list is None or not image_list.is_file():
            raise IkdError("--image-list FILE (the image name of each line of --input) is required with --input")
        names = read_image_list(image_list)
        masker = EntityMasker(sentences, names, selected, tokenize, span, str(input_))
        from ikd.commands import read_text_lines

        if is_std(input_):
            raise IkdError("--entities needs --input FILE (its lines are matched to --image-list first), not '-'")
        n = len(read_text_lines(input_, allow_empty=False))
        if n != len(names):
            raise IkdError(f"{image_list}: {len(names)} image names but {input_} has {n} lines")
        count = _degrade_file(input_, output, CheckedMasker(masker, n, lambda: check(masker, str(input_))), mask)
        _report(title, {str(input_): count}, {str(input_): masker.unmatched}, json_out=json_out, output=output)
        return

    maskers: dict[str, EntityMasker] = {}
    manifest = read_manifest(data)

    def masker_for(split, info, lines):
        names = split_image_names(data, split, info, image_list, manifest.get("source"))
        if len(names) != len(lines):
            raise IkdError(f"split '{split}': {len(names)} image names but {len(lines)} lines of text")
        masker = EntityMasker(sentences, names, selected, tokenize, span, f"split '{split}'")
        maskers[split] = masker
        return CheckedMasker(masker, len(lines), lambda: check(masker, f"split '{split}'"))

    settings = {
        "kind": "entity",
        "method": "flickr30k-entities",
        "entities": str(entities),
        "types": sorted(selected),
        "span": span,
    }
    counts = degrade_folder(data, out, lang, masker_for, mask, settings)
    unmatched = {s: m.unmatched for s, m in maskers.items()}
    _report(f"{title}: {out}", counts, unmatched, json_out=json_out, folder=out)
