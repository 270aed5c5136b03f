"""From a task's data settings to decoded arrays and a label-budget split."""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mtssl.run.config import TaskData
from mtssl.data.arrays import SourceArrays, decode_all
from mtssl.data.cache import cached_arrays, is_cacheable
from mtssl.data.errors import DataError, Skipped
from mtssl.data.splits import Split, parse_budget, split_indices
from mtssl.interfaces import Source, Task
from mtssl.targets import TargetSpec
from mtssl.plugins import PluginHost
from mtssl.spec import parse_source

ProgressFactory = Callable[[str, int], Callable[[int], None]]
NO_CACHE = "off"
"""``cache_dir`` value that turns caching off (decode into memory every run)."""


def task_seed(config_seed: int, task: str) -> int:
    """The seed of a task's sources and split: fixed by the run's seed and the task's name.

    Keyed by name, not position, so a task sees the same split alone as in
    any multi-task run with the same seed: single- and multi-task results
    are paired.
    """
    return (config_seed * 1_000_003 + zlib.crc32(task.encode())) % 2**31


@dataclass
class TaskArrays:
    """A task's training arrays, how they split, and its validation arrays."""

    train: SourceArrays
    split: Split
    val: SourceArrays
    remarks: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> list[Skipped]:
        """Bad items left out of this task's data (train and a separate validation source)."""
        return [*self.train.skipped, *self.val.skipped]


def open_source(host: PluginHost, text: str, target: TargetSpec, seed: int, skip_bad: bool = False,
                **extra) -> Source:
    """Instantiate a source from ``NAME[:PATH][:k=v]`` and check it serves the task's targets.

    The source is told the target the task declares (a source that can serve
    several picks by it) and must declare what it yields; the two must agree.
    Bad files the source found while listing stop here unless ``skip_bad``.
    """
    spec = parse_source(text)
    kwargs = dict(spec.options)
    kwargs.update(extra)
    if spec.path is not None:
        kwargs["path"] = spec.path
    source = host.create("source", spec.name, target=target, seed=seed, **kwargs)
    check_source_target(source, target, text)
    problems = list(source.problems())
    if problems and not skip_bad:
        first = problems[0]
        more = f"; {len(problems) - 1} more bad item(s)" if len(problems) > 1 else ""
        raise DataError(getattr(first, "path", text), f"{getattr(first, 'problem', first)} "
                                                      f"(source '{text}'{more}; --skip-bad leaves them out)")
    if len(source) == 0:
        skipped = f" ({len(problems)} bad item(s) skipped)" if problems else ""
        raise ValueError(f"source '{text}' holds no images{skipped}")
    return source


def check_source_target(source: Source, target: TargetSpec, text: str) -> None:
    """The source's declared targets must be the task's; the error names both."""
    provided = getattr(source, "target", None)
    if not isinstance(provided, TargetSpec):
        raise ValueError(f"source '{text}' declares no target (its class must set `target` to a TargetSpec)")
    if not target.agrees(provided):
        hint = ""
        if provided.spatial and target.spatial and provided.kind == target.kind:
            names = f" ({', '.join(source.class_names)})" if source.class_names else ""
            hint = f"; the source yields {provided.channels} channel(s){names}: set the task's channels to match"
        raise ValueError(f"source '{text}' provides {provided.describe()}, but the task needs "
                         f"{target.describe()}{hint}")
    if not isinstance(source.channels, int) or source.channels < 1:
        raise ValueError(f"source '{text}' declares {source.channels!r} image channels; expected a positive int")


def listing_skips(source: Source) -> list[Skipped]:
    return [Skipped.of(p) if isinstance(p, DataError) else Skipped(str(p), "bad item") for p in source.problems()]


def load_arrays(source: Source, size: int, progress: ProgressFactory | None = None, label: str = "",
                cache_dir: str | Path | None = None, skip_bad: bool = False) -> SourceArrays:
    """Decode a whole source at ``size``, through the on-disk cache for file sources.

    The result's ``skipped`` lists every bad item left out, from listing and from decoding.
    """
    if is_cacheable(source) and str(cache_dir) != NO_CACHE:
        arrays = cached_arrays(source, size, cache_dir, progress, label, skip_bad)
    else:
        tick = progress(label or "decoding", len(source)) if progress else None
        arrays = decode_all(source, size, tick, skip_bad)
    arrays.skipped = listing_skips(source) + arrays.skipped
    if len(arrays) == 0:
        raise ValueError(f"{label or 'source'}: every item was bad ({len(arrays.skipped)} skipped)")
    return arrays


def subset(arrays: SourceArrays, index) -> SourceArrays:
    groups = None if arrays.groups is None else [arrays.groups[i] for i in index]
    return SourceArrays(arrays.images[index], arrays.targets[index], [arrays.keys[i] for i in index],
                        arrays.target, arrays.class_names, groups=groups)


def prepare_task_data(host: PluginHost, name: str, task: Task, data: TaskData, size: int, seed: int,
                      progress: ProgressFactory | None = None, cache_dir: str | Path | None = None,
                      skip_bad: bool = False) -> TaskArrays:
    source = open_source(host, data.train, task.target, seed, skip_bad)
    train = load_arrays(source, size, progress, f"{name}: {data.train}", cache_dir, skip_bad)
    budget = parse_budget(data.labels if data.labels is not None else task.default_labels)
    val_fraction = 0.0 if data.val else data.val_fraction
    labels = train.targets.tolist() if train.target.categorical else None
    try:
        split = split_indices(len(train), budget, seed, val_fraction, labels, min_val=0 if data.val else 1,
                              groups=train.groups)
    except ValueError as exc:
        raise ValueError(f"{name}: source '{data.train}': {exc}") from exc
    if data.val:
        val_source = open_source(host, data.val, task.target, seed + 1, skip_bad)
        val = load_arrays(val_source, size, progress, f"{name} val: {data.val}", cache_dir, skip_bad)
        if train.class_names and val.class_names and train.class_names != val.class_names:
            raise ValueError(f"{name}: validation source '{data.val}' has classes {', '.join(val.class_names)} "
                             f"but the training source has {', '.join(train.class_names)}")
    else:
        val = subset(train, split.val)
    remarks = [*source.remarks(), *(val_source.remarks() if data.val else ())]
    return TaskArrays(train, split, val, list(remarks))


def data_summary(data: dict[str, TaskArrays]) -> list[str]:
    """One line per task that lost items: how many were skipped as bad, and why some were left out."""
    lines = []
    for name, arrays in data.items():
        if arrays.skipped:
            reasons: dict[str, int] = {}
            for item in arrays.skipped:
                kind = item.reason.split(":")[0].split(" (")[0]
                reasons[kind] = reasons.get(kind, 0) + 1
            detail = "; ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
            lines.append(f"{name}: skipped {len(arrays.skipped)} bad item(s) ({detail})")
        lines.extend(f"{name}: {remark}" for remark in arrays.remarks)
    return lines
