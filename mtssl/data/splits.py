"""Seeded label-budget splits: validation, labeled and unlabeled index sets.

Classification budgets are stratified: each class keeps its share of the
labeled set (at least one image per class when the budget allows).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Split:
    labeled: np.ndarray
    unlabeled: np.ndarray
    val: np.ndarray

    def as_dict(self) -> dict[str, list[int]]:
        return {k: getattr(self, k).tolist() for k in ("labeled", "unlabeled", "val")}


def parse_budget(value: int | str | None) -> int | None:
    """``'all'``/None -> None (every training image is labeled), else a positive int."""
    if value is None or (isinstance(value, str) and value.lower() == "all"):
        return None
    budget = int(value)
    if budget < 1:
        raise ValueError(f"label budget must be a positive number or 'all', got {value}")
    return budget


def _stratified_take(indices: np.ndarray, labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Pick ``count`` of ``indices`` keeping class proportions (largest-remainder rounding)."""
    classes, counts = np.unique(labels[indices], return_counts=True)
    share = counts / counts.sum() * count
    take = np.floor(share).astype(int)
    if count >= len(classes):
        take = np.maximum(take, 1)
    while take.sum() > count:
        take[np.argmax(take)] -= 1
    order = np.argsort(-(share - np.floor(share)))
    i = 0
    while take.sum() < count:
        cls = order[i % len(order)]
        if take[cls] < counts[cls]:
            take[cls] += 1
        i += 1
    picked = [rng.permutation(indices[labels[indices] == c])[:t] for c, t in zip(classes, take)]
    return np.sort(np.concatenate(picked)) if picked else np.array([], int)


def split_indices(n: int, budget: int | None, seed: int, val_fraction: float = 0.1,
                  labels: Sequence[int] | None = None, min_val: int = 1) -> Split:
    """Carve a validation set, then ``budget`` labeled images; the rest is unlabeled."""
    if n < 2:
        raise ValueError(f"a training source needs at least 2 images, got {n}")
    rng = np.random.default_rng([seed, 104729])
    all_idx = np.arange(n)
    label_arr = None if labels is None else np.asarray(labels)
    n_val = max(min_val, int(round(n * val_fraction))) if val_fraction > 0 else 0
    if label_arr is not None and n_val:
        val = _stratified_take(all_idx, label_arr, n_val, rng)
    else:
        val = np.sort(rng.permutation(n)[:n_val])
    train = np.setdiff1d(all_idx, val)
    if budget is None:
        return Split(train, np.array([], int), val)
    if budget > len(train):
        raise ValueError(f"label budget {budget} is larger than the {len(train)} training images "
                         f"({n} in the source, {len(val)} held out for validation); use a smaller number or 'all'")
    if label_arr is not None:
        labeled = _stratified_take(train, label_arr, budget, rng)
    else:
        labeled = np.sort(rng.permutation(train)[:budget])
    return Split(labeled, np.setdiff1d(train, labeled), val)
