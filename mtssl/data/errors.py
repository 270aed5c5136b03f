"""The one error type for unusable data, so every bad file reads the same way.

A :class:`DataError` names the file and what is wrong with it. It subclasses
``ValueError``, so the CLI prints it as one line; with ``--skip-bad`` the core
catches it per item, leaves the item out and counts it instead.
"""
from __future__ import annotations

from dataclasses import dataclass


class DataError(ValueError):
    """A file (or folder) that cannot be used as training data; ``path`` is what to look at."""

    def __init__(self, path: object, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class Skipped:
    """One item left out under ``--skip-bad``: where it is and why."""

    path: str
    reason: str

    @classmethod
    def of(cls, error: DataError) -> "Skipped":
        return cls(error.path, error.problem)

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}
