"""Rules for single setting values, shared by the command line's option types and the settings.

Free of pydantic, so a command's ``--help`` can use them without loading the
settings' rules.
"""
from __future__ import annotations

import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"
DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"


def check_budget(value: Any) -> int | str | None:
    """A label budget: None (the task's default), a positive whole number, or 'all'."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == "all":
        return "all"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(f"expected a positive whole number or 'all', got {value!r}")


def check_run_name(value: str) -> str:
    """A run name is one plain folder name, so the run stays inside ``--out``."""
    parts = PurePosixPath(value).parts
    if (not value.strip() or len(parts) != 1 or value in {".", ".."} or PureWindowsPath(value).drive
            or "\\" in value or "\0" in value or PurePosixPath(value).is_absolute()):
        raise ValueError(f"must be a plain folder name inside --out (no '/', '..' or absolute path), got {value!r}")
    return value


def check_select_by(value: str) -> str:
    """Model selection: ``mean`` of the task scores, or one ``TASK/METRIC``."""
    if value != "mean" and not re.fullmatch(r"[^/\s]+/[^/\s]+", value):
        raise ValueError(f"expected 'mean' or TASK/METRIC (e.g. seg/dice), got {value!r}")
    return value
