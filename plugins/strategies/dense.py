"""Per-pixel class distributions of a mask head, shared by the segmentation strategies that serve both activations.

A sigmoid head (``activation=sigmoid``, the default) scores each structure on
its own: every pixel of every channel is a Bernoulli variable over
{background, structure}. A softmax head (``activation=softmax``) scores
exclusive structures plus a background channel: every pixel is one
categorical variable over its channels. :func:`log_distribution` turns either
into log-probabilities with the categories on dim 1 (``[B, 2, C, H, W]`` for
sigmoid, ``[B, C + 1, H, W]`` for softmax), so entropies, pseudo-labels and
consistencies below are written once: per channel for sigmoid, across
channels for softmax. Everything is computed in float32; targets are detached.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mtssl.api import Task


def activation_of(task: Task | None) -> str:
    """The mask head's activation: ``sigmoid`` unless the task says otherwise (or there is none)."""
    return getattr(task, "activation", "sigmoid")


def log_distribution(task: Task | None, logits: torch.Tensor) -> torch.Tensor:
    """Per-pixel log-probabilities of ``logits`` (the task's raw head output), categories on dim 1."""
    activation = activation_of(task)
    x = logits.float()
    if activation == "sigmoid":
        return torch.stack([F.logsigmoid(-x), F.logsigmoid(x)], dim=1)
    if activation == "softmax":
        return F.log_softmax(x, dim=1)
    raise ValueError(f"task '{task.name}': activation '{activation}' is neither sigmoid nor softmax; "
                     "segmentation strategies need one of the two")


def entropy(log_q: torch.Tensor) -> torch.Tensor:
    """``-sum_k q_k log q_k`` over the categories (dim 1), one value per pixel (and channel, for sigmoid)."""
    return -(log_q.exp() * log_q).sum(dim=1)


def pseudo_label_loss(weak_log_q: torch.Tensor, strong_log_q: torch.Tensor,
                      threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the strong prediction against the weak one's most likely category, where its
    probability is >= ``threshold``; averaged over every pixel (masked ones count as zero). Returns (loss, mask).

    For a sigmoid head this is :func:`mtssl.api.dense_pseudo_label_loss` (BCE against ``p >= 0.5``, kept
    where ``max(p, 1 - p) >= threshold``); for a softmax head, FixMatch's rule per pixel.
    """
    confidence, labels = weak_log_q.detach().exp().max(dim=1)
    mask = confidence >= threshold
    nll = -strong_log_q.gather(1, labels.unsqueeze(1)).squeeze(1)
    return (nll * mask.float()).mean(), mask


def distribution_kl(reference_q: torch.Tensor, log_q: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``KL(reference || q)`` per pixel, summed over the categories (dim 1); averaged over pixels (``mean``)
    or summed over each image's pixels and averaged over images (``sum``). The reference is detached.

    For a sigmoid head this is the Bernoulli KL of ``mtssl_plugins.functional.bernoulli_kl`` per pixel
    and channel; for a softmax head, the
    KL between the per-pixel categorical distributions.
    """
    r = reference_q.detach().float()
    kl = (torch.special.xlogy(r, r) - r * log_q.float()).sum(dim=1)
    if reduction == "sum":
        return kl.flatten(1).sum(1).mean()
    if reduction != "mean":
        raise ValueError(f"distribution_kl: reduction must be 'mean' or 'sum', got '{reduction}'")
    return kl.mean()


def distribution_mse(student_log_q: torch.Tensor, target_q: torch.Tensor) -> torch.Tensor:
    """Squared difference of probabilities, per pixel the mean over its categories, shape ``log_q`` less dim 1.

    For a sigmoid channel that is ``(p_s - p_t)^2`` (both categories differ by the same amount); the
    target is detached.
    """
    return (student_log_q.exp() - target_q.detach().float()).pow(2).mean(dim=1)


def mix(first: torch.Tensor, second: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(1 - M) first + M second`` with a ``[B, H, W]`` mask M broadcast over every dim between."""
    m = mask.reshape(mask.shape[0], *([1] * (first.dim() - 3)), *mask.shape[-2:]).to(first.dtype)
    return (1 - m) * first + m * second


def box_masks(count: int, height: int, width: int, area: float, device: torch.device) -> torch.Tensor:
    """One box per image covering about ``area`` of it (1 inside), random aspect ratio and position.

    As French et al. (2020) draw CutMix boxes: the height fraction is ``area ** u`` with ``u ~ U(0, 1)``
    and the width fraction ``area`` over it, so both lie in ``[area, 1]``. Drawn from torch's global
    generator (which the trainer seeds and checkpoints), on the CPU, so a run is the same on any device.
    """
    u = torch.rand(count, dtype=torch.float64)
    heights = (area ** u * height).round().long().clamp(1, height)
    widths = (area / area ** u * width).round().long().clamp(1, width)
    tops = (torch.rand(count, dtype=torch.float64) * (height - heights + 1)).long()
    lefts = (torch.rand(count, dtype=torch.float64) * (width - widths + 1)).long()
    rows, cols = torch.arange(height).view(1, -1, 1), torch.arange(width).view(1, 1, -1)
    inside = ((rows >= tops.view(-1, 1, 1)) & (rows < (tops + heights).view(-1, 1, 1))
              & (cols >= lefts.view(-1, 1, 1)) & (cols < (lefts + widths).view(-1, 1, 1)))
    return inside.to(device)

