"""Named component registries with clash detection and did-you-mean errors."""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator


class RegistryError(ValueError):
    """A name that is unknown, or claimed twice."""


def did_you_mean(name: str, choices) -> str:
    """`` Did you mean 'steps'?`` for the closest of ``choices`` to a mistyped ``name``, else ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def is_reference(factory: object) -> bool:
    """Whether ``factory`` is a ``"package.module:attribute"`` reference to import on first use."""
    if not isinstance(factory, str) or factory.count(":") != 1:
        return False
    module, attribute = factory.split(":")
    return all(part.isidentifier() for part in [*module.split("."), *attribute.split(".")])


@dataclass(frozen=True)
class Entry:
    """A registered component. ``factory`` is a callable, or a reference imported when first built.

    References let a plugin register without importing its implementation
    (and torch), so listing plugins and showing help stay fast.
    """

    kind: str
    name: str
    factory: Callable[..., Any] | str
    plugin: str
    distribution: str
    aliases: tuple[str, ...] = ()
    description: str = ""

    def resolve(self) -> Callable[..., Any]:
        """The factory itself, importing a reference; a broken one is an error naming the plugin."""
        if not isinstance(self.factory, str):
            return self.factory
        module, attribute = self.factory.split(":")
        try:
            found: Any = importlib.import_module(module)
            for part in attribute.split("."):
                found = getattr(found, part)
        except Exception as exc:  # noqa: BLE001 - any failure of a plugin's code is reported as the plugin's
            raise RegistryError(f"{self.kind} '{self.name}' of plugin '{self.plugin}' ({self.distribution}) "
                                f"could not be loaded from '{self.factory}': {type(exc).__name__}: {exc}") from exc
        if not callable(found):
            raise RegistryError(f"{self.kind} '{self.name}' of plugin '{self.plugin}' ({self.distribution}): "
                                f"'{self.factory}' is not callable")
        return found


@dataclass
class Registry:
    """Components of one kind (tasks, bridges, ...) keyed by name and alias."""

    kind: str
    _entries: dict[str, Entry] = field(default_factory=dict)
    _names: dict[str, str] = field(default_factory=dict)  # name or alias -> canonical name

    def add(self, entry: Entry) -> None:
        for key in (entry.name, *entry.aliases):
            if key in self._names:
                holder = self._entries[self._names[key]]
                raise RegistryError(
                    f"{self.kind} '{key}' is registered twice: by plugin '{holder.plugin}' "
                    f"({holder.distribution}) and by plugin '{entry.plugin}' ({entry.distribution})"
                )
        self._entries[entry.name] = entry
        for key in (entry.name, *entry.aliases):
            self._names[key] = entry.name

    def get(self, name: str) -> Entry:
        if name in self._names:
            return self._entries[self._names[name]]
        raise RegistryError(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        available = sorted(self._names)
        hint = did_you_mean(name, available)
        listing = ", ".join(available) if available else "none registered"
        return f"unknown {self.kind} '{name}'.{hint} Available: {listing}."

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)
