"""Seeded label-budget splits: validation, labeled and unlabeled index sets.

Classification budgets are stratified: each class keeps its share of the
labeled set (at least one image per class when the budget allows).

When a source knows each image's patient (its *group*), whole patients move
together, so no patient is on two sides of a split. The validation set
takes whole patients until it holds at least its share of images; the
labeled set takes whole patients until the budget is met exactly, and the
images of the one patient that would overshoot it are left out of training
(``excluded``) rather than put on the unlabeled side.

Items without a target (``labeled`` False) never enter the validation or
labeled parts, and budgets and validation shares count labeled items only.
They join the unlabeled part, except those of a validation patient, which
are left out (``excluded``) so no patient is both validated and trained on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


PARTS = ("labeled", "unlabeled", "val", "excluded", "untargeted")


@dataclass(frozen=True)
class Split:
    labeled: np.ndarray
    unlabeled: np.ndarray
    val: np.ndarray
    excluded: np.ndarray = field(default_factory=lambda: np.array([], int))
    """Images of a patient split by the label budget, kept out of training (patient splits only)."""
    untargeted: np.ndarray = field(default_factory=lambda: np.array([], int))
    """Items without a target; those not in ``excluded`` are also in ``unlabeled``."""

    def as_dict(self) -> dict[str, list[int]]:
        return {k: getattr(self, k).tolist() for k in PARTS}


def parse_budget(value: int | str | None) -> int | None:
    """``'all'``/None -> None (every training image is labeled), else a positive int."""
    if value is None or (isinstance(value, str) and value.lower() == "all"):
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise ValueError(f"label budget must be a positive whole number or 'all', got {value!r}")
    return int(text)


def _stratified_take(indices: np.ndarray, labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Pick ``count`` of ``indices`` keeping class proportions (largest-remainder rounding)."""
    if not 0 <= count <= len(indices):
        raise ValueError(f"cannot take {count} of {len(indices)} images")
    classes, counts = np.unique(labels[indices], return_counts=True)
    take = _stratified_counts(counts, count)
    picked = [rng.permutation(indices[labels[indices] == c])[:t] for c, t in zip(classes, take)]
    return np.sort(np.concatenate(picked)) if picked else np.array([], int)


def split_indices(n: int, budget: int | None, seed: int, val_fraction: float = 0.1,
                  labels: Sequence[int] | None = None, min_val: int = 1,
                  groups: Sequence[str] | None = None, labeled: Sequence[bool] | None = None) -> Split:
    """Carve a validation set, then ``budget`` labeled images; the rest is unlabeled.

    With ``groups`` (a patient key per image) no group is split across parts.
    ``labeled`` marks the items that carry a target (None: all do); the
    others are unlabeled whatever the budget.
    """
    mask = np.ones(n, bool) if labeled is None else np.asarray(labeled, bool)
    if mask.shape != (n,):
        raise ValueError(f"{mask.size} labeled flags for {n} images")
    if mask.all():
        return _split_labeled(n, budget, seed, val_fraction, labels, min_val, groups)
    kept = np.flatnonzero(mask)
    untargeted = np.flatnonzero(~mask)
    pick = lambda values: None if values is None else [values[i] for i in kept]  # noqa: E731
    inner = _split_labeled(len(kept), budget, seed, val_fraction, pick(labels), min_val, pick(groups),
                           len(untargeted))
    val, excluded = kept[inner.val], kept[inner.excluded]
    if groups is not None:  # a validation patient's unlabeled items stay out of training too
        val_groups = {groups[i] for i in val}
        held = np.array([groups[i] in val_groups for i in untargeted], bool)
        excluded = np.union1d(excluded, untargeted[held])
    unlabeled = np.union1d(kept[inner.unlabeled], np.setdiff1d(untargeted, excluded))
    return Split(kept[inner.labeled], unlabeled, val, excluded, untargeted)


def budget_too_large(budget: int, train: int, labeled: int, val: int, untargeted: int) -> str:
    """The refusal of a budget beyond the labeled training images, with the numbers behind them."""
    if not untargeted:
        return (f"label budget {budget} is larger than the {train} training images ({labeled} in the source, "
                f"{val} held out for validation); use a smaller number or 'all'")
    return (f"label budget {budget} is larger than the {train} labeled training images ({labeled + untargeted} "
            f"in the source, {untargeted} of them without a target, {val} labeled ones held out for validation); "
            "use a smaller number or 'all'")


