"""Training: loss, learning-rate schedule, checkpoints, distributed helpers and the trainer loop."""
