"""Benchmark harness: ablation grids (models x label budgets x seeds) and their statistics."""
