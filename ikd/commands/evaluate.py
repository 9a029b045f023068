"""`ikd evaluate`: score hypothesis files (or translate prepared splits with checkpoints) against references:
BLEU, METEOR, chrF, mean and std over runs, significance against a baseline (a cluster bootstrap over the runs)."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from ikd.commands import device as device_option
from ikd.commands import input_file, input_files, is_std, json_option, output_dir, quiet, read_text_lines
from ikd.errors import IkdError

_LANG_SUFFIX = re.compile(r"\.([a-z]{2})(\.gz)?$")


def _infer_lang(ref: Path) -> str | None:
    m = _LANG_SUFFIX.search(ref.name)
    return m.group(1) if m else None


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate(
        hyp: list[Path] = typer.Option(
            None,
            "--hyp",
            help="Hypothesis file ('-': stdin); repeat for several runs (seeds).",
            callback=input_files,
        ),
        ref: Path = typer.Option(
            None,
            "--ref",
            help="Reference file (lowercased, tokenised, as the hypotheses; '-': stdin).",
            callback=input_file,
        ),
        baseline: list[Path] = typer.Option(
            None,
            "--baseline",
            help="Baseline hypotheses ('-': stdin); repeat for several runs (seeds). All runs of the baseline are "
            "tested against all --hyp runs at once.",
            callback=input_files,
        ),
        lang: str = typer.Option(None, "--lang", help="Target language for METEOR (default: the --ref suffix)."),
        metrics: str = typer.Option("bleu,meteor,chrf", "--metrics", help="Comma-separated: bleu, meteor, chrf."),
        meteor_jar: Path = typer.Option(
            None, "--meteor-jar", help="meteor-1.5.jar (its data/ folder beside it); default $IKD_METEOR_JAR."
        ),
        require_meteor: bool = typer.Option(
            False, "--require-meteor", help="Fail instead of falling back when the official METEOR 1.5 cannot run."
        ),
        json_out: str = json_option(),
        bootstrap_samples: int = typer.Option(
            1000, "--bootstrap-samples", help="Bootstrap samples of the test sentences for significance."
        ),
        seed: int = typer.Option(12345, "--seed", help="Bootstrap RNG seed (numpy; 0 or more)."),
        checkpoint: list[Path] = typer.Option(
            None, "--checkpoint", "-c", help="Translate --split(s) of --data with this checkpoint; repeat for seeds."
        ),
        baseline_checkpoint: list[Path] = typer.Option(
            None, "--baseline-checkpoint", help="With --checkpoint: baseline checkpoint(s) for significance."
        ),
        data: Path = typer.Option(None, "--data", help="With --checkpoint: a prepared data folder."),
        split: list[str] = typer.Option(None, "--split", help="With --checkpoint: split(s) to translate and score."),
        save_hyps: Path = typer.Option(
            None,
            "--save-hyps",
            help="With --checkpoint: a folder for the translations, SPLIT.TGT in it (one subfolder per checkpoint "
            "when there are several).",
            callback=output_dir,
        ),
        beam: int = typer.Option(5, "--beam", "-b", help="With --checkpoint: beam size (1 = greedy)."),
        lenpen: float = typer.Option(1.0, "--lenpen", help="With --checkpoint: length penalty."),
        max_len_a: float = typer.Option(
            0.0,
            "--max-len-a",
            help="With --checkpoint: output cap `a*src_len+b` (the paper's fairseq run: a=0, b=200).",
        ),
        max_len_b: int = typer.Option(200, "--max-len-b", help="With --checkpoint: see --max-len-a."),
        batch_size: int = typer.Option(128, "--batch-size", help="With --checkpoint: sentences per batch."),
        device: str = device_option(),
        threads: int = typer.Option(0, "--threads", help="With --checkpoint: CPU decoding threads (0: 1)."),
        quiet_: bool = quiet(),
    ) -> None:
        """Score translations as the paper does: corpus BLEU on lowercased tokenised text (sacrebleu, with its
        signature), METEOR (official 1.5 jar, or a labelled fallback), chrF; mean and standard deviation
        over several runs; one-sided p-values against a baseline from a sentence-level cluster bootstrap that
        scores every run of both on each sample (Clark et al. 2011, MultEval). With --checkpoint, first translate
        prepared splits (DATA/SRC-TGT/SPLIT.bpe.SRC) and score them against DATA/text/SPLIT.TGT."""
        from ikd.commands import write_json
        from ikd.console import is_quiet, make_console
        from ikd.evaluation.checkpoints import evaluate_checkpoints
        from ikd.evaluation.runs import MeteorOptions, Scoring, parse_metrics, render
        from ikd.ranges import check_options

        chosen = parse_metrics(metrics)
        check_options(bootstrap_samples=bootstrap_samples, seed=seed)
        if checkpoint:  # the search options matter only when translating
            check_options(beam=beam, lenpen=lenpen, max_len_a=max_len_a, max_len_b=max_len_b, batch_size=batch_size,
                          threads=threads)  # fmt: skip
        jar = str(meteor_jar) if meteor_jar else None
        std_inputs = [p for p in [*(hyp or []), ref, *(baseline or [])] if is_std(p)]
        if len(std_inputs) > 1:
            raise IkdError("'-' (stdin) can be read once only: give it to one of --hyp, --ref, --baseline")
        json_to_stdout = is_std(json_out)
        out = make_console(stderr=json_to_stdout)
        show_table = not (json_to_stdout and is_quiet())  # with --json - -q: the JSON alone
        if checkpoint:
            if hyp or ref or baseline:
                raise IkdError("--checkpoint translates prepared splits: it does not take --hyp, --ref or --baseline")
            report = evaluate_checkpoints(
                list(checkpoint),
                list(baseline_checkpoint or []),
                data,
                list(split or []),
                save_hyps,
                lang,
                Scoring(chosen, MeteorOptions("", jar, require_meteor), bootstrap_samples, seed),
                dict(beam=beam, lenpen=lenpen, max_len_a=max_len_a, max_len_b=max_len_b),
                batch_size,
                device,
                threads,
            )
            if show_table:
                for name, split_report in report["splits"].items():
                    render(split_report, f"{name} ({split_report['meta']['sentences']} sentences)", out)
        else:
            if baseline_checkpoint or data or split or save_hyps:
                raise IkdError("--baseline-checkpoint, --data, --split and --save-hyps go with --checkpoint")
            if not hyp or ref is None:
                raise IkdError("give --hyp FILE (repeatable) and --ref FILE, or --checkpoint with --data and --split")
            report = _evaluate_files(
                list(hyp), ref, list(baseline or []), lang, chosen, jar, require_meteor, bootstrap_samples, seed
            )
            if show_table:
                render(report, f"{ref.name} ({report['meta']['sentences']} sentences)", out)
        if json_out:
            write_json(json_out, report)


def _read_pair(hyp: Path, ref: Path, cache: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """evaluation.metrics.read_pair, with '-' for stdin (read once)."""
    from ikd.evaluation.metrics import check_lengths

    def lines(path: Path) -> list[str]:
        key = str(path)
        if key not in cache:
            cache[key] = read_text_lines(path, allow_empty=True)
        return cache[key]

    hyps, refs = lines(hyp), lines(ref)
    for path, found in ((ref, refs), (hyp, hyps)):
        if not found:
            raise IkdError(f"{'<stdin>' if is_std(path) else path}: file is empty")
    check_lengths(hyps, refs, str(hyp), str(ref))
    return hyps, refs


def _evaluate_files(hyp, ref, baseline, lang, chosen, jar, require_meteor, samples, seed) -> dict:
    from ikd.evaluation.checkpoints import unique_names
    from ikd.evaluation.runs import MeteorOptions, Scoring, score_runs

    lang = lang or (None if is_std(ref) else _infer_lang(ref))
    if lang is None and "meteor" in chosen:
        raise IkdError(f"--lang: cannot tell the language of {ref} from its name; give --lang (e.g. de)")
    names = unique_names([*hyp, *baseline])
    systems, baselines = [], []
    cache: dict[str, list[str]] = {}
    for i, path in enumerate([*hyp, *baseline]):
        hyps, refs = _read_pair(path, ref, cache)
        (systems if i < len(hyp) else baselines).append((names[i], hyps))
    scoring = Scoring(chosen, MeteorOptions(lang or "", jar, require_meteor), samples, seed)
    return score_runs(systems, refs, str(ref), scoring, baselines)
