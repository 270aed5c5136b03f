"""Named component registries with clash detection and did-you-mean errors."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator


class RegistryError(ValueError):
    """A name that is unknown, or claimed twice."""


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    distribution: str
    aliases: tuple[str, ...] = ()
    description: str = ""


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
        close = difflib.get_close_matches(name, available, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        listing = ", ".join(available) if available else "none registered"
        return f"unknown {self.kind} '{name}'.{hint} Available: {listing}."

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)
