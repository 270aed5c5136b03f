"""Type and range rules for every run setting, checked before any work starts.

:class:`RunSettings` mirrors :class:`mtssl.run.config.RunConfig` field by field
and is what a config file, a run directory's ``config.json`` and a
checkpoint's metadata are validated against (pydantic, strict types: a
string is not a number, a float is not an int). :func:`explain` turns a
pydantic error into one line naming the key, the problem and the value.
"""
from __future__ import annotations

import re
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mtssl.options import problem_text
from mtssl.run.values import DEVICE_PATTERN, check_budget, check_run_name

class TaskDataSettings(BaseModel):
    """One task's data: ``data.TASK`` in a config file."""

    model_config = ConfigDict(extra="forbid", strict=True)

    train: Optional[str] = Field(None, min_length=1)
    """None: the task's own default source (``Task.default_source``), resolved when the run is checked."""
    labels: Any = None
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, allow_inf_nan=False)
    val: Optional[str] = Field(None, min_length=1)
    test: list[str] = Field(default_factory=list)

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        return check_budget(value)

    @field_validator("test", mode="before")
    @classmethod
    def _test(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class RunSettings(BaseModel):
    """Every key of a run configuration with its type and allowed range."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tasks: list[str] = Field(default_factory=list)
    bridges: list[str] = Field(default_factory=list)
    backbone: str = Field("unet", min_length=1)
    data: dict[str, TaskDataSettings] = Field(default_factory=dict)
    size: int = Field(64, ge=1)
    batch_size: int = Field(10, ge=1)
    steps: Optional[int] = Field(None, ge=1)
    epochs: Optional[float] = Field(None, gt=0, allow_inf_nan=False)
    lr: float = Field(1e-4, gt=0, le=1e30, allow_inf_nan=False)
    lr_step_epochs: float = Field(8.0, gt=0, allow_inf_nan=False)
    lr_gamma: float = Field(0.1, gt=0, le=1, allow_inf_nan=False)
    seed: int = Field(0, ge=0, lt=2**63)
    device: str = Field("auto", pattern=DEVICE_PATTERN)
    threads: Optional[int] = Field(None, ge=1)
    strong_ops: int = Field(2, ge=1, le=15)
    eval_every: int = Field(100, ge=1)
    save_every: int = Field(100, ge=1)
    select_by: str = Field("mean", min_length=1)
    out: str = Field("runs", min_length=1)
    name: Optional[str] = None
    cache_dir: Optional[str] = Field(None, min_length=1)
    skip_bad: bool = False
    deterministic: bool = False
    channels: Optional[int] = Field(None, ge=1)
    amp: bool = False
    max_loss: Optional[float] = Field(None, gt=0, allow_inf_nan=False)
    skip_nonfinite: int = Field(0, ge=0)
    log: list[str] = Field(default_factory=list)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    device_memory_budget: Optional[float] = Field(None, ge=0, allow_inf_nan=False)
    weighting: str = Field("equal", min_length=1)
    log_grad_shares: int = Field(0, ge=0)

    @field_validator("tasks", "bridges", "log", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("data", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """``data.cls = "kermany:PATH"`` is short for ``data.cls.train``."""
        if isinstance(value, dict):
            return {task: {"train": spec} if isinstance(spec, str) else spec for task, spec in value.items()}
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else check_run_name(value)

    @field_validator("select_by")
    @classmethod
    def _select_by(cls, value: str) -> str:
        if value != "mean" and not re.fullmatch(r"[^/\s]+/[^/\s]+", value):
            raise ValueError(f"expected 'mean' or TASK/METRIC (e.g. seg/dice), got {value!r}")
        return value


def _known(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (nested) model at ``loc``, for 'unknown key' messages."""
    if len(loc) >= 2 and loc[0] == "data":
        return sorted(TaskDataSettings.model_fields)
    return sorted(model.model_fields)


def explain(error: ValidationError, model: type[BaseModel] = RunSettings) -> str:
    """One line: ``key: problem (got value)``; unknown keys grouped with the known ones listed."""
    unknown: dict[tuple, list[str]] = {}
    problems: list[str] = []
    for item in error.errors():
        loc = tuple(item["loc"])
        if item["type"] == "extra_forbidden":
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
            continue
        where = ".".join(str(p) for p in loc) or "(top level)"
        owner = TaskDataSettings if len(loc) == 3 and loc[0] == "data" else model
        problems.append(f"{where}: {problem_text(item, owner, str(loc[-1]) if loc else '')}")
    for parent, keys in unknown.items():
        prefix = ".".join(str(p) for p in parent)
        problems.insert(0, f"{prefix + ': ' if prefix else ''}unknown key(s) {', '.join(sorted(keys))}; "
                           f"known: {', '.join(_known(model, parent + ('x',)))}")
    return "; ".join(dict.fromkeys(p.replace("\n", " ") for p in problems))


def validate_settings(raw: dict[str, Any]) -> RunSettings:
    """Validate a raw mapping; raises :class:`pydantic.ValidationError` (see :func:`explain`)."""
    return RunSettings.model_validate(raw)
