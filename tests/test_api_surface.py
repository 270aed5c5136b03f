"""The plugin API's promises, checked: a version, every type a plugin signature mentions exported, and
every public name, hook and command-line option documented.

A plugin imports only :mod:`mtssl.api`, so a type that appears in a signature it implements or calls
(``ViewRequest.model: ModelName``) must be importable from there; and the API reference and ``--help`` are
generated from docstrings and help texts, so a missing one is a hole in the documentation.
"""
from __future__ import annotations

import ast
import builtins
import dataclasses
import inspect
import re
import sys
import typing
from pathlib import Path

import click
import pytest

import mtssl.api as api
import mtssl.hookspecs as hookspecs
from mtssl.cli.app import main
from mtssl.plugins import HOOKS

IDENTIFIER = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def public_methods(cls: type):
    """(name, function) of the public methods (and property getters) a class defines itself."""
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    for name, value in vars(cls).items():
        if (name.startswith("_") and name != "__init__") or name in fields:
            continue
        function = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
        if inspect.isfunction(function):
            yield name, function


def annotations(obj) -> list[tuple[str, str, dict]]:
    """(where, annotation text, namespace it is read in) for a class's fields and public methods
    (its mtssl base classes' too) or a function's parameters and return."""
    found = []
    if inspect.isclass(obj):
        for cls in obj.__mro__:
            if not cls.__module__.startswith("mtssl"):
                continue
            namespace = vars(sys.modules[cls.__module__])
            for name, annotation in vars(cls).get("__annotations__", {}).items():
                found.append((f"{obj.__name__}.{name}", annotation, namespace))
            for name, function in public_methods(cls):
                for parameter, annotation in function.__annotations__.items():
                    found.append((f"{obj.__name__}.{name}({parameter})", annotation, function.__globals__))
    elif inspect.isfunction(obj):
        for parameter, annotation in obj.__annotations__.items():
            found.append((f"{obj.__name__}({parameter})", annotation, obj.__globals__))
    return found


def resolve(dotted: str, namespace: dict):
    head, *rest = dotted.split(".")
    obj = namespace.get(head, getattr(builtins, head, None))
    for part in rest:
        obj = getattr(obj, part, None)
    return obj


def is_mtssl_type(obj, name: str, namespace: dict) -> bool:
    """A class or function of mtssl, or a type alias an mtssl module defines (``ModelName = Literal[...]``)."""
    if inspect.isclass(obj) or inspect.isfunction(obj):
        return getattr(obj, "__module__", "").startswith("mtssl")
    is_alias = typing.get_origin(obj) is not None and getattr(typing, name, None) is not obj
    return is_alias and namespace.get("__name__", "").startswith("mtssl")


def unexported_mentions() -> list[str]:
    problems = []
    for name in api.__all__:
        for where, annotation, namespace in annotations(getattr(api, name)):
            text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", repr(annotation))
            for dotted in IDENTIFIER.findall(text):
                obj, short = resolve(dotted, namespace), dotted.split(".")[-1]
                if is_mtssl_type(obj, short, namespace) and (short not in api.__all__ or getattr(api, short) is not obj):
                    problems.append(f"{where} mentions {short}, which mtssl.api does not export")
    return sorted(set(problems))


def test_every_type_a_plugin_signature_mentions_is_exported():
    assert unexported_mentions() == []


def test_the_walk_finds_a_type_that_is_not_exported(monkeypatch):
    """Without ModelName (as before it was exported) the walk names ViewRequest.model."""
    monkeypatch.setattr(api, "__all__", [n for n in api.__all__ if n != "ModelName"])
    assert "ViewRequest.model mentions ModelName, which mtssl.api does not export" in unexported_mentions()


def test_the_api_has_a_version_a_plugin_can_require():
    major, minor = (int(part) for part in api.__version__.split("."))
    assert (major, minor) >= (1, 1)
    assert "__version__" not in api.__all__  # a star import must not shadow the plugin's own version


