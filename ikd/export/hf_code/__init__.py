"""Python files that `ikd export --format transformers` copies into the exported folder, where transformers
loads them as custom code (`trust_remote_code=True`). Each is self-contained: it imports torch, transformers,
sacremoses and subword-nmt, and its neighbours in the folder, never ikd, so that the folder works where ikd is
not installed."""
