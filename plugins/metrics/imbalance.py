"""Imbalanced classes: class counts, balanced loss weights, and spotting a classifier that predicts one class.

With 26 % NORMAL images, a short run can put every image in the majority
class and still score 0.74 accuracy; :func:`collapse_note` says so in words.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def class_counts(targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Images per class, ``[num_classes]`` (classes absent from ``targets`` count 0; missing labels, -1, none)."""
    targets = np.asarray(targets, int).reshape(-1)
    return np.bincount(targets[targets >= 0], minlength=num_classes)[:num_classes]


def balanced_class_weights(targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency weights ``n / (C * n_c)``: each class weighs as much in the loss as an equal share.

    A class absent from ``targets`` gets 0 (no labeled image of it can be weighed).
    """
    counts = class_counts(targets, num_classes).astype(np.float64)
    total = counts.sum()
    return np.divide(total, num_classes * counts, out=np.zeros_like(counts), where=counts > 0)


def collapse_note(predicted: np.ndarray, targets: np.ndarray, class_names: Sequence[str]) -> str | None:
    """``every image predicted PNEUMONIA (specificity 0.000)`` when a set holding several classes gets one
    prediction for all; None otherwise. With two classes the second is the positive one."""
    predicted, targets = np.asarray(predicted, int), np.asarray(targets, int)
    if len(np.unique(targets)) < 2 or len(np.unique(predicted)) != 1:
        return None
    only = int(predicted[0])
    if len(class_names) == 2:
        missed = "specificity" if only == 1 else "sensitivity"
        detail = f"{missed} 0.000"
    else:
        detail = f"accuracy {float((predicted == targets).mean()):.3f}"
    return f"every image predicted {class_names[only]} ({detail}): the classifier has collapsed to one class"
