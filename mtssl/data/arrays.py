"""A source decoded at the training size into compact uint8 arrays."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from mtssl.data.decode import binarize_mask, check_mask_size, resize_image, resize_mask, to_gray_uint8
from mtssl.data.errors import DataError, Skipped
from mtssl.interfaces import Source


@dataclass
class SourceArrays:
    """Images ``[N, S, S]`` uint8, targets (``[N]`` int64 classes or ``[N, S, S]`` uint8 masks), keys.

    ``skipped`` lists the items left out as bad (only ever non-empty with skip_bad).
    """

    images: np.ndarray
    targets: np.ndarray
    keys: list[str]
    target_kind: str
    class_names: tuple[str, ...] = ()
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)


def prepare_sample(source: Source, index: int, size: int):
    """Decode item ``index`` at ``size``: (uint8 image, class int or uint8 mask).

    Unreadable items raise :class:`DataError` naming the item's key.
    """
    key = source.keys[index]
    try:
        sample = source.load_resized(index, size) or source.load(index)
        image = to_gray_uint8(sample.image)
    except DataError:
        raise
    except (OSError, ValueError) as exc:
        raise DataError(key, f"cannot load ({type(exc).__name__}: {exc})") from exc
    image_small = resize_image(image, size)
    if source.target_kind == "mask":
        if sample.target is None:
            raise DataError(key, "no mask")
        mask = binarize_mask(sample.target, key)
        check_mask_size(image, mask, key)
        return image_small, resize_mask(mask, size)
    return image_small, int(sample.target) if sample.target is not None else -1


def empty_arrays(source: Source, size: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(source)
    images = np.empty((n, size, size), np.uint8)
    targets = np.empty((n, size, size), np.uint8) if source.target_kind == "mask" else np.empty(n, np.int64)
    return images, targets


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


def decode_all(source: Source, size: int, progress: Callable[[int], None] | None = None,
               skip_bad: bool = False) -> SourceArrays:
    """Decode every item of ``source`` at ``size`` into memory."""
    images, targets = empty_arrays(source, size)
    kept, skipped = decode_into(source, size, images, targets, progress, skip_bad)
    keys = list(source.keys)
    return SourceArrays(images[: len(kept)], targets[: len(kept)], [keys[i] for i in kept], source.target_kind,
                        tuple(source.class_names), skipped)
