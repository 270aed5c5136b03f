"""What a labeled sample carries, declared once and obeyed everywhere.

A task declares the targets it trains on and a source the targets it
yields, each as a :class:`TargetSpec`. The core checks that the two agree
and then stores, caches, moves, augments and scores targets only through the
declaration: it never asks *what* a target is (a class, a mask, a ratio), only
its dtype, its shape, whether it lives on the image grid and how it is
resampled. A new kind of target is therefore a new spec in a plugin, never a
change to the core.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

Resample = Literal["nearest", "bilinear"]


@dataclass(frozen=True)
class TargetSpec:
    """A target's kind, storage and geometry.

    * ``kind`` names the meaning (``"class"``, ``"mask"``, ``"ctr"``...): two
      specs agree only when their kinds match, so a regression source can never
      feed a classifier by accident. The core never branches on it.
    * ``dtype`` is the numpy dtype targets are stored and handed to the task in.
    * ``shape`` is the per-sample shape: ``()`` for a number, ``(K,)`` for a
      vector (multi-label findings); for a spatial target ``(C,)``, its channels.
    * ``spatial`` targets are maps at image resolution, stored ``[N, C, S, S]``;
      they move with every geometric augmentation, resampled with ``resample``
      (``nearest`` for labels, ``bilinear`` for continuous maps).
    * ``binary`` spatial targets hold 0/1; files are checked to be two-valued
      and thresholded halfway before resizing.
    * ``missing`` is the stored value of an item without a target (e.g. -1 for
      an unlabeled class); None means every item must carry one.
    """

    kind: str
    dtype: str = "int64"
    shape: tuple[int, ...] = ()
    spatial: bool = False
    resample: Resample = "nearest"
    binary: bool = False
    missing: int | float | None = None

    def __post_init__(self) -> None:
        np.dtype(self.dtype)  # raises TypeError for an unknown dtype name
        if self.spatial and len(self.shape) != 1:
            raise ValueError(f"a spatial target's shape is (channels,), got {self.shape}")
        if self.resample not in ("nearest", "bilinear"):
            raise ValueError(f"resample must be 'nearest' or 'bilinear', got '{self.resample}'")

    # -- what the core asks ------------------------------------------------
    @property
    def channels(self) -> int:
        """Channels of a spatial target (1 otherwise)."""
        return self.shape[0] if self.spatial else 1

    @property
    def categorical(self) -> bool:
        """One integer label per image: budgets are stratified by it and it can be renamed across datasets."""
        return not self.spatial and self.shape == () and np.issubdtype(np.dtype(self.dtype), np.integer)

    def storage_shape(self, size: int) -> tuple[int, ...]:
        """Shape of one stored target at training size ``size``."""
        return (*self.shape, size, size) if self.spatial else tuple(self.shape)

    def empty(self, count: int, size: int) -> np.ndarray:
        return np.empty((count, *self.storage_shape(size)), np.dtype(self.dtype))

    def agrees(self, other: "TargetSpec") -> bool:
        """Whether targets of ``other`` can train or score a task declaring ``self``."""
        return (self.kind, np.dtype(self.dtype), tuple(self.shape), self.spatial) == \
               (other.kind, np.dtype(other.dtype), tuple(other.shape), other.spatial)

    def describe(self) -> str:
        """E.g. ``class targets (int64 per image)`` or ``mask targets (3-channel uint8 map)``."""
        if self.spatial:
            return f"{self.kind} targets ({self.channels}-channel {self.dtype} map)"
        per = "per image" if self.shape == () else f"{'x'.join(map(str, self.shape))} per image"
        return f"{self.kind} targets ({self.dtype} {per})"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TargetSpec":
        return cls(**{**raw, "shape": tuple(raw.get("shape", ()))})
