"""Calibration of class probabilities: reliability bins and the expected calibration error (ECE).

A model is calibrated when, among the images it gives confidence ``p`` (its top
probability), a fraction ``p`` is right. ECE (Guo et al., 2017) bins images by
confidence into equal-width bins and averages ``|accuracy - mean confidence|``
over the bins, weighted by each bin's share of the images.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin counts, accuracy and mean confidence (NaN where a bin is empty) and their weighted gap, the ECE."""

    edges: np.ndarray
    counts: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray
    ece: float


def reliability_bins(probabilities: np.ndarray, targets: np.ndarray, bins: int = 10) -> ReliabilityBins:
    """Bin ``[N, K]`` probabilities by top probability into ``bins`` equal-width bins ``(lo, hi]`` (0 joins the
    first); compare each bin's accuracy against ``targets`` with its mean confidence."""
    if bins < 1:
        raise ValueError(f"reliability bins: need at least one bin, got {bins}")
    probabilities = np.asarray(probabilities, float)
    targets = np.asarray(targets).reshape(-1)
    if probabilities.ndim != 2 or len(probabilities) != len(targets) or not len(targets):
        raise ValueError(f"reliability bins: expected [N, K] probabilities for N targets, got "
                         f"{probabilities.shape} for {len(targets)}")
    confidence = probabilities.max(1)
    correct = (probabilities.argmax(1) == targets).astype(float)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(which, correct, bins) / counts
        mean_confidence = np.bincount(which, confidence, bins) / counts
    filled = counts > 0
    ece = float(np.sum(counts[filled] / len(targets) * np.abs(accuracy[filled] - mean_confidence[filled])))
    return ReliabilityBins(np.linspace(0, 1, bins + 1), counts, accuracy, mean_confidence, ece)


def expected_calibration_error(probabilities: np.ndarray, targets: np.ndarray, bins: int = 10) -> float:
    return reliability_bins(probabilities, targets, bins).ece
