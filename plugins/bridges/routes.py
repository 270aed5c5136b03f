"""The default route of a first-party bridge: the one task of one kind into the one task of another."""
from __future__ import annotations

from typing import Callable, Mapping

from mtssl.api import Task

Kind = tuple[str, Callable[[Task], bool]]
"""A kind of task, as the error names it (``"decoder tasks"``), and the test that picks it."""


def only_route(bridge: str, tasks: Mapping[str, Task], source: Kind, target: Kind) -> tuple[str, str]:
    """``(source, target)`` when exactly one task of each kind is in the run; else one line asking for a route."""
    sources = [n for n, t in tasks.items() if source[1](t)]
    targets = [n for n, t in tasks.items() if target[1](t)]
    if len(sources) != 1 or len(targets) != 1:
        raise ValueError(f"bridge '{bridge}' cannot infer its route: give it as {bridge}:SRC->DST "
                         f"({source[0]}: {sources or 'none'}, {target[0]}: {targets or 'none'})")
    return sources[0], targets[0]


CLASSIFICATION: Kind = ("classification tasks", lambda task: task.target.categorical)
DECODER: Kind = ("decoder tasks", lambda task: task.target.spatial)
