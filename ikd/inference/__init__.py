"""Image-free inference: checkpoint loading, beam and greedy search, the translator behind `ikd translate`."""
