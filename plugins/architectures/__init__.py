"""First-party multi-task architectures: how the tasks share the encoder."""
