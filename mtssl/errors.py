"""Errors the command line reports as one line, defined without importing torch."""
from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, or not an mtssl checkpoint; names the file."""
