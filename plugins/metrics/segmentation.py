"""Binary mask metrics for one image: Dice, Jaccard, SSIM, average Hausdorff distance, precision, recall.

Edge cases, chosen so that no value is ever NaN and a mean over a test set
never silently loses an image:

* Both masks empty: the prediction is perfect. Dice, Jaccard, precision and
  recall are 1, the Hausdorff distance is 0.
* Exactly one mask empty: Dice and Jaccard are 0; precision (nothing
  predicted) or recall (nothing to find) is 0 for the 0/0 side; the
  Hausdorff distance is the image diagonal, the largest distance two pixels
  of the image can have, and :func:`mask_metrics` flags the image with
  ``one_empty`` so evaluations can count such images separately.

Distances are in pixels of the arrays given (the evaluation size), measured
between pixel centres.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import distance_transform_edt, uniform_filter

SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _binary(mask: np.ndarray) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {array.shape}")
    return array > 0 if array.dtype == bool or np.issubdtype(array.dtype, np.integer) else array >= 0.5


def _ratio(numerator: float, denominator: float, both_empty: bool) -> float:
    """``numerator / denominator``, with 0/0 read as 1 when both masks are empty and 0 otherwise."""
    if denominator == 0:
        return 1.0 if both_empty else 0.0
    return float(numerator / denominator)


def overlap_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """True positive, false positive and false negative pixel counts."""
    p, t = _binary(pred), _binary(truth)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {t.shape} differ in shape")
    return int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    tp, fp, fn = overlap_counts(pred, truth)
    return _ratio(2 * tp, 2 * tp + fp + fn, tp + fp + fn == 0)


def jaccard(pred: np.ndarray, truth: np.ndarray) -> float:
    tp, fp, fn = overlap_counts(pred, truth)
    return _ratio(tp, tp + fp + fn, tp + fp + fn == 0)


def precision(pred: np.ndarray, truth: np.ndarray) -> float:
    tp, fp, fn = overlap_counts(pred, truth)
    return _ratio(tp, tp + fp, tp + fp + fn == 0)


def recall(pred: np.ndarray, truth: np.ndarray) -> float:
    tp, fp, fn = overlap_counts(pred, truth)
    return _ratio(tp, tp + fn, tp + fp + fn == 0)


def _mean_distance_to(points: np.ndarray, other: np.ndarray) -> float:
    """Mean over the pixels of ``points`` of the Euclidean distance to the nearest pixel of ``other``."""
    return float(distance_transform_edt(~other)[points].mean())


def average_hausdorff(pred: np.ndarray, truth: np.ndarray) -> float:
    """Symmetric average Hausdorff distance over all foreground pixels, in pixels.

    ``max(d(P, T), d(T, P))`` where ``d(A, B)`` is the mean, over the pixels
    of A, of the distance to the nearest pixel of B (Taha and Hanbury's
    average Hausdorff distance). Both empty: 0; one empty: the image diagonal.
    """
    p, t = _binary(pred), _binary(truth)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {t.shape} differ in shape")
    if not p.any() and not t.any():
        return 0.0
    if not p.any() or not t.any():
        return image_diagonal(p.shape)
    return max(_mean_distance_to(p, t), _mean_distance_to(t, p))


def image_diagonal(shape: tuple[int, ...]) -> float:
    """Largest distance between two pixel centres of an image of this shape."""
    return math.hypot(shape[0] - 1, shape[1] - 1)


def ssim(pred: np.ndarray, truth: np.ndarray, window: int = SSIM_WINDOW) -> float:
    """Mean structural similarity of two images with values in [0, 1] (data range 1).

    Same definition as scikit-image's default ``structural_similarity``: a
    uniform ``window`` x ``window`` filter, sample covariances, K1 = 0.01,
    K2 = 0.03, the mean taken over pixels at least ``window // 2`` from the
    border.
    """
    x, y = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"prediction {x.shape} and ground truth {y.shape} differ in shape")
    if min(x.shape) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window} pixels, got {x.shape}")
    n = window * window
    cov_norm = n / (n - 1)
    ux, uy = uniform_filter(x, window), uniform_filter(y, window)
    uxx, uyy, uxy = uniform_filter(x * x, window), uniform_filter(y * y, window), uniform_filter(x * y, window)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    pad = (window - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean())


def mask_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float | bool]:
    """Every metric of one binary prediction against its ground truth, plus pixel counts and flags."""
    p, t = _binary(pred), _binary(truth)
    tp, fp, fn = overlap_counts(p, t)
    both_empty = tp + fp + fn == 0
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, both_empty),
        "jaccard": _ratio(tp, tp + fp + fn, both_empty),
        "ssim": ssim(p.astype(np.float64), t.astype(np.float64)),
        "hd_avg": average_hausdorff(p, t),
        "precision": _ratio(tp, tp + fp, both_empty),
        "recall": _ratio(tp, tp + fn, both_empty),
        "pred_pixels": int(p.sum()),
        "true_pixels": int(t.sum()),
        "one_empty": bool(p.any()) != bool(t.any()),
    }
