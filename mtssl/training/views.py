"""The views of one step: every stream drawn once, augmented as tasks and strategies ask.

A task always gets a weakly augmented labeled view; each of its strategies
plans more (:class:`~mtssl.interfaces.ViewRequest`): from the labeled or the
unlabeled stream, or made of an earlier view of the same strategy (``of=``)
so that, e.g., a strong photometric view keeps the geometry of the weak view
its pseudo-labels come from. :func:`plan_passes` then groups the views into
as few backbone passes as their gradients allow.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from mtssl.training.augment import Augmenter
from mtssl.data.streams import BatchStream
from mtssl.interfaces import Bridge, SSLStrategy, Task
from mtssl.model.network import input_grad_tasks, to_float
from mtssl.targets import TargetSpec, known_mask


@dataclass
class View:
    """One block of the concatenated batch: a task's view with its target (if any)."""

    task: str
    key: str
    images: torch.Tensor
    target: torch.Tensor | None = None
    grad: bool = True
    model: str = "student"
    features: bool = False  # the strategy asked for the backbone's features of this view


class ViewBuilder:
    """Draws the task streams and augments them into the step's views."""

    def __init__(self, tasks: Mapping[str, Task], strategies: Mapping[str, list[SSLStrategy]],
                 augmenter: Augmenter, labeled: Mapping[str, BatchStream], unlabeled: Mapping[str, BatchStream]):
        self.tasks, self.strategies, self.augmenter = tasks, strategies, augmenter
        self.labeled, self.unlabeled = labeled, unlabeled

    def augment(self, images: torch.Tensor, kind: str, target: torch.Tensor | None,
                spec: TargetSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One view of ``images``; a spatial target moves with it and keeps its declared dtype."""
        if not spec.spatial or target is None:
            return self.augmenter(images, kind)[0], target
        if spec.missing is not None:
            return self.augment_partly_known(images, kind, target, spec)
        moved_images, moved = self.augmenter(images, kind, target.float(), spec.resample)
        if torch.empty((), dtype=target.dtype).is_floating_point():
            return moved_images, moved.to(target.dtype)
        return moved_images, moved.round().to(target.dtype)

    def augment_partly_known(self, images: torch.Tensor, kind: str, target: torch.Tensor,
                             spec: TargetSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """A map with missing pixels: which pixels are known moves with it, so the border a rotation or shift
        brings in (filled with 0) and a NaN blended by resampling come out missing, never as a label."""
        known = known_mask(target, spec)
        filled = torch.where(known, target, torch.zeros((), dtype=target.dtype, device=target.device)).float()
        moved_images, moved = self.augmenter(images, kind, torch.cat([filled, known.float()], dim=1), spec.resample)
        values, still_known = moved.split(target.shape[1], dim=1)
        if not torch.empty((), dtype=target.dtype).is_floating_point():
            values = values.round()
        missing = torch.full_like(values, float(spec.missing))
        return moved_images, torch.where(still_known > 0.999, values, missing).to(target.dtype)

    def gather(self) -> list[View]:
        """Draw every stream once and build every requested view, grouped by task."""
        views: list[View] = []
        for name, task in self.tasks.items():
            spec = task.target
            images, target = self.labeled[name].next()
            labeled_images = to_float(images)
            x, t = self.augment(labeled_images, "weak", target, spec)
            views.append(View(name, "labeled", x, t))
            if not self.strategies[name]:
                continue
            unlabeled_images = to_float(self.unlabeled[name].next()[0])
            for strategy in self.strategies[name]:
                views.extend(self._strategy_views(name, strategy, spec, labeled_images, target, unlabeled_images))
        return views

    def _strategy_views(self, name: str, strategy: SSLStrategy, spec: TargetSpec, labeled_images: torch.Tensor,
                        target: torch.Tensor, unlabeled_images: torch.Tensor) -> list[View]:
        built: dict[str, View] = {}
        for request in strategy.plan():
            if request.of is not None:
                if request.of not in built:
                    raise ValueError(f"strategy '{strategy.name}': view '{request.key}' is made of view "
                                     f"'{request.of}', which it does not plan before it")
                base = built[request.of]
                xv, tv = self.augment(base.images, request.aug, base.target, spec)
            elif request.stream == "labeled":
                xv, tv = self.augment(labeled_images, request.aug, target, spec)
            else:
                xv, tv = self.augment(unlabeled_images, request.aug, None, spec)
            built[request.key] = View(name, f"{strategy.name}/{request.key}", xv, tv,
                                      request.grad and request.model != "teacher", request.model, request.features)
        return list(built.values())


def plan_passes(views: list[View], bridges: list[Bridge]) -> list[list[View]]:
    """Group views into as few backbone passes as the gradients they need allow.

    Views that only make targets (``grad=False``) go through one pass
    without autograd. Rows that a bridge differentiates with respect to the
    input get a pass of their own, so that input-gradient backward covers
    only them. The teacher and the peer are other networks: passes of their
    own. Everything else shares one pass; instance norm keeps images
    independent, so grouping does not change any output.
    """
    tasks = list(dict.fromkeys([*(v.task for v in views), *(end for b in bridges for end in (b.source, b.target))]))
    differentiated = input_grad_tasks(tasks, bridges)  # downstream of an input-gradient bridge too
    groups: dict[tuple[bool, bool, str], list[View]] = {}
    for view in views:
        groups.setdefault((view.grad, view.grad and view.task in differentiated, view.model), []).append(view)
    return list(groups.values())
