"""Scoring as the paper: BLEU and chrF (sacrebleu), METEOR, paired bootstrap significance, runs over seeds."""
