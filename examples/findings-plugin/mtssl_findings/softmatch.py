"""SoftMatch (Chen et al., ICLR 2023) for multi-label targets: every pseudo-label counts, softly weighted.

Per finding of a weakly augmented unlabeled image the pseudo-label is
``sigmoid >= 0.5`` and its confidence ``c = max(p, 1 - p)``. Instead of a
hard threshold, the strong view's binary cross-entropy is weighted by a
truncated Gaussian of the confidence: 1 at or above the running mean ``mu``,
``exp(-(c - mu)^2 / (2 sigma^2))`` below, with ``sigma = sqrt(var) / n_sigma``.
``mu`` and ``var`` are exponential moving averages of the batch's mean and
variance of confidence; they are the strategy's state:

* reduced over every process (one all-reduce of count, sum and sum of
  squares through the run's :class:`mtssl.api.StrategyContext`), so every
  torchrun rank keeps the same bits;
* proposed by :meth:`loss` and kept by :meth:`commit`, so a step the
  divergence guard skips does not move them;
* saved and restored with the run (:meth:`state_dict`), so ``--resume`` is bit-exact.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from mtssl.api import (Field, Options, SSLStrategy, StrategyInputs, StrategyLoss, TargetSpec, ViewRequest,
                       binary_pseudo_labels, ema_update, read_options)

INITIAL_MEAN, INITIAL_VARIANCE = 0.5, 1.0
"""Before any batch: the confidence of a coin flip, and a variance that weighs every pseudo-label near 1."""


def confidence_statistics(mean: torch.Tensor, variance: torch.Tensor, confidence: torch.Tensor, momentum: float,
                          reduce: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The EMA mean and variance of confidence after one batch, its moments summed over every process."""
    flat = confidence.reshape(-1)
    sums = reduce(torch.stack([torch.tensor(float(flat.numel()), device=flat.device), flat.sum(),
                               (flat * flat).sum()]))
    batch_mean = sums[1] / sums[0]
    batch_variance = (sums[2] / sums[0] - batch_mean ** 2).clamp_min(0)
    return ema_update(mean, batch_mean, momentum), ema_update(variance, batch_variance, momentum)


def truncated_gaussian(confidence: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor,
                       n_sigma: float) -> torch.Tensor:
    """1 where ``confidence >= mean``; below it ``exp(-(c - mean)^2 / (2 (sqrt(variance) / n_sigma)^2))``."""
    below = (confidence - mean).clamp_max(0)
    return torch.exp(-below ** 2 / (2 * variance.clamp_min(1e-12) / n_sigma ** 2))


class SoftMatchOptions(Options):
    weight: float = Field(1.0, ge=0.0, description="weight of the unlabeled loss")
    momentum: float = Field(0.999, ge=0.0, lt=1.0, description="EMA momentum of the confidence statistics")
    n_sigma: float = Field(2.0, gt=0.0, description="the Gaussian's width is sqrt(var) / n_sigma")


class MultiLabelSoftMatch(SSLStrategy):
    """weight * mean over findings of lambda(c) * BCE(strong, weak pseudo-label)."""

    STATE = ("mean", "variance")

    def __init__(self, name: str, **options):
        settings = read_options(f"strategy '{name}'", options, SoftMatchOptions)
        super().__init__(name, **options)
        self.weight, self.momentum, self.n_sigma = settings.weight, settings.momentum, settings.n_sigma
        self.mean = torch.tensor(INITIAL_MEAN)
        self.variance = torch.tensor(INITIAL_VARIANCE)
        self.proposed: tuple[torch.Tensor, torch.Tensor] | None = None

    def serves(self, target: TargetSpec) -> bool:
        """A vector of 0/1 findings per image (a sigmoid per element)."""
        return not target.spatial and len(target.shape) == 1 and np.issubdtype(np.dtype(target.dtype), np.floating)

    def plan(self):
        return [ViewRequest("weak", "unlabeled", "weak", grad=False), ViewRequest("strong", "unlabeled", "strong")]

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        weak, strong = inputs.views["weak"].detach().float(), inputs.views["strong"]
        labels, _ = binary_pseudo_labels(weak, 0.5)
        probs = torch.sigmoid(weak)
        confidence = torch.maximum(probs, 1 - probs)
        mean, variance = self.proposed = confidence_statistics(
            self.mean.to(weak.device), self.variance.to(weak.device), confidence, self.momentum,
            self.context.all_reduce_sum)
        weights = truncated_gaussian(confidence, mean, variance, self.n_sigma)
        bce = F.binary_cross_entropy_with_logits(strong.float(), labels, reduction="none")
        return StrategyLoss(self.weight * (weights * bce).mean(),
                            {"weight_mean": weights.mean(), "confidence_mean": mean.detach().clone()})

    def commit(self) -> None:
        if self.proposed is not None:
            self.mean, self.variance = (t.detach() for t in self.proposed)
            self.proposed = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {key: getattr(self, key).detach().clone() for key in self.STATE}

    def load_state_dict(self, state) -> None:
        for key in self.STATE:
            setattr(self, key, state[key].detach().clone())
        self.proposed = None
