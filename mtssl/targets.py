"""What a labeled sample carries, declared once and obeyed everywhere.

A task declares the targets it trains on and a source the targets it
yields, each as a :class:`TargetSpec`. The core checks that the two agree
and then stores, caches, moves, augments and scores targets only through the
declaration: it never asks *what* a target is (a class, a mask, a ratio), only
its dtype, its shape, whether it lives on the image grid and how it is
resampled. A new kind of target is therefore a new spec in a plugin, never a
change to the core.

A declared ``missing`` value marks what is not known. An item whose every
element is missing (a source yielded ``Sample(target=None)``) is unlabeled:
the core keeps it out of supervision, validation and scoring and hands it to
strategies as unlabeled data. An item with only some elements missing (a
multi-label finding nobody read) is labeled, and the task's loss skips the
unknown elements with :func:`known_mask` or
:func:`masked_binary_cross_entropy`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

Resample = Literal["nearest", "bilinear"]
"""How a spatial target is resampled when it moves with the image: ``nearest`` for labels, ``bilinear`` for
continuous maps."""


class UnservedTarget(ValueError):
    """A source asked for targets it cannot yield: raise it from the source's factory (with the reason).

    Listings of the sources that serve a task (e.g. when a task has no
    default source) skip a source that raises it.
    """


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
    * ``missing`` is the stored value of an unknown target element (-1 for an
      unlabeled class, -1 or NaN for an unread finding of a multi-label
      vector); None means every item must carry a complete target. An item
      whose every element is missing is unlabeled (see :meth:`labeled`).
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
        if self.missing is not None:
            self._check_missing()

    def _check_missing(self) -> None:
        """The missing value must be storable in the dtype as itself, or it could pass for a real target."""
        dtype = np.dtype(self.dtype)
        value = self.missing
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"missing must be a number, got {value!r}")
        if np.isnan(value):
            if not np.issubdtype(dtype, np.floating):
                raise ValueError(f"missing=nan needs a floating dtype, not {dtype}")
            return
        if np.asarray(value).astype(dtype).item() != value:
            raise ValueError(f"missing={value!r} cannot be stored as {dtype}")

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
        """Uninitialised storage for ``count`` targets at training size ``size``, in the declared dtype."""
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

    def labeled(self, targets: np.ndarray) -> np.ndarray:
        """Per item of stored ``targets`` ``[N, ...]``: whether any element is known (bool ``[N]``)."""
        if self.missing is None:
            return np.ones(len(targets), bool)
        out = np.empty(len(targets), bool)
        for start in range(0, len(targets), 1024):  # in chunks: maps of a large set stay memory-mapped
            known = known_mask(np.asarray(targets[start:start + 1024]), self)
            out[start:start + len(known)] = known.reshape(len(known), -1).any(axis=1)
        return out

    def as_dict(self) -> dict[str, Any]:
        """The spec as JSON-able values, as a run's files record it (read back with :meth:`from_dict`)."""
        return {**asdict(self), "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TargetSpec":
        """The spec :meth:`as_dict` wrote."""
        return cls(**{**raw, "shape": tuple(raw.get("shape", ()))})


def known_mask(target, spec: TargetSpec):
    """True where an element of ``target`` (numpy array or torch tensor) is known, per ``spec.missing``.

    Same shape as ``target``; all True when the spec declares no missing
    value. A task whose targets may be partly missing multiplies its
    per-element loss by this mask, e.g. ``mask = known_mask(target, self.target)``.
    """
    if isinstance(target, np.ndarray) or np.isscalar(target):
        target = np.asarray(target)
        if spec.missing is None:
            return np.ones(target.shape, bool)
        return ~np.isnan(target) if np.isnan(spec.missing) else target != spec.missing
    import torch

    if spec.missing is None:
        return torch.ones_like(target, dtype=torch.bool)
    return ~torch.isnan(target) if np.isnan(spec.missing) else target != spec.missing


def masked_binary_cross_entropy(logits, target, spec: TargetSpec, pos_weight=None):
    """Mean binary cross-entropy over the known elements of a multi-label target (logits in, float32 out).

    Missing elements (``spec.missing``) add nothing and get no gradient; a
    batch with no known element gives 0 (still connected to ``logits``).
    ``pos_weight`` is as in :func:`torch.nn.functional.binary_cross_entropy_with_logits`.
    """
    import torch
    import torch.nn.functional as F

    known = known_mask(target, spec)
    truth = torch.where(known, target, torch.zeros_like(target)).to(torch.float32)
    losses = F.binary_cross_entropy_with_logits(logits.float(), truth, reduction="none", pos_weight=pos_weight)
    losses = torch.where(known, losses, torch.zeros_like(losses))
    return losses.sum() / known.sum().clamp_min(1)
