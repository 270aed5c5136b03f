"""A source decoded at the training size into compact arrays, targets shaped by their declaration."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from mtssl.data.decode import (binarize_mask, check_mask_size, resize_channels, resize_map, resize_mask,
                               to_channels_uint8)
from mtssl.data.errors import DataError, Skipped
from mtssl.interfaces import Source
from mtssl.targets import TargetSpec


@dataclass
class SourceArrays:
    """Images ``[N, C, S, S]`` uint8, targets ``[N, *target.storage_shape(S)]``, keys and groups.

    An item without a target holds ``target.missing`` in every element
    (:attr:`labeled` tells them apart).

    ``groups`` holds each item's patient (or other group) key, or None when
    the source knows none. ``skipped`` lists the items left out as bad (only
    ever non-empty with skip_bad).
    """

    images: np.ndarray
    targets: np.ndarray
    keys: list[str]
    target: TargetSpec
    class_names: tuple[str, ...] = ()
    skipped: list[Skipped] = field(default_factory=list)
    groups: list[str] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def labeled(self) -> np.ndarray:
        """Per item: whether it carries a target (any element known)."""
        return self.target.labeled(self.targets)


def prepare_target(spec: TargetSpec, value: Any, image: np.ndarray, key: str, size: int) -> np.ndarray:
    """One item's target at ``size``, checked against the spec; a bad target raises :class:`DataError`."""
    if value is None:  # an unlabeled item: stored as all-missing, so the split puts it on the unlabeled side
        if spec.missing is None:
            raise DataError(key, f"no {spec.kind} target" if not spec.spatial else f"{spec.kind} missing")
        return np.full(spec.storage_shape(size), spec.missing, np.dtype(spec.dtype))
    if not spec.spatial:
        array = np.asarray(value)
        if array.shape != spec.shape:
            raise DataError(key, f"{spec.kind} target has shape {array.shape}; expected {spec.shape}")
        return array.astype(spec.dtype)
    planes = np.asarray(value)
    if spec.channels == 1 and spec.binary:
        planes = binarize_mask(planes, key)[..., None]
    elif planes.ndim == 2:
        planes = planes[..., None]
    if planes.ndim != 3 or planes.shape[2] != spec.channels:
        found = planes.shape[2] if planes.ndim == 3 else planes.ndim
        raise DataError(key, f"{spec.kind} target has {found} channel(s); expected {spec.channels}")
    check_mask_size(image, planes, key)
    out = np.empty(spec.storage_shape(size), spec.dtype)
    for c in range(spec.channels):
        plane = planes[..., c]
        if spec.binary:  # one channel was binarised above, colour and all
            out[c] = resize_mask(plane if spec.channels == 1 else binarize_mask(plane, key), size)
        else:
            out[c] = resize_map(plane, size, spec.resample).astype(spec.dtype)
    return out


def prepare_sample(source: Source, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode item ``index`` at ``size``: (uint8 image ``[C, S, S]``, target as the source declares it).

    Unreadable items raise :class:`DataError` naming the item's key.
    """
    key = source.keys[index]
    try:
        sample = source.load_resized(index, size) or source.load(index)
        image = to_channels_uint8(sample.image, source.channels)
    except DataError:
        raise
    except (OSError, ValueError) as exc:
        raise DataError(key, f"cannot load ({type(exc).__name__}: {exc})") from exc
    target = prepare_target(source.target, sample.target, image.transpose(1, 2, 0), key, size)
    return resize_channels(image, size), target


def empty_arrays(source: Source, size: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(source)
    return np.empty((n, source.channels, size, size), np.uint8), source.target.empty(n, size)


def decode_into(source: Source, size: int, images: np.ndarray, targets: np.ndarray,
                progress: Callable[[int], None] | None = None, skip_bad: bool = False) -> tuple[list[int], list[Skipped]]:
    """Decode every item into the first rows of ``images``/``targets``; bad items stop it or are skipped.

    Returns the indices kept (row ``j`` holds item ``kept[j]``) and the skipped items.
    """
    kept: list[int] = []
    skipped: list[Skipped] = []
    for i in range(len(source)):
        try:
            image, target = prepare_sample(source, i, size)
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.append(Skipped.of(exc))
        else:
            images[len(kept)], targets[len(kept)] = image, target
            kept.append(i)
        if progress:
            progress(1)
    return kept, skipped


def source_arrays(source: Source, images: np.ndarray, targets: np.ndarray, kept: list[int],
                  skipped: list[Skipped]) -> SourceArrays:
    """Wrap decoded rows with the keys, groups and names of the items they hold."""
    keys = list(source.keys)
    groups = source.groups()
    return SourceArrays(images[: len(kept)], targets[: len(kept)], [keys[i] for i in kept], source.target,
                        tuple(source.class_names), skipped,
                        None if groups is None else [str(groups[i]) for i in kept])


def decode_all(source: Source, size: int, progress: Callable[[int], None] | None = None,
               skip_bad: bool = False) -> SourceArrays:
    """Decode every item of ``source`` at ``size`` into memory."""
    images, targets = empty_arrays(source, size)
    kept, skipped = decode_into(source, size, images, targets, progress, skip_bad)
    return source_arrays(source, images, targets, kept, skipped)
