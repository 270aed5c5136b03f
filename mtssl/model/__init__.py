"""The multi-task network: one backbone, one head per task, bridges between them, built from a config."""
