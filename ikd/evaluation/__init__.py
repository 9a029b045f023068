"""Scoring as the paper: BLEU and chrF (sacrebleu), METEOR, runs over seeds, their significance."""
