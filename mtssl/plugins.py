"""The one plugin manager: loads the ``mtssl`` entry points and fills the registries.

First-party components are entry points of this distribution, so they load
through exactly the path a third-party package uses. A plugin that fails to
import, misspells a hook, or raises while registering is reported by name and
skipped; set ``MTSSL_PLUGINS_STRICT=1`` to make that fatal while debugging.
``MTSSL_PLUGINS=a,b`` loads only the named entry points.
"""
from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Iterable

import pluggy

from mtssl import hookspecs
from mtssl.registry import Entry, Registry, RegistryError

STRICT_ENV = "MTSSL_PLUGINS_STRICT"
ALLOW_ENV = "MTSSL_PLUGINS"

HOOKS = {
    "backbone": "register_backbones",
    "task": "register_tasks",
    "strategy": "register_strategies",
    "bridge": "register_bridges",
    "source": "register_sources",
    "logger": "register_loggers",
}


class PluginError(RuntimeError):
    """A plugin could not be loaded (raised only in strict mode)."""


@dataclass(frozen=True)
class PluginFailure:
    plugin: str
    distribution: str
    error: str
    detail: str = ""


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    hooks: list[str] = field(default_factory=list)


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "").lower() in {"1", "true", "yes"}


def _allowed() -> set[str] | None:
    raw = os.environ.get(ALLOW_ENV)
    return None if raw is None else {n.strip() for n in raw.split(",") if n.strip()}


class PluginHost:
    """Owns the pluggy manager, the loaded plugins, their failures and the registries."""

    def __init__(self, extra_plugins: Iterable[tuple[str, Any]] = (), load_entry_points: bool = True):
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.failures: list[PluginFailure] = []
        self.registries = {kind: Registry(kind) for kind in HOOKS}
        if load_entry_points:
            allowed = _allowed()
            for ep in sorted(entry_points(group=hookspecs.PROJECT), key=lambda e: e.name):
                if allowed is None or ep.name in allowed:
                    self._load_entry_point(ep)
        for name, obj in extra_plugins:
            self._register(name, obj, distribution="(in-process)", version="")
        self._collect()

    # -- loading ---------------------------------------------------------
    def _load_entry_point(self, ep: EntryPoint) -> None:
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else ""
        if ep.name in self.plugins:
            self._fail(ep.name, dist, f"plugin name '{ep.name}' is also used by "
                       f"{self.plugins[ep.name].distribution}")
            return
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import error must be reported, not raised
            self._fail(ep.name, dist, f"failed to import '{ep.value}': {type(exc).__name__}: {exc}",
                       traceback.format_exc())
            return
        self._register(ep.name, obj, dist, version)

    def _register(self, name: str, obj: Any, distribution: str, version: str) -> None:
        try:
            self.manager.register(obj, name=name)
            self.manager.check_pending()
        except Exception as exc:  # noqa: BLE001
            if self.manager.is_registered(obj):
                self.manager.unregister(obj)
            self._fail(name, distribution, f"invalid plugin: {exc}", traceback.format_exc())
            return
        hooks = sorted(h.name for h in self.manager.get_hookcallers(obj) or [])
        self.plugins[name] = PluginInfo(name, distribution, version, hooks)

    def _fail(self, name: str, distribution: str, error: str, detail: str = "") -> None:
        if _strict():
            raise PluginError(f"plugin '{name}' ({distribution}): {error}")
        self.failures.append(PluginFailure(name, distribution, error, detail))

    def _collect(self) -> None:
        for kind, hook_name in HOOKS.items():
            caller = getattr(self.manager.hook, hook_name)
            for impl in caller.get_hookimpls():
                info = self.plugins[impl.plugin_name]
                register = self._registrar(kind, info)
                try:
                    impl.function(register=register)
                except RegistryError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    self._fail(info.name, info.distribution,
                               f"{hook_name} raised {type(exc).__name__}: {exc}", traceback.format_exc())

    def _registrar(self, kind: str, info: PluginInfo):
        registry = self.registries[kind]

        def register(name: str, factory, *, aliases: Iterable[str] = (), description: str = "") -> None:
            if not callable(factory):
                raise TypeError(f"{kind} '{name}' factory is not callable")
            registry.add(Entry(kind, name, factory, info.name, info.distribution, tuple(aliases), description))

        return register

    # -- lookup ----------------------------------------------------------
    def registry(self, kind: str) -> Registry:
        return self.registries[kind]

    def create(self, kind: str, name: str, **kwargs: Any) -> Any:
        """Instantiate a registered component; option errors name the component."""
        entry = self.registries[kind].get(name)
        try:
            return entry.factory(name=entry.name, **kwargs)
        except TypeError as exc:
            raise RegistryError(f"{kind} '{name}' rejected its options {sorted(kwargs)}: {exc}") from exc
