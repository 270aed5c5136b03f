"""One backbone, one head per task, bridges between heads: one forward runs the backbone once over its batch.

An architecture (:class:`mtssl.interfaces.Architecture`) turns that pass into each task's pyramid: its rows
of the backbone's pyramid under hard sharing (the default), attended or mixed ones otherwise.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from mtssl.interfaces import Architecture, Backbone, Bridge, BridgeInputs, HeadInputs, Task
from mtssl.model.sharing import HardSharing


class MultiTaskModel(nn.Module):
    """Runs the backbone once over a concatenated batch and each head only on its own rows.

    ``rows`` maps a task name to the slice of the batch holding the images
    that task must predict. A decoder-style head therefore never touches the
    images of other tasks. Bridges get the source head's output on the
    target's rows and may differentiate it with respect to the input images.
    Bridges form a graph (``cls -> seg -> cls2``): a head that is a bridge
    source runs, on the target's rows, after the heads upstream of it and with
    its own bridge extras; a cycle is refused when the model is built.
    ``architecture`` gives each task its pyramid (default hard sharing);
    ``build_backbone`` builds a fresh encoder for architectures with several.
    """

    def __init__(self, backbone: Backbone, tasks: Mapping[str, Task], bridges: list[Bridge] = (),
                 architecture: Architecture | None = None, build_backbone: Callable[[], Backbone] | None = None):
        super().__init__()
        self.backbone = backbone
        self.tasks = dict(tasks)
        self.bridges = list(bridges)
        self._check_routes()
        self.architecture = architecture or HardSharing()
        self.architecture.setup(backbone, list(self.tasks), build_backbone or _no_second_backbone)
        self.order = bridge_order(list(self.tasks), self.bridges)
        self._into = {name: [b for b in self.bridges if b.target == name] for name in self.tasks}
        self._upstream = {name: upstream_tasks(name, self.order, self.bridges) for name in self.tasks}
        self._feeding = {name: [b for b in self.bridges if b.target in {name, *self._upstream[name]}]
                         for name in self.tasks}
        described = HeadInputs(tuple(backbone.channels), tuple(backbone.strides), {}, backbone.in_channels)
        for bridge in self.bridges:  # every bridge knows its route before its stride and channels are read
            bridge.setup(self.tasks[bridge.source], self.tasks[bridge.target], described)
        self._check_strides()
        self._representation: list[torch.Tensor] | None = None
        self.heads = nn.ModuleDict()
        self.head_inputs: dict[str, HeadInputs] = {}
        """What each task's head was built from (a strategy builds its auxiliary heads from the same)."""
        for name, task in self.tasks.items():
            extras: dict[int, int] = {}
            for bridge in self._into[name]:
                extras[bridge.stride] = extras.get(bridge.stride, 0) + bridge.extra_channels
            self.head_inputs[name] = HeadInputs(tuple(backbone.channels), tuple(backbone.strides), extras,
                                                backbone.in_channels)
            self.heads[name] = task.build_head(self.head_inputs[name])
        # the batch norms a bridge's input gradient would run through (backbone, the source head and every
        # head upstream of it), found once (not every forward)
        self._batch_norms = {b.source: [m for part in (backbone, self.architecture,
                                                       *(self.heads[t] for t in (*self._upstream[b.source], b.source)))
                                        for m in part.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
                             for b in self.bridges}

    @contextmanager
    def recording_representation(self) -> Iterator[list[torch.Tensor]]:
        """Collect, for the block, the shared representation of every architecture pass: the encoder outputs
        (:meth:`Architecture.encode`) that carry a gradient, as aliases that only the heads read (see
        :func:`_aliased`). A weighting that differentiates with respect to them instead of the encoder's
        parameters (MGDA-UB) gets them from the trainer."""
        self._representation = recorded = []
        try:
            yield recorded
        finally:
            self._representation = None

    def _check_routes(self) -> None:
        seen: dict[str, Bridge] = {}
        for bridge in self.bridges:
            for end in (bridge.source, bridge.target):
                if end not in self.tasks:
                    raise ValueError(
                        f"bridge '{bridge.name}' connects '{bridge.source}' -> '{bridge.target}', "
                        f"but task '{end}' is not in this run (tasks: {', '.join(self.tasks)})"
                    )
            if bridge.source == bridge.target:
                raise ValueError(f"bridge '{bridge.name}' connects task '{bridge.source}' to itself")
            first = seen.setdefault(bridge.name, bridge)
            if first is not bridge:
                raise ValueError(f"bridge '{bridge.name}' is given twice ({_route(first)} and {_route(bridge)}); "
                                 "a bridge may appear once per run (its state, maps and prediction files are "
                                 "keyed by its name)")

    def shared_parameters(self) -> list[nn.Parameter]:
        """The encoder every task's loss reaches: the backbone's parameters, then what the architecture shares."""
        return [*self.backbone.parameters(), *self.architecture.shared_parameters()]

    def _check_strides(self) -> None:
        for bridge in self.bridges:
            if bridge.stride not in self.backbone.strides:
                raise ValueError(f"bridge '{bridge.name}' injects at stride {bridge.stride}, but the backbone "
                                 f"offers strides {list(self.backbone.strides)}")

    def forward(self, images: torch.Tensor, rows: Mapping[str, slice] | None = None,
                maps: dict[str, torch.Tensor] | None = None,
                features: dict[str, list[torch.Tensor]] | None = None,
                extras: dict[str, dict[int, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
        """Return ``{task: output}`` for every task named in ``rows`` (all tasks, all rows by default).

        Each task's rows are a contiguous slice of the batch, so selecting its
        features is a view, not a copy. A head runs once per distinct slice:
        a source head on the target's rows is shared by every bridge (and task)
        that needs it there. Pass a dict as ``maps`` to receive the bridges'
        displayable maps (:meth:`Bridge.maps`) for the target's rows, named
        ``BRIDGE`` or ``BRIDGE.MAP``; training leaves it out. Pass a dict as
        ``features`` to receive each task's feature maps (its pyramid) on its rows, and one as ``extras`` to
        receive the bridge extras (``{stride: tensor}``, detached) its head got there, so that the head can
        run again on changed features (feature perturbation).
        """
        if rows is None:
            rows = {name: slice(0, images.shape[0]) for name in self.tasks}
        needs_grad = any(b.needs_input_grad for name, task_rows in rows.items() if _nonempty(task_rows)
                         for b in self._feeding[name])
        caller_grad = torch.is_grad_enabled()
        with torch.enable_grad() if needs_grad else nullcontext():
            if needs_grad and not images.requires_grad:
                images = images.detach().requires_grad_(True)
            run = _Pass(images, rows, maps, self._features(images))
            outputs = {name: self._head(name, task_rows, run) for name, task_rows in rows.items()}
            if features is not None:
                features.update({name: [f if caller_grad else f.detach() for f in run.features(name, task_rows)]
                                 for name, task_rows in rows.items()})
            if extras is not None:
                extras.update({name: run.extras.get((name, task_rows.start, task_rows.stop), {})
                               for name, task_rows in rows.items()})
        if not caller_grad:  # grad was enabled only for the bridges: hand back plain tensors, free the graph
            outputs = {name: out.detach() for name, out in outputs.items()}
        return outputs

    def _features(self, images: torch.Tensor, first_row: int = 0) -> "_Features":
        """One architecture pass over ``images`` (rows ``first_row`` on of the forward's batch)."""
        encoded = self.architecture.encode(self.backbone, images)
        if self._representation is not None:
            encoded = _aliased(encoded, self._representation)
        return _Features(self.architecture, encoded, images, first_row)

    def _head(self, name: str, rows: slice, run: "_Pass") -> torch.Tensor:
        """Task ``name``'s output on ``rows``, once per distinct slice.

        Its bridges' sources run first, on the same rows and with their own
        extras (depth first, so the heads run in topological order).
        """
        feats = run.features(name, rows)
        if not _nonempty(rows):  # nothing to decode: no bridge runs
            return self.heads[name](feats, {})
        key = (name, rows.start, rows.stop)
        if key not in run.done:
            run.extras[key] = self._extras(name, rows, run)
            run.done[key] = self.heads[name](feats, run.extras[key])
        return run.done[key]

    def _extras(self, name: str, rows: slice, run: "_Pass") -> dict[int, torch.Tensor]:
        """``{stride: extras}`` of the bridges into task ``name`` on ``rows``, concatenated in bridge order."""
        extras: dict[int, torch.Tensor] = {}
        for bridge in self._into[name]:
            source_output = self._bridge_source_output(bridge, rows, run)
            probabilities = self.tasks[bridge.source].probabilities(source_output)
            extra = bridge.compute(BridgeInputs(run.images, rows, source_output, probabilities)).detach()
            if run.maps is not None and run.rows.get(bridge.target) == rows:
                for key, value in bridge.maps(extra).items():
                    run.maps[bridge.name if key == bridge.name else f"{bridge.name}.{key}"] = value
            extras[bridge.stride] = extra if bridge.stride not in extras else torch.cat(
                [extras[bridge.stride], extra], dim=1)
        return extras

    def _bridge_source_output(self, bridge: Bridge, rows: slice, run: "_Pass") -> torch.Tensor:
        """The source head's output on the target's rows, as the bridge may differentiate it.

        A training-mode batch norm mixes the images of a pass, so an input
        gradient through it would make one image's saliency depend on the
        others. For such models the rows get a pass of their own (backbone and
        architecture, the source head and the heads upstream of it) with batch norms on
        their running statistics; per-image norms (the default encoder's
        instance norm) need nothing extra.
        """
        layers = [m for m in self._batch_norms[bridge.source] if m.training] if bridge.needs_input_grad else []
        if not layers:
            return self._head(bridge.source, rows, run)
        with _running_statistics(layers):
            own = _Pass(run.images, run.rows, None, self._features(run.images[rows], rows.start))
            return self._head(bridge.source, rows, own)


@dataclass
class _Features:
    """One architecture pass: ``encoded`` from ``images``, which are the forward's rows ``first_row`` on."""

    architecture: Architecture
    encoded: Any
    images: torch.Tensor
    first_row: int
    pyramids: dict[tuple[str, int, int], list[torch.Tensor]] = field(default_factory=dict)

    def of(self, task: str, rows: slice) -> list[torch.Tensor]:
        """Task ``task``'s pyramid on the forward's ``rows``, once per distinct slice."""
        key = (task, rows.start, rows.stop)
        if key not in self.pyramids:
            local = slice(rows.start - self.first_row, rows.stop - self.first_row)
            self.pyramids[key] = self.architecture.task_features(task, self.encoded, self.images, local)
        return self.pyramids[key]


@dataclass
class _Pass:
    """One forward's shared state: the input, the rows asked for, the maps wanted, the architecture's pass, the
    heads already run."""

    images: torch.Tensor
    rows: Mapping[str, slice]
    maps: dict[str, torch.Tensor] | None
    pass_features: _Features
    done: dict[tuple[str, int, int], torch.Tensor] = field(default_factory=dict)
    """``(task, start, stop) -> output``: a head runs once per distinct slice."""
    extras: dict[tuple[str, int, int], dict[int, torch.Tensor]] = field(default_factory=dict)
    """``(task, start, stop) -> {stride: extras}``: the bridge extras that head got."""

    def features(self, task: str, rows: slice) -> list[torch.Tensor]:
        return self.pass_features.of(task, rows)


def bridge_order(tasks: list[str], bridges: list[Bridge]) -> list[str]:
    """The tasks ordered so that every bridge's source precedes its target (stable: ties keep task order).

    A cycle cannot be ordered: it is refused naming its tasks and bridges.
    """
    order: list[str] = []
    remaining = list(tasks)
    while remaining:
        ready = [t for t in remaining if all(b.source in order for b in bridges if b.target == t)]
        if not ready:
            raise ValueError(_describe_cycle(remaining, bridges))
        order.append(ready[0])
        remaining.remove(ready[0])
    return order


def _describe_cycle(stuck: list[str], bridges: list[Bridge]) -> str:
    """``bridges form a cycle: a -> b -> a (bridges 'x', 'y')`` for a cycle among tasks that cannot be ordered.

    Every stuck task has a bridge from another stuck task, so walking such
    bridges backwards from any of them must come back to a task already seen.
    """
    path, via = [stuck[0]], []
    while True:
        bridge = next(b for b in bridges if b.target == path[-1] and b.source in stuck)
        via.append(bridge)
        if bridge.source in path:
            start = path.index(bridge.source)
            tasks = [bridge.source, *reversed(path[start:])]
            names = ", ".join(f"'{b.name}'" for b in reversed(via[start:]))
            return f"bridges form a cycle: {' -> '.join(tasks)} (bridges {names})"
        path.append(bridge.source)


def upstream_tasks(name: str, order: list[str], bridges: list[Bridge]) -> list[str]:
    """Every task whose head must run before ``name``'s on the same rows (its bridge ancestors), in ``order``."""
    found: set[str] = set()
    frontier = [name]
    while frontier:
        task = frontier.pop()
        for bridge in bridges:
            if bridge.target == task and bridge.source not in found:
                found.add(bridge.source)
                frontier.append(bridge.source)
    return [t for t in order if t in found]


def input_grad_tasks(tasks: list[str], bridges: list[Bridge]) -> set[str]:
    """Tasks whose rows run a bridge that differentiates with respect to the input, directly or upstream.

    A task downstream of a saliency bridge (``cls -> seg -> cls2``) runs it on
    its own rows too, so its rows belong in the input-gradient pass.
    """
    order = bridge_order(tasks, bridges)
    return {name for name in tasks for b in bridges if b.needs_input_grad
            and b.target in {name, *upstream_tasks(name, order, bridges)}}


def _route(bridge: Bridge) -> str:
    return f"{bridge.source}->{bridge.target}"


def _aliased(tree: Any, recorded: list[torch.Tensor]) -> Any:
    """``tree`` (an architecture's ``encoded``: tensors in lists and tuples) with every tensor that carries a
    gradient replaced by an alias of it (a view: no copy), appended to ``recorded``.

    Everything downstream reads the aliases, so the gradient of a loss with respect to an alias follows only
    what reads it (heads, task attention) and not the encoder's path from a shallow level to a deeper one:
    the partial derivative with respect to each level, which MGDA-UB needs, at the cost of the heads alone.
    """
    if isinstance(tree, torch.Tensor):
        if not tree.requires_grad:
            return tree
        alias = tree.view_as(tree)
        recorded.append(alias)
        return alias
    if isinstance(tree, (list, tuple)):
        return type(tree)(_aliased(item, recorded) for item in tree)
    return tree


@contextmanager
def _running_statistics(layers: list[nn.Module]) -> Iterator[None]:
    """Batch norms in eval mode for the block, so each image is normalised on its own."""
    for layer in layers:
        layer.eval()
    try:
        yield
    finally:
        for layer in layers:
            layer.train()


def _no_second_backbone() -> Backbone:
    raise ValueError("this model was built without a way to build a second backbone (pass build_backbone)")


def _nonempty(rows: slice) -> bool:
    return rows.stop > rows.start


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    """The model's input convention: uint8 ``[B, C, S, S]`` (or grey ``[B, S, S]``) -> float in [0, 1]."""
    x = images_u8.float().div_(255.0)
    return x if x.dim() == 4 else x.unsqueeze(1)
