"""Typed, range-checked component options (``cls:fixmatch:threshold=0.95``) for plugin authors.

A component declares its options as a pydantic model deriving from
:class:`Options` and reads them with :func:`read_options` (a strategy or a
weighting may name the model as its ``options_model`` instead, and its base
class reads them); an unknown option, a wrong type, NaN/infinity or an
out-of-range value becomes one ``ValueError`` line naming the component, the
option, the rule and the value::

    class FixMatchOptions(Options):
        threshold: float = Field(0.7, ge=0, le=1)
        weight: float = Field(0.25, ge=0)
"""
from __future__ import annotations

import ast
import inspect
import reprlib
import textwrap
import types
import typing
from typing import Any, Literal, Mapping, TypeVar, Union

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import to_jsonable_python

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


# -- Listing a component's options (``mtssl plugins --json``) ------------------------------------------

def describe_options(model: type[BaseModel]) -> list[dict[str, Any]]:
    """Each field of ``model`` as ``{name, type, default, range, choices, description}`` (JSON-ready).

    A required field has ``"required": true`` instead of a default; ``range`` is the text an
    out-of-range value's error states (``0.0 <= x <= 1.0``), ``choices`` a ``Literal``'s values.
    """
    rows = []
    for name, field in model.model_fields.items():
        row: dict[str, Any] = {"name": name, "type": type_text(field.annotation)}
        if field.is_required():
            row["required"] = True
        else:
            row["default"] = to_jsonable_python(field.get_default(call_default_factory=True), fallback=str)
        row["range"] = range_text(model, name)
        row["choices"] = literal_choices(field.annotation)
        row["description"] = field.description or ""
        rows.append(row)
    return rows


def type_text(annotation: Any) -> str:
    """``float``, ``int | none``, ``choice``, ``tuple[int, ...]``: a field's type as a reader would write it."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "choice"
    if origin in (Union, types.UnionType):
        return " | ".join(type_text(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return "none"
    if isinstance(annotation, type) and origin is None:
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def literal_choices(annotation: Any) -> list[Any] | None:
    """The values a ``Literal`` (or an optional one) allows, else None."""
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    for arg in typing.get_args(annotation) if typing.get_origin(annotation) in (Union, types.UnionType) else ():
        if typing.get_origin(arg) is Literal:
            return list(typing.get_args(arg))
    return None


def declared_options(factory: Any) -> type[BaseModel] | None:
    """The options model a component factory reads, or None where it declares none.

    A factory (class or function) may name it as ``options_model`` (a strategy or weighting class that
    declares its options that way has them read by its base class); otherwise it is the model its code
    passes to :func:`read_options` (the third argument), found by reading the factory's source (a class's
    ``__init__``, up its bases), so a constructor that calls it needs no declaration of its own.
    """
    named = getattr(factory, "options_model", None)
    if isinstance(named, type) and issubclass(named, BaseModel):
        return named
    for function, namespace in _constructors(factory):
        model = _read_options_model(function, namespace)
        if model is not None:
            return model
    return None


def _constructors(factory: Any):
    """``(function, its module's globals)`` that build a component: a function, or each ``__init__`` of a class."""
    if isinstance(factory, type):
        for cls in factory.__mro__:
            init = vars(cls).get("__init__")
            if inspect.isfunction(init):
                yield init, init.__globals__
    elif inspect.isfunction(factory):
        yield factory, factory.__globals__


def _read_options_model(function: Any, namespace: dict[str, Any]) -> type[BaseModel] | None:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):  # no source (built in, compiled, a REPL): nothing to read
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _called_name(node.func) == "read_options":
            argument = node.args[2] if len(node.args) > 2 else next(
                (k.value for k in node.keywords if k.arg == "model"), None)
            model = _resolve(argument, namespace)
            if isinstance(model, type) and issubclass(model, BaseModel):
                return model
    return None


def _called_name(func: ast.expr) -> str | None:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _resolve(expression: ast.expr | None, namespace: dict[str, Any]) -> Any:
    """The object a name (``Model``) or dotted name (``module.Model``) refers to in ``namespace``."""
    if isinstance(expression, ast.Name):
        return namespace.get(expression.id)
    if isinstance(expression, ast.Attribute):
        return getattr(_resolve(expression.value, namespace), expression.attr, None)
    return None
