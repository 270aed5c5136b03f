"""From a task's data settings to decoded arrays and a label-budget split."""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mtssl.run.config import TaskData
from mtssl.data.arrays import SourceArrays, decode_all
from mtssl.data.cache import cached_arrays, is_cacheable
from mtssl.data.errors import DataError, Skipped
from mtssl.data.splits import Split, parse_budget, split_indices
from mtssl.interfaces import Source, Task
from mtssl.targets import TargetSpec, UnservedTarget
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


def training_spec(host: PluginHost, name: str, task: Task, data: TaskData) -> str:
    """The task's training source: the one given, else the one the task names as its default."""
    if data.train:
        return data.train
    default = getattr(task, "default_source", None)
    if default:
        return default
    serving = sources_serving(host, task.target)
    listed = f"sources serving its {task.target.kind} targets: {', '.join(serving)}" if serving else \
        f"no installed source serves its {task.target.kind} targets"
    raise ValueError(f"task '{name}' has no default source; give --{name}-data SPEC ({listed})")


def sources_serving(host: PluginHost, target: TargetSpec) -> list[str]:
    """Installed sources that can yield ``target``, found by building each without a path.

    A source refuses a target it cannot yield by raising :class:`UnservedTarget`
    or by declaring another target; any other failure (a path is needed) says
    nothing against it, so it is listed.
    """
    serving = []
    for entry in host.registries["source"]:
        try:
            source = host.create("source", entry.name, target=target, seed=0)
        except Exception as exc:  # noqa: BLE001 - e.g. "needs a path": only UnservedTarget refuses the target
            if not isinstance(exc, UnservedTarget) and not isinstance(exc.__cause__, UnservedTarget):
                serving.append(entry.name)
            continue
        provided = getattr(source, "target", None)
        if isinstance(provided, TargetSpec) and target.agrees(provided):
            serving.append(entry.name)
    return serving


def make_split(name: str, task: Task, data: TaskData, spec: str, seed: int, count: int,
               labels: Sequence[int] | None, groups: Sequence[str] | None,
               labeled: Sequence[bool] | None) -> Split:
    """The seeded split of a task's training items; errors name the task and source."""
    budget = parse_budget(data.labels if data.labels is not None else task.default_labels)
    val_fraction = 0.0 if data.val else data.val_fraction
    try:
        return split_indices(count, budget, seed, val_fraction, labels, min_val=0 if data.val else 1,
                             groups=groups, labeled=labeled)
    except ValueError as exc:
        raise ValueError(f"{name}: source '{spec}': {exc}") from exc


def check_split(name: str, task: Task, data: TaskData, spec: str, source: Source, seed: int) -> Split:
    """The split training would make, from what the source lists (no decoding): a budget the labeled
    items cannot meet fails here, before any work. Items dropped as bad while decoding may still shrink it."""
    labels = source.class_labels() if source.target.categorical else None
    if labels is not None:  # entries of unlabeled items (None) are never read by the split
        labels = [-1 if label is None else label for label in labels]
    return make_split(name, task, data, spec, seed, len(source), labels, source.groups(), source.labeled())


def labeled_only(arrays: SourceArrays, what: str) -> tuple[SourceArrays, list[str]]:
    """The items of a scoring set that carry a target, and a remark naming how many were left out."""
    labeled = arrays.labeled
    if labeled.all():
        return arrays, []
    dropped = int((~labeled).sum())
    if not labeled.any():
        raise ValueError(f"{what}: none of its {len(arrays)} items has a target")
    return subset(arrays, np.flatnonzero(labeled)), [f"{what}: {dropped} item(s) without a target left out"]


def prepare_task_data(host: PluginHost, name: str, task: Task, data: TaskData, size: int, seed: int,
                      progress: ProgressFactory | None = None, cache_dir: str | Path | None = None,
                      skip_bad: bool = False) -> TaskArrays:
    spec = training_spec(host, name, task, data)
    source = open_source(host, spec, task.target, seed, skip_bad)
    train = load_arrays(source, size, progress, f"{name}: {spec}", cache_dir, skip_bad)
    labels = train.targets.tolist() if train.target.categorical else None
    split = make_split(name, task, data, spec, seed, len(train), labels, train.groups, train.labeled)
    remarks = list(source.remarks())
    if data.val:
        val_source = open_source(host, data.val, task.target, seed + 1, skip_bad)
        val = load_arrays(val_source, size, progress, f"{name} val: {data.val}", cache_dir, skip_bad)
        if train.class_names and val.class_names and train.class_names != val.class_names:
            raise ValueError(f"{name}: validation source '{data.val}' has classes {', '.join(val.class_names)} "
                             f"but the training source has {', '.join(train.class_names)}")
        val, dropped = labeled_only(val, f"validation source '{data.val}'")
        remarks += [*val_source.remarks(), *dropped]
    else:
        val = subset(train, split.val)
    return TaskArrays(train, split, val, remarks)


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
