"""Data: preparation (Multi30K, toy world), BPE, vocabulary, datasets and batching."""
