"""`ikd evaluate` on files: BLEU (sacrebleu and a hand-computed case), METEOR (fallback labels, official jar
through a stand-in java), mean/std over runs, significance against baselines, and the error messages."""

from __future__ import annotations

import json
import math
import random
import stat
from pathlib import Path

import pytest

from ikd.cli import main
from ikd.errors import IkdError
from ikd.evaluation.meteor import fallback_label, meteor, parse_jar_output
from ikd.evaluation.metrics import bleu
from ikd.evaluation.runs import mean_std
from ikd.fileio import read_lines

REF = ["the cat sat on a mat", "a dog runs fast"]
HYP_B = ["the cat sat on the mat", "a dog runs"]
HYP_C = ["the cat sat on a mat", "a dog runs"]
# Hand counts for HYP_B (BLEU-4, no smoothing): 1-grams 8/9 (the second "the" is clipped), 2-grams 5/7,
# 3-grams 3/5, 4-grams 1/3 (the second sentence has none); hypothesis 9 tokens, reference 10: BP = e^(1-10/9).
BLEU_B = 100 * math.exp(1 - 10 / 9) * (8 / 9 * 5 / 7 * 3 / 5 * 1 / 3) ** 0.25
BLEU_C = 100 * math.exp(1 - 10 / 9)  # every n-gram matches; only the brevity penalty is left


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def corrupt(lines: list[str], rate: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(w for w in line.split() if rng.random() > rate) for line in lines]


@pytest.fixture(scope="module")
def val_de(shared_data: Path) -> list[str]:
    return read_lines(shared_data / "multi30k" / "tok" / "val.lc.norm.tok.de")[:300]


def test_bleu_by_hand() -> None:
    assert bleu(HYP_B, REF).score == pytest.approx(BLEU_B, abs=1e-9)
    assert BLEU_B == pytest.approx(53.42, abs=0.01)
    assert bleu(HYP_C, REF).score == pytest.approx(BLEU_C, abs=1e-9)
    assert bleu([h.upper() for h in HYP_B], REF).score == pytest.approx(BLEU_B)  # lowercased, as the paper


def test_bleu_equals_sacrebleu_and_signature_is_printed(tmp_path: Path, val_de: list[str], capsys) -> None:
    import sacrebleu

    hyps = corrupt(val_de, 0.2, seed=1)
    expected = sacrebleu.corpus_bleu(hyps, [val_de], tokenize="none", lowercase=True, force=True, smooth_method="none")
    assert bleu(hyps, val_de).score == pytest.approx(expected.score, abs=1e-9)
    h, r = write(tmp_path / "hyp.de", hyps), write(tmp_path / "ref.de", val_de)
    assert main(["evaluate", "--hyp", str(h), "--ref", str(r), "--json", str(tmp_path / "out.json")]) == 0
    text = capsys.readouterr().out
    assert "BLEU signature: nrefs:1|case:lc|eff:no|tok:none|smooth:none|version:" in text
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["systems"][0]["bleu"] == pytest.approx(expected.score, abs=1e-9)
    assert f"{expected.score:.2f}" in text
    assert report["meta"]["lang"] == "de" and report["meta"]["sentences"] == 300


def test_meteor_fallback_is_labelled_in_text_and_json(tmp_path: Path, val_de: list[str], capsys, monkeypatch) -> None:
    monkeypatch.delenv("IKD_METEOR_JAR", raising=False)
    h, r = write(tmp_path / "hyp.txt", corrupt(val_de, 0.2, seed=2)), write(tmp_path / "ref.txt", val_de)
    code = main(["evaluate", "--hyp", str(h), "--ref", str(r), "--lang", "de", "--json", "-"])
    assert code == 0
    captured = capsys.readouterr()
    label = "METEOR (fallback: NLTK meteor_score, Snowball german stemmer, no synonyms, mean of sentence scores)"
    assert label == fallback_label("de")
    assert "METEOR (fallback)" in captured.err and label in captured.err  # the table goes to stderr with --json -
    report = json.loads(captured.out)
    assert report["meta"]["meteor_method"] == label and report["meta"]["meteor_official"] is False
    assert all(row["meteor_method"] == label for row in report["systems"])
    assert 30 < report["systems"][0]["meteor"] < 100


def test_meteor_fallback_scores() -> None:
    same = meteor(REF, REF, "de")
    assert not same.official and same.score > 95
    stems = meteor(["die hunde laufen"], ["der hund läuft"], "de").score
    no_stems = meteor(["die hunde laufen"], ["der hund läuft"], "xx")
    assert stems > 0 and no_stems.score == 0 and "no stemmer for 'xx'" in no_stems.method


