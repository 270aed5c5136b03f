"""Typed, range-checked component options (``cls:fixmatch:threshold=0.95``) for plugin authors.

A component declares its options as a pydantic model deriving from
:class:`Options` and reads them with :func:`read_options`; an unknown option,
a wrong type, NaN/infinity or an out-of-range value becomes one
``ValueError`` line naming the component, the option, the rule and the
value::

    class FixMatchOptions(Options):
        threshold: float = Field(0.7, ge=0, le=1)
        weight: float = Field(0.25, ge=0)
"""
from __future__ import annotations

import reprlib
from typing import Any, Mapping, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound="Options")


class Options(BaseModel):
    """Base for a component's options: unknown keys refused, numbers finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def range_text(model: type[BaseModel], name: str) -> str | None:
    """``0 <= x <= 1`` from a field's bounds, so a range error states the whole allowed range."""
    field = model.model_fields.get(name)
    if field is None:
        return None
    low = high = ""
    for rule in field.metadata:
        for attr, text in (("ge", "{} <= "), ("gt", "{} < ")):
            if getattr(rule, attr, None) is not None:
                low = text.format(getattr(rule, attr))
        for attr, text in (("le", " <= {}"), ("lt", " < {}")):
            if getattr(rule, attr, None) is not None:
                high = text.format(getattr(rule, attr))
    if low and not high:  # "x >= 1" reads better than "1 <= x"
        bound, sign = low.split(" ", 1)
        return f"x {sign.strip().replace('<=', '>=').replace('<', '>')} {bound}"
    return f"{low}x{high}" if low or high else None


def problem_text(item: dict, model: type[BaseModel] | None, name: str) -> str:
    """pydantic's message for one error, with the full allowed range for range errors."""
    if item["type"] in RANGE_ERRORS and model is not None and (allowed := range_text(model, name)):
        return f"must satisfy {allowed}, got {_value(item.get('input'))}"
    message = item["msg"].removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    return message if "got " in message else f"{message}, got {_value(item.get('input'))}"


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxlevel = 2
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 4
    short.maxstring = short.maxother = 40
    return short


SHORT_REPR = _short_repr()


def _value(value: Any) -> str:
    """A value as short text, built without the full ``repr`` (a YAML alias bomb's repr runs to gigabytes)."""
    text = SHORT_REPR.repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def explain_options(error: ValidationError, model: type[BaseModel]) -> str:
    unknown = sorted(str(e["loc"][-1]) for e in error.errors() if e["type"] == "extra_forbidden")
    problems = []
    if unknown:
        problems.append(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(model.model_fields)) or 'none'}")
    for item in error.errors():
        if item["type"] == "extra_forbidden":
            continue
        where = str(item["loc"][0]) if item["loc"] else "options"
        problems.append(f"option {where}: {problem_text(item, model, where)}")
    return "; ".join(dict.fromkeys(problems))


def read_options(component: str, options: Mapping[str, Any], model: type[T]) -> T:
    """Validate ``options`` against ``model``; a problem is a one-line ``ValueError`` naming ``component``."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        raise ValueError(f"{component}: {explain_options(exc, model)}") from None
