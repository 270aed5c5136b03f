"""Name the plugin behind an exception: one line with the component, its plugin, where, and the error.

The plugin host records every component it builds (:func:`track`). When an
exception escapes, :func:`attribute` walks its traceback for the innermost
frame of plugin code: a method of a built component (its ``self``), or code
in a module a built component comes from (a task's head, a helper beside
it). The core's own frames (``mtssl.*``) never count, even when ``self`` is a
component, so the core's messages about the user's input stay the core's.

A ``ValueError`` whose message names its component (``"task 'depth': ..."``)
is the plugin talking to the user and is shown as it is, as are
:class:`~mtssl.data.errors.DataError` and ``OSError`` (a file to look at).
Any other exception from plugin code is a fault of that plugin: a
:class:`PluginFault`. Set ``MTSSL_DEBUG=1`` to see the full traceback too.

Free of torch, so the command line can import it at start-up.
"""
from __future__ import annotations

import os
import sys
import weakref
from types import FrameType, TracebackType
from typing import Any, Iterator

from mtssl.data.errors import DataError
from mtssl.registry import Entry

DEBUG_ENV = "MTSSL_DEBUG"
MESSAGES_TO_USER = (DataError, OSError)
"""Raised by plugin code, these describe the user's files, not a bug of the plugin."""


def debugging() -> bool:
    """``MTSSL_DEBUG=1``: show the traceback behind a one-line error."""
    return os.environ.get(DEBUG_ENV, "").lower() in {"1", "true", "yes"}


def component_text(entry: Entry) -> str:
    """``strategy 'entmin' of plugin 'entmin' (mtssl-demo-entropy)``; ``plugin 'x' (dist)`` for its code at large."""
    plugin = f"plugin '{entry.plugin}' ({entry.distribution})"
    return f"{entry.kind} '{entry.name}' of {plugin}" if entry.kind else plugin


def one_line(text: str) -> str:
    return " ".join(text.split())


