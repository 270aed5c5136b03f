"""The target declarations the first-party tasks and sources share."""
from __future__ import annotations

from mtssl.api import TargetSpec

CLASS_LABEL = TargetSpec("class", "int64", (), missing=-1)
"""One integer class per image; -1 marks an image without a label."""


def binary_masks(channels: int = 1) -> TargetSpec:
    """``channels`` binary structure masks at image resolution (1: lungs; 3: lungs, heart, clavicles)."""
    return TargetSpec("mask", "uint8", (int(channels),), spatial=True, resample="nearest", binary=True)


def wants_masks(target: TargetSpec | None) -> bool:
    """Whether a source was asked for masks rather than class labels (sources serving both pick by it)."""
    return target is not None and target.spatial
