"""A run's training batches: one labeled and (with strategies) one unlabeled stream per task.

Streams are device-resident, or host-streamed for tasks beyond the
device-memory budget (:mod:`mtssl.data.placement`). The split behind them is
written to ``splits/TASK.json`` so a run says which images it trained on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch

from mtssl.data import placement
from mtssl.data.prepare import TaskArrays, task_seed
from mtssl.data.streams import BatchStream
from mtssl.interfaces import SSLStrategy, Task
from mtssl.run.rundir import RunDir


def tensor_targets(arrays, index: np.ndarray) -> torch.Tensor:
    """The targets of rows ``index`` as a host tensor."""
    return torch.from_numpy(np.ascontiguousarray(arrays.targets[index]))


def image_channels(data: Mapping[str, TaskArrays], configured: int | None) -> int:
    """The channels every task's images share (a run has one backbone, so one input width)."""
    found = {f"{name} ({part})": arrays.channels for name, task in data.items()
             for part, arrays in (("train", task.train), ("val", task.val)) if len(arrays)}
    widths = set(found.values())
    if len(widths) > 1:
        raise ValueError("the run's sources declare different image channels: "
                         + ", ".join(f"{k} {v}" for k, v in found.items()) + "; one backbone needs one")
    width = widths.pop() if widths else (configured or 1)
    if configured is not None and configured != width:
        raise ValueError(f"the config says channels = {configured}, but the sources yield {width}-channel images")
    return width


@dataclass
class Batches:
    """The streams of every task, and which tasks stream from the host."""

    labeled: dict[str, BatchStream] = field(default_factory=dict)
    unlabeled: dict[str, BatchStream] = field(default_factory=dict)
    streamed: set[str] = field(default_factory=set)


def stream_rows(data: TaskArrays, strategies: list[SSLStrategy]) -> tuple[np.ndarray, np.ndarray | None]:
    """A task's labeled rows and the rows its strategies see unlabeled (None without strategies)."""
    split = data.split
    if not strategies:
        return split.labeled, None
    # When the budget hides no label ('all'), the strategies still see every training image, without labels.
    hides_labels = len(np.setdiff1d(split.unlabeled, split.untargeted)) > 0
    return split.labeled, split.unlabeled if hides_labels else np.union1d(split.labeled, split.unlabeled)


def introduce_labels(tasks: Mapping[str, Task], data: Mapping[str, TaskArrays]) -> dict[str, np.ndarray | None]:
    """Show each task the targets of its labeled split (:meth:`Task.observe_labels`, e.g. class counts for
    balanced loss weights); return the draw weights each asks for its labeled stream (:meth:`Task.draw_weights`)."""
    found = {}
    for name, task in tasks.items():
        targets = np.asarray(data[name].train.targets[data[name].split.labeled])
        task.observe_labels(targets)
        weights = task.draw_weights(targets)
        if weights is not None:
            weights = np.asarray(weights, np.float64)
            if weights.shape != (len(targets),) or not np.isfinite(weights).all() or (weights < 0).any() \
                    or not weights.sum() > 0:
                raise ValueError(f"task '{name}': draw_weights must give one finite, non-negative weight per "
                                 f"labeled image ({len(targets)}), not all zero; got shape {weights.shape}")
        found[name] = weights
    return found


def build_batches(data: Mapping[str, TaskArrays], strategies: Mapping[str, list[SSLStrategy]], batch_size: int,
                  seed: int, device: torch.device, budget_mb: float | None, rank: int = 0, world: int = 1,
                  draw_weights: Mapping[str, np.ndarray | None] | None = None) -> Batches:
    """Seeded streams per task; tasks whose arrays exceed the device budget stream from the host.

    ``draw_weights`` (see :func:`introduce_labels`) turns a task's labeled stream into weighted draws.
    """
    rows = {name: stream_rows(task, strategies[name]) for name, task in data.items()}
    sizes = {}
    for name, task in data.items():
        labeled, pool = rows[name]
        per_image, per_target = task.train.images[:1].nbytes, task.train.targets[:1].nbytes
        sizes[name] = (len(labeled) + (0 if pool is None else len(pool))) * per_image + len(labeled) * per_target
    batches = Batches(streamed=placement.streamed_tasks(sizes, placement.budget_bytes(device, budget_mb)))
    for name, task in data.items():
        task_rng_seed = task_seed(seed, name)
        labeled, pool = rows[name]
        common = dict(batch_size=batch_size, device=device, streamed=name in batches.streamed, rank=rank, world=world)
        batches.labeled[name] = placement.make_stream(
            task.train.images, labeled, lambda r, d=task.train: tensor_targets(d, r), seed=task_rng_seed,
            weights=(draw_weights or {}).get(name), **common)
        if pool is not None:
            batches.unlabeled[name] = placement.make_stream(task.train.images, pool, None, seed=task_rng_seed + 1,
                                                            **common)
    return batches


def write_splits(run: RunDir, data: Mapping[str, TaskArrays]) -> None:
    """``splits/TASK.json``: the keys of each part and how many (and patient groups, and skipped files).

    ``no_target`` lists the training items that carry no target: they are
    unlabeled whatever the budget.
    """
    for name, task in data.items():
        keys = task.train.keys
        listing = {part: [keys[i] for i in getattr(task.split, part)] for part in ("labeled", "unlabeled")}
        listing["val"] = task.val.keys
        if len(task.split.excluded):
            listing["excluded"] = [keys[i] for i in task.split.excluded]
        if len(task.split.untargeted):  # also listed as unlabeled (or excluded, for a validation patient)
            listing["no_target"] = [keys[i] for i in task.split.untargeted]
        listing["counts"] = {part: len(listing.get(part, ())) for part in ("labeled", "unlabeled", "val",
                                                                            "excluded", "no_target")}
        if task.train.groups is not None:
            groups = task.train.groups
            listing["groups"] = {part: sorted({groups[i] for i in getattr(task.split, part)})
                                 for part in ("labeled", "unlabeled", "val")}
        listing["skipped"] = [s.as_dict() for s in task.skipped]
        run.write_json(f"splits/{name}.json", listing)
