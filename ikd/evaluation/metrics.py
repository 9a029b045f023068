"""Corpus BLEU and chrF as the paper scores: sacrebleu on lowercased, Moses-tokenised, de-BPE'd text.

BLEU: 4-gram, no tokenisation (the text is tokenised already), lowercase, no smoothing (fairseq's scorer
and multi-bleu.perl, which produced the paper's numbers, do not smooth), standard brevity penalty.
"""

from __future__ import annotations

from dataclasses import dataclass

from ikd.errors import IkdError
from ikd.fileio import read_lines


@dataclass
class MetricScore:
    name: str
    score: float  # 0-100
    signature: str
    detail: str = ""


def bleu_metric():
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize="none", lowercase=True, smooth_method="none", force=True)


def chrf_metric():
    from sacrebleu.metrics import CHRF

    return CHRF()


def bleu(hyps: list[str], refs: list[str]) -> MetricScore:
    metric = bleu_metric()
    s = metric.corpus_score(hyps, [refs])
    detail = "/".join(f"{p:.1f}" for p in s.precisions) + f" (BP = {s.bp:.3f} ratio = {s.ratio:.3f})"
    return MetricScore("BLEU", s.score, str(metric.get_signature()), detail)


def chrf(hyps: list[str], refs: list[str]) -> MetricScore:
    metric = chrf_metric()
    return MetricScore("chrF", metric.corpus_score(hyps, [refs]).score, str(metric.get_signature()))


def read_pair(hyp_path, ref_path) -> tuple[list[str], list[str]]:
    """Hypothesis and reference files -> lines, checked: not empty, same number of lines.
    Empty lines are allowed inside (a system may output nothing for a sentence)."""
    hyps = read_lines(hyp_path, allow_empty=True)
    refs = read_lines(ref_path, allow_empty=True)
    for path, lines in ((ref_path, refs), (hyp_path, hyps)):
        if not lines:
            raise IkdError(f"{path}: file is empty")
    check_lengths(hyps, refs, str(hyp_path), str(ref_path))
    return hyps, refs


def check_lengths(hyps: list[str], refs: list[str], hyp_name: str, ref_name: str) -> None:
    if len(hyps) != len(refs):
        raise IkdError(
            f"{hyp_name} has {len(hyps)} lines but {ref_name} has {len(refs)}: "
            "hypotheses and references must correspond line by line"
        )
