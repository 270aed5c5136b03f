"""Building blocks of semi-supervised strategies, published for plugin authors through :mod:`mtssl.api`.

Pseudo-labelling, ramps, sharpening, mixup, exponential moving averages,
statistics pooled over processes, distribution alignment, and FreeMatch's,
SoftMatch's and FlexMatch's adaptive thresholds and weights: pure functions (no modules, no state),
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


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``mean_b w_b CE(logits_b, labels_b)``: pseudo-labels weighed by a 0/1 mask or soft weights.

    ``labels`` are class indices ``[B]`` or class probabilities ``[B, C]`` (soft
    pseudo-labels, detached). Averaged over the whole batch, as FixMatch
    averages, so the term grows with the number (or weight) of pseudo-labels that count.
    """
    if labels.is_floating_point():
        labels = labels.detach().float()
    per_image = F.cross_entropy(logits.float(), labels, reduction="none")
    return (per_image * weights.detach().float()).mean()

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



# -- pooled statistics and distribution alignment -------------------------------------------------------------
def pooled_means(blocks: list[torch.Tensor], reduce: Reduce | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Column means of each ``[B_i, K_i]`` block over every process's batch, with the pooled row count.

    One collective for all blocks (their column sums and row counts travel
    together), so statistics of several batches of different sizes (labeled
    and unlabeled) cost one all-reduce. Without ``reduce``: this batch only.
    """
    parts = [torch.cat([torch.full((1,), float(b.shape[0]), dtype=b.dtype, device=b.device), b.sum(dim=0)])
             for b in blocks]
    sums = torch.cat(parts)
    if reduce is not None:
        sums = reduce(sums)
    out, start = [], 0
    for block in blocks:
        count, total = sums[start], sums[start + 1:start + 1 + block.shape[1]]
        out.append((total / count, count))
        start += 1 + block.shape[1]
    return out


def gather_rows(rows: torch.Tensor, rank: int, world_size: int, reduce: Reduce | None = None) -> torch.Tensor:
    """Every process's ``rows`` stacked in rank order, through a collective sum (each process passes as many).

    Rank r's rows go into block r of a zero tensor that the sum then fills
    from every rank, so all processes get the same stack (a memory bank stays
    the same everywhere). Without ``reduce`` (one process): a copy of ``rows``.
    """
    if reduce is None or world_size == 1:
        return rows.clone()
    blocks = rows.new_zeros((world_size, *rows.shape))
    blocks[rank] = rows
    return reduce(blocks).flatten(0, 1)


def align_distribution(probs: torch.Tensor, target: torch.Tensor, model: torch.Tensor) -> torch.Tensor:
    """Distribution alignment (ReMixMatch): ``p * target / model``, renormalised over classes (dim 1).

    ``model`` is the model's class distribution on these images (a running
    mean), ``target`` the one it should have (uniform for SoftMatch, the
    labeled batch's for AdaMatch). Detached: the result makes targets.
    """
    aligned = probs.detach().float() * target / model.clamp_min(1e-12)
    return aligned / aligned.sum(dim=1, keepdim=True)


# -- SoftMatch ------------------------------------------------------------------------------------------------
def softmatch_update(mean: torch.Tensor, variance: torch.Tensor, max_probs: torch.Tensor, momentum: float,
                     reduce: Reduce | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SoftMatch's EMA of the mean and unbiased variance of the confidence ``max p`` over every process's batch.

    ``mu = m mu + (1-m) mean(max p)``, ``var = m var + (1-m) var_unbiased(max p)``
    (a batch of one image adds variance 0).
    """
    confidence = max_probs.detach().float()
    [(moments, count)] = pooled_means([torch.stack([confidence, confidence * confidence], dim=1)], reduce)
    batch_mean = moments[0]
    batch_var = ((moments[1] - batch_mean * batch_mean) * count / (count - 1).clamp_min(1)).clamp_min(0)
    return ema_update(mean, batch_mean, momentum), ema_update(variance, batch_var, momentum)


def softmatch_weights(max_probs: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor,
                      n_sigma: float = 2.0) -> torch.Tensor:
    """Truncated Gaussian sample weights ``exp(-min(p - mu, 0)^2 / (2 var / n_sigma^2))``: 1 at or above ``mu``."""
    below = torch.clamp(max_probs.detach().float() - mean, max=0.0)
    return torch.exp(-(below * below) / (2 * variance / n_sigma ** 2))


# -- FlexMatch ------------------------------------------------------------------------------------------------
def flexmatch_update(learning: torch.Tensor, probs: torch.Tensor, threshold: float, momentum: float,
                     reduce: Reduce | None = None) -> torch.Tensor:
    """FlexMatch's learning status after one batch of weak-view probabilities ``[B, C]``, as ``C + 1`` fractions.

    Entry c is the share of recent unlabeled predictions confidently (``max p >= threshold``)
    of class c (FlexMatch's sigma_c), the last the share left unconfident (its unused items).
    FlexMatch counts each item's latest prediction; without item identities this
    keeps an EMA of the batch shares instead, a window of about ``1 / (1 - momentum)`` batches.
    """
    classes = probs.shape[1]
    confidence, label = probs.detach().float().max(dim=1)
    confident = confidence >= threshold
    rows = torch.zeros(probs.shape[0], classes + 1, device=probs.device)
    rows[torch.arange(probs.shape[0], device=probs.device), torch.where(confident, label, classes)] = 1.0
    [(shares, _)] = pooled_means([rows], reduce)
    return ema_update(learning, shares, momentum)


def flexmatch_thresholds(learning: torch.Tensor, threshold: float, warmup: bool = True,
                         mapping: str = "convex") -> torch.Tensor:
    """Class-wise thresholds ``M(beta_c) * threshold`` from the learning status of :func:`flexmatch_update`.

    ``beta_c = sigma_c / max(max_c sigma, unused)`` with warm-up (unused
    predictions count as a class, so thresholds rise as the model gets
    confident), ``sigma_c / max_c sigma`` without (0 while no class has any);
    ``M(x) = x / (2 - x)`` (``convex``) or ``x`` (``linear``).
    """
    sigma, unused = learning[:-1], learning[-1]
    scale = torch.maximum(sigma.max(), unused) if warmup else sigma.max()
    beta = torch.where(scale > 0, sigma / scale.clamp_min(1e-12), torch.zeros_like(sigma))
    if mapping == "convex":
        return threshold * beta / (2 - beta)
    if mapping == "linear":
        return threshold * beta
    raise ValueError(f"flexmatch_thresholds: mapping must be 'convex' or 'linear', got '{mapping}'")


__all__ = [
    "pseudo_labels", "fixmatch_loss", "binary_pseudo_labels", "dense_pseudo_label_loss", "sigmoid_rampup",
    "linear_rampup", "sharpen", "guess_labels", "mixup_lambda", "mixup", "soft_cross_entropy", "ema_update",
    "freematch_update", "freematch_thresholds", "freematch_mask", "freematch_fairness", "pooled_means",
    "weighted_cross_entropy", "align_distribution", "softmatch_update", "softmatch_weights", "flexmatch_update",
    "flexmatch_thresholds", "gather_rows",
]