def _split_labeled(n: int, budget: int | None, seed: int, val_fraction: float, labels: Sequence[int] | None,
                   min_val: int, groups: Sequence[str] | None, untargeted: int = 0) -> Split:
    """:func:`split_indices` of the ``n`` items that carry a target (``untargeted`` others are set aside)."""
    if n < 2:
        without = f" ({untargeted} more without a target)" if untargeted else ""
        raise ValueError(f"a training source needs at least 2 labeled images, got {n}{without}")
    if not (math.isfinite(val_fraction) and 0 <= val_fraction < 1):
        raise ValueError(f"validation fraction must lie in [0, 1), got {val_fraction}")
    if groups is not None:
        return _split_groups(n, budget, seed, val_fraction, labels, min_val, groups, untargeted)
    rng = np.random.default_rng([seed, 104729])
    all_idx = np.arange(n)
    label_arr = None if labels is None else np.asarray(labels)
    n_val = max(min_val, int(round(n * val_fraction))) if val_fraction > 0 else 0
    if n_val >= n:
        raise ValueError(f"validation fraction {val_fraction} of {n} images leaves no training images")
    if label_arr is not None and n_val:
        val = _stratified_take(all_idx, label_arr, n_val, rng)
    else:
        val = np.sort(rng.permutation(n)[:n_val])
    train = np.setdiff1d(all_idx, val)
    if budget is None:
        return Split(train, np.array([], int), val)
    if budget > len(train):
        raise ValueError(budget_too_large(budget, len(train), n, len(val), untargeted))
    if label_arr is not None:
        labeled = _stratified_take(train, label_arr, budget, rng)
    else:
        labeled = np.sort(rng.permutation(train)[:budget])
    return Split(labeled, np.setdiff1d(train, labeled), val)


def _take_groups(members: list[np.ndarray], group_labels: np.ndarray | None, count: int,
                 rng: np.random.Generator, exact: bool) -> tuple[np.ndarray, np.ndarray]:
    """Whole groups, in a seeded order, until ``count`` images are taken (per class when labelled).

    Returns (taken, left out). With ``exact`` the last group is cut to hit
    ``count`` and its remainder is returned as left out; otherwise it is
    taken whole (the count may be exceeded by less than one group).
    """
    sizes = np.array([len(m) for m in members])
    if group_labels is None:
        quotas = {None: count}
        by_class = {None: np.arange(len(members))}
    else:
        image_labels = np.repeat(group_labels, sizes)
        classes, counts = np.unique(image_labels, return_counts=True)
        share = _stratified_counts(counts, count)
        quotas = dict(zip(classes.tolist(), share.tolist()))
        by_class = {c: np.flatnonzero(group_labels == c) for c in quotas}
    taken: list[np.ndarray] = []
    cut: list[np.ndarray] = []
    for cls, quota in quotas.items():
        got = 0
        for g in rng.permutation(by_class[cls]):
            if got >= quota:
                break
            part = members[g]
            if exact and got + len(part) > quota:
                part, rest = part[: quota - got], part[quota - got:]
                cut.append(rest)
            taken.append(part)
            got += len(part)
    as_array = lambda parts: np.sort(np.concatenate(parts)) if parts else np.array([], int)  # noqa: E731
    return as_array(taken), as_array(cut)


def _stratified_counts(counts: np.ndarray, count: int) -> np.ndarray:
    """Largest-remainder shares of ``count`` over classes of ``counts`` images (at least 1 each if possible)."""
    share = counts / counts.sum() * count
    take = np.floor(share).astype(int)
    if count >= len(counts):
        take = np.maximum(take, 1)
    while take.sum() > count:
        take[np.argmax(take)] -= 1
    order = np.argsort(-(share - np.floor(share)))
    i = 0
    while take.sum() < count and i < 10 * len(order) * max(count, 1):
        cls = order[i % len(order)]
        if take[cls] < counts[cls]:
            take[cls] += 1
        i += 1
    return take


def _split_groups(n: int, budget: int | None, seed: int, val_fraction: float, labels: Sequence[int] | None,
                  min_val: int, groups: Sequence[str], untargeted: int = 0) -> Split:
    if len(groups) != n:
        raise ValueError(f"{len(groups)} group keys for {n} images")
    rng = np.random.default_rng([seed, 104729, 1])
    names, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(names))]
    label_arr = None if labels is None else np.asarray(labels)
    group_labels = None if label_arr is None else np.array([label_arr[m[0]] for m in members])
    n_val = max(min_val, int(round(n * val_fraction))) if val_fraction > 0 else 0
    if n_val and len(members) < 2:
        raise ValueError("every image belongs to one patient: no validation split can keep patients apart "
                         "(give a separate validation source)")
    val, _ = _take_groups(members, group_labels, n_val, rng, exact=False) if n_val else (np.array([], int), None)
    in_val = np.zeros(n, bool)
    in_val[val] = True
    rest = [m for m in members if not in_val[m[0]]]
    rest_labels = None if group_labels is None else np.array([label_arr[m[0]] for m in rest])
    train = np.sort(np.concatenate(rest)) if rest else np.array([], int)
    if budget is None:
        return Split(train, np.array([], int), val)
    if budget > len(train):
        raise ValueError(budget_too_large(budget, len(train), n, len(val), untargeted))
    labeled, excluded = _take_groups(rest, rest_labels, budget, rng, exact=True)
    unlabeled = np.setdiff1d(np.setdiff1d(train, labeled), excluded)
    return Split(labeled, unlabeled, val, excluded)
