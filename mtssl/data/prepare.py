"""From a task's data settings to decoded arrays and a label-budget split."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from mtssl.config import TaskData
from mtssl.data.arrays import SourceArrays, decode_all
from mtssl.data.splits import Split, parse_budget, split_indices
from mtssl.interfaces import Source, Task
from mtssl.plugins import PluginHost
from mtssl.spec import parse_source

ProgressFactory = Callable[[str, int], Callable[[int], None]]


@dataclass
class TaskArrays:
    """A task's training arrays, how they split, and its validation arrays."""

    train: SourceArrays
    split: Split
    val: SourceArrays


def open_source(host: PluginHost, text: str, target_kind: str, seed: int, **extra) -> Source:
    """Instantiate a source from ``NAME[:PATH][:k=v]`` and check it serves the right target kind."""
    spec = parse_source(text)
    kwargs = dict(spec.options)
    kwargs.update(extra)
    if spec.path is not None:
        kwargs["path"] = spec.path
    source = host.create("source", spec.name, target=target_kind, seed=seed, **kwargs)
    if source.target_kind != target_kind:
        raise ValueError(f"source '{text}' provides {source.target_kind} targets, but the task needs {target_kind}")
    if len(source) == 0:
        raise ValueError(f"source '{text}' holds no images")
    return source


def load_arrays(source: Source, size: int, progress: ProgressFactory | None = None, label: str = "") -> SourceArrays:
    """Decode a whole source at ``size`` (the single place a cache plugs in)."""
    tick = progress(label or "decoding", len(source)) if progress else None
    return decode_all(source, size, tick)


def subset(arrays: SourceArrays, index: np.ndarray) -> SourceArrays:
    return SourceArrays(arrays.images[index], arrays.targets[index], [arrays.keys[i] for i in index],
                        arrays.target_kind, arrays.class_names)


def prepare_task_data(host: PluginHost, name: str, task: Task, data: TaskData, size: int, seed: int,
                      progress: ProgressFactory | None = None) -> TaskArrays:
    source = open_source(host, data.train, task.target_kind, seed)
    train = load_arrays(source, size, progress, f"{name}: {data.train}")
    budget = parse_budget(data.labels if data.labels is not None else task.default_labels)
    val_fraction = 0.0 if data.val else data.val_fraction
    labels = train.targets.tolist() if train.target_kind == "class" else None
    split = split_indices(len(train), budget, seed, val_fraction, labels, min_val=0 if data.val else 1)
    if data.val:
        val_source = open_source(host, data.val, task.target_kind, seed + 1)
        val = load_arrays(val_source, size, progress, f"{name} val: {data.val}")
    else:
        val = subset(train, split.val)
    return TaskArrays(train, split, val)
