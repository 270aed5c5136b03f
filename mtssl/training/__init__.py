"""Training a run: the loop, one step, its views and batches, validation, checkpoints."""