def error_text(exc: BaseException) -> str:
    """``RuntimeError: message`` on one line (just the type when the message is empty)."""
    message = one_line(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class PluginFault(RuntimeError):
    """Plugin code raised (or returned something unusable): one line naming the component and where."""

    def __init__(self, entry: Entry, where: str, problem: str, location: str = ""):
        self.entry, self.where, self.problem, self.location = entry, where, problem, location
        at = f" ({location})" if location else ""
        super().__init__(f"{component_text(entry)} failed in {where}{at}: {problem}")


# -- which built component owns which object and module ---------------------------------------
_instances: dict[int, tuple[weakref.ref, Entry]] = {}
_modules: dict[str, dict[tuple[str, str, str, str], Entry]] = {}


def _identity(entry: Entry) -> tuple[str, str, str, str]:
    return entry.kind, entry.name, entry.plugin, entry.distribution


def _plugin(entry: Entry) -> tuple[str, str]:
    return entry.plugin, entry.distribution


def track(instance: Any, entry: Entry, factory: Any = None) -> None:
    """Remember that ``instance`` (built by ``factory``) is ``entry``'s, for :func:`attribute`.

    Its modules in the factory's package, and that package, are remembered too: code there (a head, a
    helper) is the component's, or at least its plugin's. Modules of other packages (torch, when a factory
    returns a torch module as it is) are not.
    """
    home = getattr(factory, "__module__", None) or type(instance).__module__
    package = home.split(".")[0]
    for module in dict.fromkeys((home, type(instance).__module__, package)):
        if module.split(".")[0] == package and not is_core(module):
            _modules.setdefault(module, {})[_identity(entry)] = entry
    try:
        ref = weakref.ref(instance, lambda _, key=id(instance): _instances.pop(key, None))
    except TypeError:  # no weak references (__slots__): its module still identifies it
        return
    _instances[id(instance)] = (ref, entry)


def entry_of(instance: Any) -> Entry | None:
    """The registry entry that built ``instance`` (None for objects the host did not build)."""
    found = _instances.get(id(instance))
    return found[1] if found is not None and found[0]() is instance else None


def is_core(module: str) -> bool:
    return module == "mtssl" or module.startswith("mtssl.")


def owner(frame: FrameType) -> Entry | None:
    """The component whose code ``frame`` runs: its ``self``, else its module (when only one component's)."""
    module = frame.f_globals.get("__name__", "")
    if is_core(module):
        return None
    entry = entry_of(frame.f_locals.get("self"))
    if entry is not None:
        return entry
    for key in dict.fromkeys((module, module.split(".")[0])):
        entry = _only(_modules.get(key, {}).values())
        if entry is not None:
            return entry
    return None


def _only(entries) -> Entry | None:
    """The one component among ``entries``; when several, all of one plugin: that plugin (``kind`` empty)."""
    entries = list(entries)
    plugins = {_plugin(e) for e in entries}
    if len(entries) == 1:
        return entries[0]
    if len(plugins) == 1:
        plugin, distribution = plugins.pop()
        return Entry("", "", "", plugin, distribution)
    return None


def _frames(tb: TracebackType | None) -> Iterator[tuple[FrameType, int]]:
    while tb is not None:
        yield tb.tb_frame, tb.tb_lineno
        tb = tb.tb_next


def location(frame: FrameType, line: int) -> str:
    return f"{os.path.basename(frame.f_code.co_filename)}:{line}"


def names_component(exc: BaseException, entry: Entry) -> bool:
    """Whether the message names its component (``task 'depth'``): a message the plugin meant for the user."""
    text = str(exc)
    return bool(entry.kind) and any(f"{entry.kind} '{key}'" in text for key in (entry.name, *entry.aliases))


def meant_for_user(exc: BaseException, entry: Entry) -> bool:
    return isinstance(exc, MESSAGES_TO_USER) or (isinstance(exc, ValueError) and names_component(exc, entry))


JUDGED = "_mtssl_meant_for_user"
"""Set on an exception already judged a message for the user where its component is known (its factory), so
that :func:`attribute` does not charge it to another component whose code lies on the same traceback."""


def attribute(exc: BaseException) -> PluginFault | None:
    """``exc`` as a :class:`PluginFault` of the component whose code raised it; None when no plugin did.

    "Where" is the outermost frame of that component's run of frames (the method the core called:
    ``plan``, ``loss``, ``compute``, ``forward``, ...); the location is the innermost (file:line). Code
    of a plugin that no one component owns is named after the component of that plugin that called it.
    """
    if isinstance(exc, PluginFault):
        return exc
    if getattr(exc, JUDGED, False):
        return None
    frames = [(frame, line, owner(frame)) for frame, line in _frames(exc.__traceback__)]
    owned = [i for i, (_, _, entry) in enumerate(frames) if entry is not None]
    if not owned:
        return None
    inner = owned[-1]
    entry = frames[inner][2]
    outer = inner
    for i in range(inner - 1, -1, -1):  # outwards, while the frames are this component's (or its plugin's)
        other = frames[i][2]
        if other is None:
            continue
        if _plugin(other) != _plugin(entry):
            break
        if not other.kind:  # the plugin's code of no one component: passed through
            continue
        if not entry.kind:
            entry = other  # plugin code called by one of the plugin's components: name the component
        if _identity(other) != _identity(entry):
            break
        outer = i
    if meant_for_user(exc, entry):
        return None
    fault = PluginFault(entry, frames[outer][0].f_code.co_name, error_text(exc), location(*frames[inner][:2]))
    fault.__cause__ = exc
    return fault


def factory_fault(entry: Entry, exc: BaseException) -> PluginFault | None:
    """A factory's exception as a fault in ``factory`` (None when it is a message for the user)."""
    if meant_for_user(exc, entry):
        setattr(exc, JUDGED, True)
        return None
    frames = [(frame, line) for frame, line in list(_frames(exc.__traceback__))[1:]  # [0]: the caller's frame
              if not is_core(frame.f_globals.get("__name__", ""))]
    fault = PluginFault(entry, "factory", error_text(exc), location(*frames[-1]) if frames else "")
    fault.__cause__ = exc
    return fault


def print_traceback(exc: BaseException) -> None:
    """The full traceback (the plugin's own, for a fault) on stderr, for ``MTSSL_DEBUG=1``."""
    import traceback

    traceback.print_exception(exc.__cause__ if isinstance(exc, PluginFault) and exc.__cause__ else exc,
                              file=sys.stderr)
