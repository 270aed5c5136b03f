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
an instance of the matching interface from :mod:`mtssl.api`. It may also be a
reference, ``"my_package.depth:DepthTask"``, imported only when the component
is first built: a plugin module that registers references and imports nothing
heavy keeps ``mtssl plugins`` and ``--help`` fast (mtssl's own plugins do
this, in ``mtssl_plugins.catalog``). Registering a name another plugin already
holds is an error naming both plugins.

Targets are declared, never assumed. A task sets ``target`` to a
:class:`mtssl.api.TargetSpec` — e.g. ``TargetSpec("depth", "float32", (1,),
spatial=True, resample="bilinear")`` for a depth map, or
``TargetSpec("findings", "float32", (14,))`` for multi-label findings — and a
source sets the same attribute for what it yields (it is created with
``target=`` the task's spec, so a source serving several kinds can pick). The
core refuses a source whose spec does not agree with the task's, and moves,
caches and augments targets only as the spec says. A strategy's
``serves(target)`` says which specs it can train. ``examples/ctr-plugin`` is a
complete task package built this way.
"""
from __future__ import annotations

import pluggy

PROJECT = "mtssl"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)  # re-exported by mtssl.api; defined here so it imports no torch
"""Marks a plugin's ``register_*`` functions (``@hookimpl``); import it from :mod:`mtssl.api`."""


@hookspec
def register_backbones(register):
    """Register :class:`mtssl.api.Backbone` factories (called with ``in_channels=`` and options)."""


@hookspec
def register_tasks(register):
    """Register :class:`mtssl.api.Task` factories, e.g. a classification or segmentation task."""


@hookspec
def register_strategies(register):
    """Register :class:`mtssl.api.SSLStrategy` factories that turn unlabeled data into a loss.

    A strategy plans views (:class:`mtssl.api.ViewRequest`) and scores their outputs; it never runs
    the model. Beyond views, the core offers it, on request:

    * an EMA teacher: ``teacher_decay()`` returns the decay; views planned with ``model="teacher"``
      run through the teacher without autograd. The trainer updates it after every optimizer step
      (``a = min(decay, 1 - 1/(updates+1))``) and checkpoints it (:mod:`mtssl.training.teacher`);
    * a second network for cross pseudo supervision: ``needs_peer()`` returns True; views planned
      with ``model="peer"`` run through an independently initialised copy of the model that the
      optimizer trains alongside it and the checkpoint keeps;
    * persistent state (class-wise statistics, adaptive thresholds): tensors returned by
      ``state_dict()`` are saved with the run state and handed back to ``load_state_dict()`` on
      ``--resume``;
    * geometry-aligned views for dense targets: ``ViewRequest("strong", aug="strong_photometric",
      of="weak")`` augments the weak view's images with photometric operations only, so a
      pixel-wise pseudo-label from the weak view lines up with the strong view;
    * a view's backbone features (``ViewRequest(..., features=True)``) and the task's head, or a head
      of its own, run again on changed features (``StrategyInputs.head``);
    * trainable modules of its own (auxiliary decoders): ``modules(task, inputs)`` returns them; the
      optimizer trains them and the run state keeps them.
    """


@hookspec
def register_weightings(register):
    """Register :class:`mtssl.api.Weighting` factories that combine the per-task losses into one signal.

    Chosen with ``mtssl train --weighting NAME[:key=value]`` (config key ``weighting``); ``equal`` (the
    plain sum) is the default. A weighting may learn parameters (``parameters()`` join the optimizer,
    ``state_dict()`` the checkpoint) and may take over the backward pass to edit per-task gradients
    on the shared encoder (``backward``, with ``needs_task_gradients = True``).
    """


@hookspec
def register_architectures(register):
    """Register :class:`mtssl.api.Architecture` factories: how the tasks share the encoder.

    Chosen with ``mtssl train --architecture NAME[:key=value]`` (config key ``architecture``); ``shared``
    (hard parameter sharing: every task reads the backbone's pyramid) is the default. An architecture hands
    each task a pyramid with the backbone's channels and strides, so every head and bridge fits it; it may
    add task-specific modules (attention, gates) and further encoders (``build_backbone()`` in ``setup``),
    which the optimizer trains and the checkpoint keeps. ``shared_parameters()`` says which of its
    parameters gradient weightings treat as the shared encoder's.
    """


@hookspec
def register_bridges(register):
    """Register :class:`mtssl.api.Bridge` factories (called with ``source=``, ``target=`` and options)."""


@hookspec
def register_sources(register):
    """Register :class:`mtssl.api.Source` factories.

    Called with ``path=`` when given, ``target=`` (the task's :class:`~mtssl.api.TargetSpec`), ``seed=``
    and the user's options. The source sets ``target`` (what it yields), ``channels`` (image channels)
    and, where it knows patients, answers ``groups()`` so splits keep each patient on one side.
    """


@hookspec
def register_loggers(register):
    """Register :class:`mtssl.api.Logger` factories that send a run's numbers and images to a tracking tool.

    A logger is enabled by name (``mtssl train --log NAME`` or the ``log`` config key) and receives every
    step's scalars and every validation. The metrics JSONL file in the run directory is written either way.
    """
