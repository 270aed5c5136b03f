"""Pure loss functions of MultiMix, each reduced in float32.

Kept free of modules and state so tests can check them against
hand-computed values.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss on per-channel sigmoid probabilities (see :func:`soft_dice`)."""
    return soft_dice(torch.sigmoid(logits.float()), target, eps)


def soft_dice(probs: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss of ``[B, C, H, W]`` probabilities, averaged over images and channels.

    ``1 - (2 sum(p*g) + eps) / (sum(p) + sum(g) + eps)`` per image and
    channel; ``eps`` (Laplace smoothing) keeps an empty mask predicted empty
    at zero loss. With one channel this is the binary Dice loss per image.
    """
    p = probs.float().flatten(2)
    g = target.float().flatten(2)
    dice = (2 * (p * g).sum(-1) + eps) / (p.sum(-1) + g.sum(-1) + eps)
    return (1 - dice).mean()


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


def bernoulli_kl(p: torch.Tensor, q_logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Per-pixel KL(Bernoulli(p) || Bernoulli(sigmoid(q_logits))), averaged (``mean``) or summed
    over each image's pixels and averaged over images (``sum``).

    ``p`` is the reference probability (no gradient flows into it); the
    gradient with respect to ``q_logits`` is ``(sigmoid(q) - p) / N``, which
    pulls q toward p. A softmax over one channel would make this identically
    zero; sigmoid probabilities keep it a real term.
    """
    p = p.detach().float().clamp(0.0, 1.0)
    q_logits = q_logits.float()
    log_q, log_not_q = F.logsigmoid(q_logits), F.logsigmoid(-q_logits)
    kl = (torch.special.xlogy(p, p) - p * log_q) + (torch.special.xlogy(1 - p, 1 - p) - (1 - p) * log_not_q)
    if reduction == "sum":
        return kl.flatten(1).sum(1).mean()
    if reduction != "mean":
        raise ValueError(f"bernoulli_kl: reduction must be 'mean' or 'sum', got '{reduction}'")
    return kl.mean()


def input_saliency(score: torch.Tensor, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """``|d score.sum() / d images|``, reduced over channels, optionally scaled to [0, 1] per image.

    Uses ``torch.autograd.grad`` with the graph retained, so the caller's
    loss can still be backpropagated afterwards and no parameter ``.grad`` is
    touched.
    """
    (grad,) = torch.autograd.grad(score.sum(), images, retain_graph=True)
    saliency = grad.abs().amax(dim=1, keepdim=True)
    if normalize:
        peak = saliency.flatten(1).amax(1).clamp_min(1e-12)
        saliency = saliency / peak.view(-1, 1, 1, 1)
    return saliency


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


def probability_l2(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """MixMatch's unlabeled loss: squared distance of softmax to the guessed labels, averaged over images and classes."""
    return (torch.softmax(logits.float(), dim=1) - target_probs.float()).pow(2).mean()


def sigmoid_rampup(step: int, length: int) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = min(step / length, 1)`` (Laine & Aila 2017); 1 when ``length`` is 0."""
    if length <= 0:
        return 1.0
    t = min(max(step, 0) / length, 1.0)
    return float(torch.exp(torch.tensor(-5.0 * (1.0 - t) ** 2, dtype=torch.float64)))


def probability_mse(student_probs: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of probabilities over every element (Mean Teacher's consistency cost).

    The teacher side is detached: it is a target.
    """
    return (student_probs.float() - teacher_probs.detach().float()).pow(2).mean()


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


def freematch_update(time_p: torch.Tensor, p_model: torch.Tensor, label_hist: torch.Tensor,
                     probs: torch.Tensor, momentum: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FreeMatch's EMA statistics after one batch of weak-view probabilities ``[B, C]``.

    Global threshold ``tau = m tau + (1-m) mean_b max_c p``; class-wise mean
    probability ``p~ = m p~ + (1-m) mean_b p``; histogram of predicted classes
    ``h = m h + (1-m) hist/B`` (for the fairness term).
    """
    max_probs, max_idx = probs.max(dim=1)
    time_p = momentum * time_p + (1 - momentum) * max_probs.mean()
    p_model = momentum * p_model + (1 - momentum) * probs.mean(dim=0)
    hist = torch.bincount(max_idx, minlength=probs.shape[1]).to(probs.dtype)
    label_hist = momentum * label_hist + (1 - momentum) * hist / hist.sum()
    return time_p, p_model, label_hist


def freematch_mask(probs: torch.Tensor, time_p: torch.Tensor, p_model: torch.Tensor) -> torch.Tensor:
    """Self-adaptive class-wise thresholds: keep an image when ``max p >= tau * p~(c) / max p~`` for its class c."""
    max_probs, max_idx = probs.max(dim=1)
    thresholds = time_p * p_model / p_model.max()
    return max_probs >= thresholds[max_idx]


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
