"""The one plugin manager: loads the ``mtssl`` entry points and fills the registries.

First-party components are entry points of this distribution, so they load
through exactly the path a third-party package uses. A plugin that fails to
import, misspells a hook or raises while registering (even ``SystemExit``) is
reported by name and disabled as a whole, and every other plugin still loads;
a component claiming a name another plugin already holds is disabled alone,
naming both plugins. First-party plugins load first, so they win clashes.
Set ``MTSSL_PLUGINS_STRICT=1`` to make any of that fatal while debugging.
Components the host builds are recorded, so an exception from their code
later names them (:mod:`mtssl.plugin_faults`).
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
from mtssl.plugin_faults import factory_fault, track
from mtssl.registry import Entry, Registry, RegistryError, is_reference

STRICT_ENV = "MTSSL_PLUGINS_STRICT"
ALLOW_ENV = "MTSSL_PLUGINS"

HOOKS = {
    "backbone": "register_backbones",
    "task": "register_tasks",
    "strategy": "register_strategies",
    "bridge": "register_bridges",
    "source": "register_sources",
    "logger": "register_loggers",
    "weighting": "register_weightings",
    "architecture": "register_architectures",
}


class PluginError(RuntimeError):
    """A plugin could not be loaded (raised only in strict mode)."""


@dataclass(frozen=True)
class PluginFailure:
    plugin: str
    distribution: str
    error: str
    detail: str = ""
    component: str = ""
    """``task 'depth'`` when only that component was disabled (a name clash), else the whole plugin was."""


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    hooks: list[str] = field(default_factory=list)


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "").lower() in {"1", "true", "yes"}


FIRST_PARTY = "mtssl"
"""Distribution whose plugins load first, so they win any name clash."""


def _distribution(ep: EntryPoint) -> str:
    return ep.dist.name if ep.dist else "?"


def _allowed() -> set[str] | None:
    raw = os.environ.get(ALLOW_ENV)
    return None if raw is None else {n.strip() for n in raw.split(",") if n.strip()}


class PluginHost:
    """Owns the pluggy manager, the loaded plugins, their failures and the registries.

    Plugins load first-party first (distribution ``mtssl``), then the others
    by entry-point name. A plugin whose import or register hook fails (any
    exception, SystemExit included; Ctrl-C still stops) registers nothing and
    is listed in ``failures``; a component claiming a name (or alias) an
    earlier one holds is left out alone, and the plugin's other components load.
    """

    def __init__(self, extra_plugins: Iterable[tuple[str, Any]] = (), load_entry_points: bool = True):
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.failures: list[PluginFailure] = []
        self.registries = {kind: Registry(kind) for kind in HOOKS}
        if load_entry_points:
            allowed = _allowed()
            chosen = [ep for ep in entry_points(group=hookspecs.PROJECT) if allowed is None or ep.name in allowed]
            for ep in sorted(chosen, key=lambda e: (_distribution(e) != FIRST_PARTY, e.name)):
                self._load_entry_point(ep)
        for name, obj in extra_plugins:
            self._register(name, obj, distribution="(in-process)", version="")
        for name in list(self.plugins):
            self._collect(self.plugins[name])

    # -- loading ---------------------------------------------------------
    def _load_entry_point(self, ep: EntryPoint) -> None:
        dist = _distribution(ep)
        version = ep.dist.version if ep.dist else ""
        if ep.name in self.plugins:
            self._fail(ep.name, dist, f"plugin name '{ep.name}' is also used by "
                       f"{self.plugins[ep.name].distribution}; disabled")
            return
        try:
            obj = ep.load()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - even SystemExit at import must not stop the CLI
            self._fail(ep.name, dist, f"failed to import '{ep.value}': {type(exc).__name__}: {exc}",
                       traceback.format_exc())
            return
        self._register(ep.name, obj, dist, version)

    def _register(self, name: str, obj: Any, distribution: str, version: str) -> None:
        if name in self.plugins:
            self._fail(name, distribution, f"plugin name '{name}' is also used by "
                       f"{self.plugins[name].distribution}; disabled")
            return
        try:
            self.manager.register(obj, name=name)
            self.manager.check_pending()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001
            if self.manager.is_registered(obj):
                self.manager.unregister(obj)
            self._fail(name, distribution, f"invalid plugin: {exc}", traceback.format_exc())
            return
        hooks = sorted(h.name for h in self.manager.get_hookcallers(obj) or [])
        self.plugins[name] = PluginInfo(name, distribution, version, hooks)

    def _fail(self, name: str, distribution: str, error: str, detail: str = "", component: str = "") -> None:
        if _strict():
            raise PluginError(f"plugin '{name}' ({distribution}): {error}")
        self.failures.append(PluginFailure(name, distribution, error, detail, component))

    def _disable(self, info: PluginInfo, error: str, detail: str = "") -> None:
        """Take a plugin out entirely (nothing of it stays registered) and report why."""
        self.plugins.pop(info.name, None)
        plugin = self.manager.get_plugin(info.name)
        if plugin is not None:
            self.manager.unregister(plugin, name=info.name)
        self._fail(info.name, info.distribution, error, detail)

    def _collect(self, info: PluginInfo) -> None:
        """Run one plugin's register hooks into a staging list; commit it unless a hook raised.

        A staged component whose name clashes is left out alone (see :meth:`_clash`).
        """
        staged: list[Entry] = []
        for kind, hook_name in HOOKS.items():
            caller = getattr(self.manager.hook, hook_name)
            for impl in caller.get_hookimpls():
                if impl.plugin_name != info.name:
                    continue
                try:
                    impl.function(register=self._registrar(kind, info, staged))
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:  # noqa: BLE001 - a plugin must not take the CLI down
                    self._disable(info, f"{hook_name} raised {type(exc).__name__}: {exc}; nothing of it is "
                                        "registered", traceback.format_exc())
                    return
        for entry in staged:
            clash = self._clash(entry)
            if clash:
                self._fail(info.name, info.distribution, clash, component=f"{entry.kind} '{entry.name}'")
            else:
                self.registries[entry.kind].add(entry)

    def _clash(self, entry: Entry) -> str | None:
        """Why ``entry`` cannot be registered: its name or an alias is taken (naming both plugins), or None."""
        registry = self.registries[entry.kind]
        for key in dict.fromkeys((entry.name, *entry.aliases)):
            if key in registry:
                holder = registry.get(key)
                taken = ("is registered twice by that plugin" if holder.plugin == entry.plugin else
                         f"is already registered by plugin '{holder.plugin}' ({holder.distribution})")
                return (f"{entry.kind} '{key}' {taken}; {entry.kind} '{entry.name}' of plugin '{entry.plugin}' "
                        f"({entry.distribution}) is disabled, its other components load")
        return None

    def _registrar(self, kind: str, info: PluginInfo, staged: list[Entry]):
        def register(name: str, factory, *, aliases: Iterable[str] = (), description: str = "") -> None:
            if not isinstance(name, str) or not name:
                raise TypeError(f"{kind} name must be a non-empty string, got {name!r}")
            if not (callable(factory) or is_reference(factory)):
                raise TypeError(f"{kind} '{name}' factory is neither callable nor a 'package.module:attribute' "
                                f"reference: {factory!r}")
            staged.append(Entry(kind, name, factory, info.name, info.distribution, tuple(aliases), description))

        return register

    # -- lookup ----------------------------------------------------------
    def registry(self, kind: str) -> Registry:
        return self.registries[kind]

    def create(self, kind: str, name: str, **kwargs: Any) -> Any:
        """Instantiate a registered component and record it (:func:`mtssl.plugin_faults.track`).

        Options that do not fit the factory's signature are the user's mistake, named as such; anything
        else the factory raises is a :class:`~mtssl.plugin_faults.PluginFault` naming the plugin, unless
        it is a message for the user (a ``ValueError`` naming the component, a ``DataError``).
        """
        entry = self.registries[kind].get(name)
        factory = entry.resolve()
        try:
            instance = factory(name=entry.name, **kwargs)
        except Exception as exc:
            if isinstance(exc, TypeError) and exc.__traceback__.tb_next is None:  # binding the call failed
                raise RegistryError(f"{kind} '{name}' rejected its options {sorted(kwargs)}: {exc}") from exc
            fault = factory_fault(entry, exc)
            if fault is None:
                raise
            raise fault from exc
        track(instance, entry, factory)
        return instance
