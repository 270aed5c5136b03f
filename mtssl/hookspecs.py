"""Hook specifications: the plugin author's manual.

A plugin is a module (or object) with functions marked ``@hookimpl`` whose
names match the specs below. It is found through the ``mtssl`` entry-point
group of its distribution::

    [project.entry-points.mtssl]
    myplugin = "my_package.my_module"

Each ``register_*`` hook receives a ``register`` callable; call it once per
component::

    @hookimpl
    def register_tasks(register):
        register("depth", DepthTask, description="monocular depth regression")

``register(name, factory, *, aliases=(), description="")`` — ``factory`` is
called with ``name=...`` plus the user's ``key=value`` options and must return
an instance of the matching interface from :mod:`mtssl.api`. Registering a
name another plugin already holds is an error naming both plugins.
"""
from __future__ import annotations

import pluggy

PROJECT = "mtssl"
hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def register_backbones(register):
    """Register :class:`mtssl.api.Backbone` factories (called with ``in_channels=`` and options)."""


@hookspec
def register_tasks(register):
    """Register :class:`mtssl.api.Task` factories, e.g. a classification or segmentation task."""


@hookspec
def register_strategies(register):
    """Register :class:`mtssl.api.SSLStrategy` factories that turn unlabeled data into a loss."""


@hookspec
def register_bridges(register):
    """Register :class:`mtssl.api.Bridge` factories (called with ``source=``, ``target=`` and options)."""


@hookspec
def register_sources(register):
    """Register :class:`mtssl.api.Source` factories (called with ``path=`` when given, ``target=``, ``size=``, ``seed=`` and options)."""
