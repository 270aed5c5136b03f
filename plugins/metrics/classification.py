"""Set-level classification metrics from class probabilities: accuracy, per-class F1, ROC AUC, sensitivity, specificity.

Functions take integer targets ``[N]`` and probabilities ``[N, C]`` (rows sum
to 1). A value that a test set cannot define (the AUC of a set holding one
class, the specificity of a set without negatives) is ``None`` and comes
with a note saying why, never NaN and never an exception.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ClassificationScores:
    """Metric name -> value (None when undefined), the confusion matrix, and notes on undefined values."""

    values: dict[str, float | None]
    confusion: list[list[int]]
    notes: list[str] = field(default_factory=list)


def confusion_matrix(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """``[C, C]`` counts; row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(targets, int), np.asarray(predictions, int)), 1)
    return matrix


def f1_per_class(matrix: np.ndarray) -> np.ndarray:
    """F1 of each class (one-vs-rest); 0 where the class is neither present nor predicted."""
    tp = np.diag(matrix).astype(np.float64)
    denom = matrix.sum(0) + matrix.sum(1)  # 2 tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def binary_roc(targets: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold (descending), starting at (0, 0).

    Tied scores move both rates in one step, as the ROC curve of a ranking does.
    """
    targets = np.asarray(targets).astype(bool)
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], targets[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(t)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    positives, negatives = t.sum(), (~t).sum()
    tpr = np.r_[0.0, tps / positives] if positives else np.full(len(tps) + 1, np.nan)
    fpr = np.r_[0.0, fps / negatives] if negatives else np.full(len(fps) + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, s[last_of_tie]]


def binary_auc(targets: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (trapezoids); None when the set holds only one class."""
    targets = np.asarray(targets).astype(bool)
    if targets.all() or not targets.any():
        return None
    fpr, tpr, _ = binary_roc(targets, scores)
    return float(np.trapezoid(tpr, fpr) if hasattr(np, "trapezoid") else np.trapz(tpr, fpr))


def classification_scores(targets: np.ndarray, probabilities: np.ndarray,
                          class_names: tuple[str, ...] | list[str]) -> ClassificationScores:
    """All set-level metrics; with two classes the second is the positive one (e.g. pneumonia)."""
    targets = np.asarray(targets, int)
    probabilities = np.asarray(probabilities, np.float64)
    num_classes = probabilities.shape[1]
    names = list(class_names) if len(class_names) == num_classes else [str(c) for c in range(num_classes)]
    if len(targets) and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(f"targets must lie in 0..{num_classes - 1}, got {targets.min()}..{targets.max()}")
    predictions = probabilities.argmax(1)
    matrix = confusion_matrix(targets, predictions, num_classes)
    values: dict[str, float | None] = {"acc": float((predictions == targets).mean()) if len(targets) else None}
    for name, f1 in zip(names, f1_per_class(matrix)):
        values[f"f1_{name.lower()}"] = float(f1)
    notes: list[str] = []
    present = np.unique(targets)
    if num_classes == 2:
        values["auc"] = binary_auc(targets == 1, probabilities[:, 1])
        tp, fn = matrix[1, 1], matrix[1, 0]
        tn, fp = matrix[0, 0], matrix[0, 1]
        values["sensitivity"] = float(tp / (tp + fn)) if tp + fn else None
        values["specificity"] = float(tn / (tn + fp)) if tn + fp else None
        if len(present) < 2:
            only = names[present[0]] if len(present) else "none"
            notes.append(f"the test set holds one class only ({only}): ROC AUC is undefined, and so is "
                         f"{'specificity' if values['specificity'] is None else 'sensitivity'}")
    else:
        aucs = [binary_auc(targets == c, probabilities[:, c]) for c in range(num_classes)]
        defined = [a for a in aucs if a is not None]
        values["auc"] = float(np.mean(defined)) if len(defined) == num_classes else None
        if values["auc"] is None:
            notes.append("macro one-vs-rest ROC AUC is undefined: some class is missing from the test set")
        notes.append("sensitivity and specificity are reported for two classes only")
    return ClassificationScores(values, matrix.tolist(), notes)
