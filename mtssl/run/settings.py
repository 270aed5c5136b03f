"""Type and range rules for every run setting, checked before any work starts.

:class:`RunSettings` is built from the settings table
(:mod:`mtssl.run.settings_table`), as :class:`mtssl.run.config.RunConfig`
is, and is what a config file, a run directory's ``config.json`` and a
checkpoint's metadata are validated against (pydantic, strict types: a
string is not a number, a float is not an int). :func:`explain` turns a
pydantic error into one line naming the key, the problem and the value.
"""
from __future__ import annotations

from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from mtssl.options import problem_text
from mtssl.run.settings_table import DATA_SETTINGS, SETTINGS, Setting, value_type


def _field(setting: Setting) -> Any:
    """The setting's default and range as a pydantic field."""
    if setting.kind in ("list", "data"):
        return Field(default_factory=type(setting.default))
    rules: dict[str, Any] = {}
    if setting.low is not None:
        rules["gt" if setting.low_open else "ge"] = setting.low
    if setting.high is not None:
        rules["lt" if setting.high_open else "le"] = setting.high
    if setting.kind == "float":
        rules["allow_inf_nan"] = False
    if setting.nonempty:
        rules["min_length"] = 1
    if setting.pattern:
        rules["pattern"] = setting.pattern
    return Field(setting.default, **rules)


def _one_or_many(cls, value: Any) -> Any:
    """A single string where a list is expected is a list of one."""
    return [value] if isinstance(value, str) else value


def task_tables(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with each bare spec written as the table it is short for: ``data.cls = "kermany:PATH"`` is
    ``data.cls.train``."""
    return {task: {"train": spec} if isinstance(spec, str) else spec for task, spec in data.items()}


def _shorthand(cls, value: Any) -> Any:
    return task_tables(value) if isinstance(value, dict) else value


def _checked(check):
    """A validator running a setting's own check (from :mod:`mtssl.run.values`) on a given value."""
    def validate(cls, value: Any) -> Any:
        return None if value is None else check(value)

    return validate


def _validators(settings: tuple[Setting, ...]) -> dict[str, Any]:
    """The field validators the settings' kinds and checks call for, by name."""
    found: dict[str, Any] = {}
    for setting in settings:
        if setting.kind == "list":
            found[f"_{setting.key}_list"] = field_validator(setting.key, mode="before")(_one_or_many)
        if setting.kind == "data":
            found[f"_{setting.key}_shorthand"] = field_validator(setting.key, mode="before")(_shorthand)
        if setting.check is not None:  # a budget is checked before its type: it is a number or a word
            mode = "before" if setting.kind == "budget" else "after"
            found[f"_{setting.key}_check"] = field_validator(setting.key, mode=mode)(_checked(setting.check))
    return found


def settings_model(name: str, settings: tuple[Setting, ...], doc: str, data: Any = None) -> type[BaseModel]:
    """A strict pydantic model with a field per setting: its type, default, range and checks (a string is not
    a number, a float is not an int); ``data``: the type of a ``data`` setting's value."""
    fields = {s.key: (value_type(s, data), _field(s)) for s in settings}
    return create_model(name, __config__=ConfigDict(extra="forbid", strict=True), __doc__=doc,
                        __validators__=_validators(settings), **fields)


TaskDataSettings = settings_model("TaskDataSettings", DATA_SETTINGS, "One task's data: ``data.TASK`` in a config file.")
RunSettings = settings_model("RunSettings", SETTINGS, "Every key of a run configuration with its type and allowed "
                                                      "range.", data=dict[str, TaskDataSettings])


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
