"""Trained-model fixtures (owner: training work): tiny checkpoints for tests."""
