"""Scoring a model on a dataset that names its classes (or channels) differently.

Kermany calls its classes ``NORMAL``/``PNEUMONIA``, NIH ChestX-ray14
``No Finding``/``Pneumonia``. A test spec may carry ``map=THEIRS=OURS|...``
(e.g. ``nih:ROOT:map=No Finding=NORMAL|Pneumonia=PNEUMONIA``); names it
does not map are matched to the trained names ignoring case. Targets are
then renumbered (one label per image) or their channels reordered (maps and
vectors) to the trained order. A name that matches nothing is an error that
lists both sets.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from mtssl.data.arrays import SourceArrays

MAP_OPTION = "map"


def split_class_map(spec: str) -> tuple[str, dict[str, str]]:
    """``'nih:R:classes=a|b,map=a=X|b=Y'`` -> (``'nih:R:classes=a|b'``, ``{'a': 'X', 'b': 'Y'}``)."""
    mapping: dict[str, str] = {}
    segments = []
    for segment in spec.split(":"):
        pairs = []
        for pair in segment.split(","):
            key, sep, value = pair.partition("=")
            if sep and key.strip() == MAP_OPTION and "/" not in key:
                for entry in filter(None, (e.strip() for e in value.split("|"))):
                    theirs, eq, ours = entry.partition("=")
                    if not eq or not theirs.strip() or not ours.strip():
                        raise ValueError(f"in '{spec}': map entries look like THEIRS=OURS, got '{entry}'")
                    mapping[theirs.strip()] = ours.strip()
            else:
                pairs.append(pair)
        if pairs:
            segments.append(",".join(pairs))
    return ":".join(segments), mapping


def map_class_names(arrays: SourceArrays, trained: Sequence[str], mapping: dict[str, str],
                    spec: str) -> SourceArrays:
    """Renumber or reorder ``arrays``' targets from the source's names to the ``trained`` ones."""
    found = list(arrays.class_names)
    if not trained or not found:
        if mapping:
            raise ValueError(f"test source '{spec}': map= given, but the "
                             f"{'run' if not trained else 'source'} names no classes")
        return arrays
    wanted = {name.lower(): i for i, name in enumerate(trained)}
    unknown_keys = sorted(set(mapping) - set(found))
    if unknown_keys:
        raise ValueError(f"test source '{spec}': map names {', '.join(unknown_keys)}, which the source does not "
                         f"have (its classes: {', '.join(found)})")
    order = []
    for name in found:
        target = mapping.get(name, name)
        if target.lower() not in wanted:
            raise ValueError(f"test source '{spec}' has classes {', '.join(found)}, but the task was trained on "
                             f"{', '.join(trained)}; map them with map={'|'.join(f'{n}=...' for n in found)}")
        order.append(wanted[target.lower()])
    if order == list(range(len(trained))) and len(found) == len(trained):
        return replace(arrays, class_names=tuple(trained))
    spec_ = arrays.target
    if spec_.categorical:
        lookup = np.asarray(order)
        targets = arrays.targets.copy()
        labeled = targets != spec_.missing if spec_.missing is not None else np.ones(len(targets), bool)
        targets[labeled] = lookup[targets[labeled]]
    else:
        if sorted(order) != list(range(len(trained))):
            raise ValueError(f"test source '{spec}': its channels {', '.join(found)} must map one-to-one onto "
                             f"the trained {', '.join(trained)}")
        inverse = np.argsort(order)
        targets = np.ascontiguousarray(np.take(arrays.targets, inverse, axis=1))
    return replace(arrays, targets=targets, class_names=tuple(trained))
