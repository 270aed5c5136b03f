"""Errors the command line reports as one line, defined without importing torch."""
from __future__ import annotations


class ConfigError(ValueError):
    """A config file or value that cannot be used; the message names the file or key."""


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, or not an mtssl checkpoint; names the file."""