def fake_java(tmp_path: Path, monkeypatch, output: str) -> Path:
    """A `java` on PATH that records its arguments and prints `output`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    java = bin_dir / "java"
    java.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/java.args\nprintf "%s\\n" "{output}"\n')
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return tmp_path / "java.args"


def test_official_meteor_jar_is_run_and_parsed(tmp_path: Path, monkeypatch) -> None:
    args_file = fake_java(tmp_path, monkeypatch, "Final score:            0.5123456")
    jar = tmp_path / "meteor" / "meteor-1.5.jar"
    jar.parent.mkdir()
    jar.write_bytes(b"not a real jar")
    with pytest.raises(IkdError, match="no paraphrase table for 'de'"):
        meteor(REF, REF, "de", jar=jar, require=True)
    partial = meteor(REF, REF, "de", jar=jar)
    assert not partial.official and '-m "exact stem"' in partial.method
    assert "-m exact stem" in args_file.read_text()
    (jar.parent / "data").mkdir()
    (jar.parent / "data" / "paraphrase-de.gz").write_bytes(b"")
    result = meteor(REF, REF, "de", jar=jar, require=True)
    assert result.official and result.method == "METEOR 1.5" and result.score == pytest.approx(51.23456)
    args = args_file.read_text().split()
    assert args[:2] == ["-Xmx2G", "-Duser.language=en"] and args[-4:] == ["-l", "de", "-norm", "-q"]
    assert parse_jar_output("0.25\n") == 0.25


def test_require_meteor_without_jar_is_an_error(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("IKD_METEOR_JAR", raising=False)
    h, r = write(tmp_path / "h.de", HYP_B), write(tmp_path / "r.de", REF)
    assert main(["evaluate", "--hyp", str(h), "--ref", str(r), "--require-meteor"]) == 1
    assert "--require-meteor" in capsys.readouterr().err
    assert main(["evaluate", "--hyp", str(h), "--ref", str(r), "--meteor-jar", str(tmp_path / "none.jar")]) == 1
    assert "none.jar: METEOR jar not found" in capsys.readouterr().err


def test_mean_and_std_over_three_runs(tmp_path: Path, capsys) -> None:
    files = [write(tmp_path / f"seed{i}.de", hyp) for i, hyp in enumerate([REF, HYP_B, HYP_C])]
    r = write(tmp_path / "ref.de", REF)
    args = ["evaluate", "--ref", str(r), "--metrics", "bleu", "--json", str(tmp_path / "o.json")]
    for f in files:
        args += ["--hyp", str(f)]
    assert main(args) == 0
    report = json.loads((tmp_path / "o.json").read_text())
    values = [100.0, BLEU_B, BLEU_C]
    mean = sum(values) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)  # sample standard deviation
    assert [row["bleu"] for row in report["systems"]] == pytest.approx(values)
    assert report["summary"]["bleu"] == pytest.approx({"mean": mean, "std": std})
    assert report["summary"]["runs"] == 3
    assert f"{mean:.2f} ± {std:.2f}" in capsys.readouterr().out
    assert mean_std([5.0]) == (5.0, 0.0)


def test_baseline_option_reports_p_values(tmp_path: Path, val_de: list[str]) -> None:
    r = write(tmp_path / "ref.de", val_de)
    h1, h2 = write(tmp_path / "a.de", corrupt(val_de, 0.1, 5)), write(tmp_path / "b.de", corrupt(val_de, 0.1, 6))
    b = write(tmp_path / "base.de", corrupt(val_de, 0.5, 7))
    out = tmp_path / "o.json"
    args = ["evaluate", "--hyp", str(h1), "--hyp", str(h2), "--ref", str(r), "--baseline", str(b)]
    assert main([*args, "--metrics", "bleu,chrf", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    tests = report["significance"]  # both runs of the system against the baseline, once per metric
    assert [(t["system"], t["baseline"], t["metric"]) for t in tests] == [
        ("a.de, b.de", "base.de", "BLEU"),
        ("a.de, b.de", "base.de", "chrF"),
    ]
    assert all(t["p_value"] < 0.01 and t["mark"] == "‡" for t in tests)
    assert report["baselines"][0]["name"] == "base.de"
    assert {k: report["meta"]["bootstrap"][k] for k in ("samples", "seed")} == {"samples": 1000, "seed": 12345}


def test_errors_name_files_and_counts(tmp_path: Path, capsys) -> None:
    r = write(tmp_path / "ref.de", REF)
    short = write(tmp_path / "short.de", REF[:1])
    empty = write(tmp_path / "empty.de", [])
    assert main(["evaluate", "--hyp", str(short), "--ref", str(r)]) == 1
    err = capsys.readouterr().err
    assert "short.de has 1 lines but" in err and "ref.de has 2" in err
    assert main(["evaluate", "--hyp", str(empty), "--ref", str(r)]) == 1
    assert "empty.de: file is empty" in capsys.readouterr().err
    assert main(["evaluate", "--hyp", str(short), "--ref", str(empty)]) == 1
    assert "empty.de: file is empty" in capsys.readouterr().err
    assert main(["evaluate", "--hyp", str(tmp_path / "nope.de"), "--ref", str(r)]) == 1
    assert "nope.de: file not found" in capsys.readouterr().err
    assert main(["evaluate", "--hyp", str(r), "--ref", str(r), "--metrics", "bleu,ter"]) == 1
    assert "--metrics" in capsys.readouterr().err
    nolang = write(tmp_path / "ref.txt", REF)
    assert main(["evaluate", "--hyp", str(r), "--ref", str(nolang)]) == 1
    assert "--lang" in capsys.readouterr().err
    assert main(["evaluate", "--hyp", str(r), "--ref", str(nolang), "--metrics", "bleu"]) == 0


def test_negative_seed_is_refused(tmp_path, capsys) -> None:
    h = write(tmp_path / "h.txt", ["a b c d"])
    r = write(tmp_path / "r.txt", ["a b c d"])
    args = ["evaluate", "--hyp", str(h), "--ref", str(r), "--baseline", str(h), "--metrics", "bleu", "-q"]
    assert main([*args, "--seed", "-1"]) == 1
    assert "--seed -1: must be from 0 to 4294967295" in capsys.readouterr().err
    assert main([*args, "--seed", "0"]) == 0  # numpy's generator takes 0 like any other seed
