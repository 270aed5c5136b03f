"""Building blocks of semi-supervised strategies, published for plugin authors through :mod:`mtssl.api`.

Pseudo-labelling, ramps, sharpening, mixup, exponential moving averages and
FreeMatch's self-adaptive thresholds: pure functions (no modules, no state),
each reduced in float32 and checked against hand-computed values, so a
third-party strategy can build on them instead of copying them. Targets
(pseudo-labels, guessed labels) are always detached.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Reduce = Callable[[torch.Tensor], torch.Tensor]
"""A collective sum over processes (:meth:`mtssl.api.StrategyContext.all_reduce_sum`)."""


# -- pseudo-labelling ---------------------------------------------------------------------------------------
def pseudo_labels(weak_logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard pseudo-labels from weak-view logits and the mask of those with confidence >= threshold.

    The logits are detached: pseudo-labels are targets, never a path for gradient.
    """
    probs = torch.softmax(weak_logits.detach().float(), dim=1)
    confidence, labels = probs.max(dim=1)
    return labels, confidence >= threshold


def fixmatch_loss(weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked cross-entropy of strong-view logits against weak-view pseudo-labels.

    Averaged over the whole unlabeled batch (as FixMatch does), so the term
    grows as more pseudo-labels pass the threshold. Returns (loss, mask).
    """
    labels, mask = pseudo_labels(weak_logits, threshold)
    per_image = F.cross_entropy(strong_logits.float(), labels, reduction="none")
    return (per_image * mask.float()).mean(), mask


def binary_pseudo_labels(logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel (per-channel) hard labels ``sigmoid >= 0.5`` and the mask of ``max(p, 1 - p) >= threshold``.

    Detached: pseudo-labels are targets.
    """
    p = torch.sigmoid(logits.detach().float())
    labels = (p >= 0.5).float()
    return labels, torch.maximum(p, 1 - p) >= threshold


def dense_pseudo_label_loss(weak_logits: torch.Tensor, strong_logits: torch.Tensor,
                            threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch for binary masks: BCE of strong logits against weak hard labels where confident.

    Averaged over every pixel of the batch (masked pixels count as zero), as
    FixMatch averages over the unlabeled batch. Returns (loss, mask).
    """
    labels, mask = binary_pseudo_labels(weak_logits, threshold)
    per_pixel = F.binary_cross_entropy_with_logits(strong_logits.float(), labels, reduction="none")
    return (per_pixel * mask.float()).mean(), mask


# -- ramps ------------------------------------------------------------------------------------------------
def sigmoid_rampup(step: int, length: int) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = min(step / length, 1)`` (Laine & Aila 2017); 1 when ``length`` is 0."""
    if length <= 0:
        return 1.0
    t = min(max(step, 0) / length, 1.0)
    return float(torch.exp(torch.tensor(-5.0 * (1.0 - t) ** 2, dtype=torch.float64)))


def linear_rampup(step: int, length: int) -> float:
    """``min(step / length, 1)`` (MixMatch's ramp); 1 when ``length`` is 0."""
    return min(1.0, max(step, 0) / length) if length > 0 else 1.0


# -- sharpening and mixup -----------------------------------------------------------------------------------
def sharpen(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """MixMatch sharpening: ``p_i^(1/T) / sum_j p_j^(1/T)`` along the class dimension (dim 1).

    T -> 0 tends to one-hot, T = 1 leaves ``probs`` unchanged.
    """
    if temperature <= 0:
        raise ValueError(f"sharpen: temperature must be > 0, got {temperature}")
    # In log space, so a small T does not underflow every power to zero.
    return torch.softmax(torch.log(probs.float()) / temperature, dim=1)


def guess_labels(augmented_logits: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """Sharpened mean softmax over K augmentations of the same unlabeled batch; a target, so detached."""
    mean = torch.stack([torch.softmax(l.detach().float(), dim=1) for l in augmented_logits]).mean(dim=0)
    return sharpen(mean, temperature)


def mixup_lambda(alpha: float) -> float:
    """``lambda' = max(lambda, 1 - lambda)`` with ``lambda ~ Beta(alpha, alpha)``, so the first input dominates.

    Drawn from torch's global generator, which the trainer seeds.
    """
    if alpha <= 0:
        raise ValueError(f"mixup: alpha must be > 0, got {alpha}")
    lam = float(torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha))).sample())
    return max(lam, 1.0 - lam)


def mixup(x1: torch.Tensor, y1: torch.Tensor, x2: torch.Tensor, y2: torch.Tensor,
          lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Convex combination ``lam * (x1, y1) + (1 - lam) * (x2, y2)`` of inputs and soft targets."""
    return lam * x1 + (1 - lam) * x2, lam * y1 + (1 - lam) * y2


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Mean over images of ``-sum_c q_c log softmax(logits)_c`` (targets are soft, e.g. mixed one-hots)."""
    return -(target_probs.float() * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


# -- moving averages ----------------------------------------------------------------------------------------
def ema_update(average: torch.Tensor, value: torch.Tensor, momentum: float) -> torch.Tensor:
    """``momentum * average + (1 - momentum) * value``: a new tensor, the inputs stay as they were."""
    return momentum * average + (1 - momentum) * value


# -- FreeMatch --------------------------------------------------------------------------------------------
def freematch_update(time_p: torch.Tensor, p_model: torch.Tensor, label_hist: torch.Tensor,
                     probs: torch.Tensor, momentum: float,
                     reduce: Reduce | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FreeMatch's EMA statistics after one batch of weak-view probabilities ``[B, C]``.

    Global threshold ``tau = m tau + (1-m) mean_b max_c p``; class-wise mean
    probability ``p~ = m p~ + (1-m) mean_b p``; histogram of predicted classes
    ``h = m h + (1-m) hist/B`` (for the fairness term). With ``reduce`` (a sum
    over processes) the batch means are taken over every process's batch, as
    if they were one, so every process ends with the same statistics.
    """
    classes = probs.shape[1]
    max_probs, max_idx = probs.max(dim=1)
    hist = torch.bincount(max_idx, minlength=classes).to(probs.dtype)
    count = torch.full((1,), float(probs.shape[0]), dtype=probs.dtype, device=probs.device)
    sums = torch.cat([count, max_probs.sum().reshape(1), probs.sum(dim=0), hist])  # one collective for all
    if reduce is not None:
        sums = reduce(sums)
    count, max_sum, prob_sum, hist = sums[0], sums[1], sums[2:2 + classes], sums[2 + classes:]
    return (ema_update(time_p, max_sum / count, momentum), ema_update(p_model, prob_sum / count, momentum),
            ema_update(label_hist, hist / hist.sum(), momentum))


def freematch_thresholds(time_p: torch.Tensor, p_model: torch.Tensor) -> torch.Tensor:
    """Class-wise thresholds ``tau * p~(c) / max p~``."""
    return time_p * p_model / p_model.max()


def freematch_mask(probs: torch.Tensor, time_p: torch.Tensor, p_model: torch.Tensor) -> torch.Tensor:
    """Self-adaptive class-wise thresholds: keep an image when ``max p >= tau * p~(c) / max p~`` for its class c."""
    max_probs, max_idx = probs.max(dim=1)
    return max_probs >= freematch_thresholds(time_p, p_model)[max_idx]


def freematch_fairness(mask: torch.Tensor, strong_logits: torch.Tensor, p_model: torch.Tensor,
                       label_hist: torch.Tensor) -> torch.Tensor:
    """FreeMatch's self-adaptive fairness term (as in USB): ``sum_c mod(p~)_c log mod(mean p_s)_c``.

    ``mod`` divides by the (EMA or batch) histogram of predicted classes and
    renormalises. Zero when no strong prediction passes the mask.
    """
    logits = strong_logits.float()[mask]
    if logits.shape[0] == 0:
        return strong_logits.float().sum() * 0.0
    prob_s = logits.softmax(dim=1)
    hist_s = torch.bincount(prob_s.argmax(1), minlength=prob_s.shape[1]).to(prob_s.dtype)
    hist_s = hist_s / hist_s.sum()
    scaled_model = p_model * torch.nan_to_num(1 / label_hist, nan=0.0, posinf=0.0, neginf=0.0)
    scaled_model = scaled_model / scaled_model.sum()
    scaled_s = prob_s.mean(dim=0) * torch.nan_to_num(1 / hist_s, nan=0.0, posinf=0.0, neginf=0.0)
    scaled_s = scaled_s / scaled_s.sum()
    return (scaled_model.detach() * torch.log(scaled_s + 1e-12)).sum()


__all__ = [
    "pseudo_labels", "fixmatch_loss", "binary_pseudo_labels", "dense_pseudo_label_loss", "sigmoid_rampup",
    "linear_rampup", "sharpen", "guess_labels", "mixup_lambda", "mixup", "soft_cross_entropy", "ema_update",
    "freematch_update", "freematch_thresholds", "freematch_mask", "freematch_fairness",
]