def test_check_options_warns_naming_its_version():
    with pytest.warns(DeprecationWarning, match=r"deprecated since mtssl.api 1.1 \(removed in 1.2 at the earliest\)"):
        api.check_options("task 'x'", {}, set())


# -- documentation ------------------------------------------------------------------------------------

def attribute_docstrings(module_name: str) -> dict[str, str]:
    """``NAME = ...`` followed by a string literal, at a module's top level (how an alias is documented)."""
    tree = ast.parse(Path(sys.modules[module_name].__file__).read_text())
    docs = {}
    for statement, following in zip(tree.body, tree.body[1:]):
        targets = statement.targets if isinstance(statement, ast.Assign) else \
            [statement.target] if isinstance(statement, ast.AnnAssign) else []
        if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant) \
                and isinstance(following.value.value, str):
            docs.update({t.id: following.value.value for t in targets if isinstance(t, ast.Name)})
    return docs


def api_sources() -> dict[str, str]:
    """Where each name mtssl.api imports comes from (``from mtssl.interfaces import ModelName``)."""
    tree = ast.parse(Path(api.__file__).read_text())
    return {alias.asname or alias.name: node.module for node in tree.body
            if isinstance(node, ast.ImportFrom) for alias in node.names}


def undocumented_api_names() -> list[str]:
    missing, sources = [], api_sources()
    for name in [*api.__all__, "__version__"]:
        obj = getattr(api, name)
        if inspect.isclass(obj) or callable(obj) and typing.get_origin(obj) is None:
            documented = bool((inspect.getdoc(obj) or "").strip())
        else:  # a type alias or a constant: its docstring follows its assignment
            module = sources.get(name, api.__name__)
            documented = bool(attribute_docstrings(module).get(name, "").strip())
        if not documented:
            missing.append(name)
        if inspect.isclass(obj) and obj.__module__.startswith("mtssl"):
            missing += [f"{name}.{method}" for method, function in public_methods(obj)
                        if method != "__init__" and not (function.__doc__ or "").strip()]
    return missing


def test_every_public_name_of_the_api_has_a_docstring():
    assert undocumented_api_names() == []


def test_an_alias_without_its_docstring_is_found(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "attribute_docstrings", lambda module: {})
    assert {"ModelName", "Resample", "Reduce", "AugName", "__version__"} <= set(undocumented_api_names())


def test_every_hook_has_a_docstring():
    hooks = [value for name, value in vars(hookspecs).items() if name.startswith("register_")]
    assert sorted(hook.__name__ for hook in hooks) == sorted(HOOKS.values())  # one per component kind
    assert [hook.__name__ for hook in hooks if not (hook.__doc__ or "").strip()] == []


def commands(command: click.Command, path: tuple[str, ...] = ("mtssl",)):
    """Every command under the ``mtssl`` group, sub-groups walked (their commands are imported here)."""
    yield path, command
    if isinstance(command, click.Group):
        context = click.Context(command)
        for name in command.list_commands(context):
            yield from commands(command.get_command(context, name), (*path, name))


def undocumented_options(group: click.Command) -> list[str]:
    missing = []
    for path, command in commands(group):
        if not (command.help or command.short_help or "").strip():
            missing.append(" ".join(path))
        missing += [f"{' '.join(path)} {param.opts[0]}" for param in command.params
                    if isinstance(param, click.Option) and not (param.help or "").strip()]
    return missing


def test_every_command_and_option_has_help():
    walked = [" ".join(path) for path, _ in commands(main)]
    assert {"mtssl train", "mtssl eval", "mtssl bench grid", "mtssl data inspect"} <= set(walked)
    assert undocumented_options(main) == []


def test_an_option_without_help_is_found():
    @click.group()
    def group():
        """A group."""

    @group.command()
    @click.option("--size", type=int)
    def sub(size):
        """A command."""

    assert undocumented_options(group) == ["mtssl sub --size"]
