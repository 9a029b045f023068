"""`ikd analyze curves`: learning curves from a run's metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from ikd.cli import main
from ikd.probes.curves import epoch_curves, read_records


def _write(run: Path, records: list[dict]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


RECORDS = [
    {"kind": "train", "epoch": 1, "updates": 20, "loss": 6.0, "ce": 5.0, "irm": 0.5, "iam": 0.7},
    {"kind": "train", "epoch": 1, "updates": 40, "loss": 4.0, "ce": 3.0, "irm": 0.3, "iam": 0.5},
    {
        "kind": "epoch",
        "epoch": 1,
        "valid_loss": 4.5,
        "valid_ce": 3.5,
        "valid_irm": 0.4,
        "valid_iam": 0.6,
        "valid_bleu": 5.0,
    },
    {"kind": "train", "epoch": 2, "updates": 60, "loss": 9.9, "ce": 9.9},  # interrupted, then resumed
    {"kind": "resume", "epoch": 1, "updates": 40},
    {"kind": "train", "epoch": 2, "updates": 60, "loss": 3.0, "ce": 2.5, "irm": 0.2, "iam": "nan"},
    {"kind": "epoch", "epoch": 2, "valid_loss": 3.2, "valid_ce": 2.6, "valid_bleu": 21.5},  # no KD fields
]


def test_epoch_curves() -> None:
    curves = epoch_curves(RECORDS)
    assert curves["train_loss"] == {1: 5.0, 2: 3.0}  # window means averaged; the pre-resume window dropped
    assert curves["train_ce"] == {1: 4.0, 2: 2.5}
    assert curves["train_irm"] == pytest.approx({1: 0.4, 2: 0.2})
    assert curves["train_iam"] == pytest.approx({1: 0.6})  # "nan" skipped
    assert curves["valid_loss"] == {1: 4.5, 2: 3.2}
    assert curves["valid_irm"] == {1: 0.4}
    assert curves["valid_bleu"] == {1: 5.0, 2: 21.5}


def test_curves_png(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    _write(run, RECORDS)
    out = tmp_path / "curves.png"
    assert main(["analyze", "curves", "--run", str(run), "-o", str(out), "--dpi", "100"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""  # the figure is the result; the summary goes to stderr
    assert "2 epoch(s), last validation BLEU 21.50" in captured.err
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] == 330  # 3.3 in (a paper column) at 100 dpi
        assert im.size[1] > im.size[0]  # the three panels stacked


def test_the_suffix_picks_the_format_and_width_dpi_size_it(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    _write(run, RECORDS)
    assert main(["analyze", "curves", "--run", str(run), "-o", str(tmp_path / "c.pdf"), "-q"]) == 0
    assert (tmp_path / "c.pdf").read_bytes().startswith(b"%PDF")
    assert main(["analyze", "curves", "--run", str(run), "-o", str(tmp_path / "c.svg"), "-q"]) == 0
    assert b"<svg" in (tmp_path / "c.svg").read_bytes()[:2000]
    assert capsys.readouterr().err == ""  # -q: no summary
    png = tmp_path / "wide.png"
    assert main(["analyze", "curves", "--run", str(run), "-o", str(png), "--width", "7", "--dpi", "50"]) == 0
    with Image.open(png) as im:
        assert im.size[0] == 350
    assert main(["analyze", "curves", "--run", str(run), "-o", str(tmp_path / "c.jpg")]) == 1
    assert "c.jpg: unknown figure format .jpg; name the file .png, .pdf or .svg" in capsys.readouterr().err
    assert not (tmp_path / "c.jpg").exists()


def test_old_out_flag_still_works_with_a_warning(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    _write(run, RECORDS)
    assert main(["analyze", "curves", "--run", str(run), "--out", str(tmp_path / "c.png")]) == 0
    assert "--out is deprecated" in capsys.readouterr().err
    assert (tmp_path / "c.png").is_file()


def test_text_only_curves_have_no_kd_panel(tmp_path: Path) -> None:
    from ikd.probes.curves import plot_curves

    curves = {"train_loss": {1: 4.0, 2: 3.0}, "train_irm": {1: 0.0, 2: 0.0}, "valid_bleu": {1: 5.0, 2: 9.0}}
    with_kd = {**curves, "train_irm": {1: 0.5, 2: 0.4}}
    _, h_text = plot_curves(curves, tmp_path / "text.pdf")
    _, h_kd = plot_curves(with_kd, tmp_path / "kd.pdf")
    assert h_kd > h_text  # one panel fewer: the KD terms of a text-only run are not drawn


def test_curves_tolerate_sparse_logs(tmp_path: Path, capsys) -> None:
    """A text-only run (KD logged as 0), no BLEU, a truncated last line: still a figure."""
    run = tmp_path / "run"
    _write(run, [{"kind": "train", "epoch": 1, "loss": 5.0, "irm": 0.0, "iam": 0.0}, {"kind": "epoch", "epoch": 1}])
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "epo')
    assert len(read_records(run)) == 2
    assert main(["analyze", "curves", "--run", str(run), "-o", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 1000
    empty = tmp_path / "empty"
    _write(empty, [{"kind": "resume", "epoch": 0}])
    assert main(["analyze", "curves", "--run", str(empty), "-o", str(tmp_path / "e.png")]) == 1
    assert "no epoch or training records" in capsys.readouterr().err
    assert main(["analyze", "curves", "--run", str(tmp_path / "nowhere"), "-o", str(tmp_path / "e.png")]) == 1
    assert "no metrics log" in capsys.readouterr().err
