"""Pure loss functions of the first-party tasks, strategies and bridges, each reduced in float32.

Kept free of modules and state so tests can check them against
hand-computed values. The building blocks any strategy may share
(pseudo-labels, ramps, sharpening, mixup, EMAs, FreeMatch's statistics)
are public in :mod:`mtssl.api` (defined in ``mtssl/functional.py``).
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


def probability_l2(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """MixMatch's unlabeled loss: squared distance of softmax to the guessed labels, averaged over images and classes."""
    return (torch.softmax(logits.float(), dim=1) - target_probs.float()).pow(2).mean()


def probability_mse(student_probs: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of probabilities over every element (Mean Teacher's consistency cost).

    The teacher side is detached: it is a target.
    """
    return (student_probs.float() - teacher_probs.detach().float()).pow(2).mean()
