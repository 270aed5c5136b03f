"""A source decoded at the training size into compact uint8 arrays."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from mtssl.data.decode import resize_image, resize_mask, to_gray_uint8
from mtssl.interfaces import Source


@dataclass
class SourceArrays:
    """Images ``[N, S, S]`` uint8, targets (``[N]`` int64 classes or ``[N, S, S]`` uint8 masks), keys."""

    images: np.ndarray
    targets: np.ndarray
    keys: list[str]
    target_kind: str
    class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.keys)


def prepare_sample(source: Source, index: int, size: int):
    """Decode item ``index`` at ``size``: (uint8 image, class int or uint8 mask)."""
    sample = source.load_resized(index, size) or source.load(index)
    image = resize_image(to_gray_uint8(sample.image), size)
    if source.target_kind == "mask":
        if sample.target is None:
            raise ValueError(f"{source.keys[index]}: no mask")
        return image, resize_mask(sample.target, size)
    return image, int(sample.target) if sample.target is not None else -1


def decode_all(source: Source, size: int, progress: Callable[[int], None] | None = None) -> SourceArrays:
    """Decode every item of ``source`` at ``size`` into memory."""
    n = len(source)
    images = np.empty((n, size, size), np.uint8)
    targets = np.empty((n, size, size), np.uint8) if source.target_kind == "mask" else np.empty(n, np.int64)
    for i in range(n):
        images[i], targets[i] = prepare_sample(source, i, size)
        if progress:
            progress(1)
    return SourceArrays(images, targets, list(source.keys), source.target_kind, tuple(source.class_names))
