"""SoftMatch (Chen et al., ICLR 2023): every pseudo-label counts, weighted by how confident it is.

Instead of a hard threshold, an image's weight is a Gaussian of its
confidence ``max p`` truncated at the running mean ``mu``: 1 at or above
``mu``, ``exp(-(max p - mu)^2 / (2 var / n_sigma^2))`` below, with ``mu`` and
``var`` exponential moving averages of the confidence's batch mean and
unbiased variance (starting at 1/C and 1). With ``align`` (uniform alignment)
the weak probabilities are first rescaled by ``uniform / p_model``, ``p_model``
being the moving average of the unaligned class means, so that rare
classes are not starved. Follows USB: the statistics take the current batch
before they weigh it, reduced over processes (two all-reduces: the alignment
needs the updated class means first), proposed by ``loss``, kept by ``commit``.
"""
from __future__ import annotations

import torch

from mtssl.api import (Field, Options, StrategyInputs, StrategyLoss, ViewRequest, align_distribution, ema_update,
                       pooled_means, softmatch_update, softmatch_weights, weighted_cross_entropy)
from mtssl_plugins.strategies.stateful import StatefulStrategy


class SoftMatchOptions(Options):
    weight: float = Field(1.0, ge=0.0, description="weight of the confidence-weighted pseudo-label loss")
    momentum: float = Field(0.999, ge=0.0, lt=1.0, description="EMA momentum of the statistics")
    n_sigma: float = Field(2.0, gt=0.0, description="width of the Gaussian, in standard deviations")
    align: bool = Field(True, description="uniform alignment of the weak probabilities")


class SoftMatch(StatefulStrategy):
    """weight * mean_b w_b CE(strong_b, argmax aligned weak_b), w a truncated Gaussian of the confidence."""

    STATE = ("mean", "variance", "p_model")
    options_model = SoftMatchOptions

    def serves(self, target):
        """One class per image: weights and alignment are over classes."""
        return target.categorical

    def plan(self):
        return [ViewRequest("weak", "unlabeled", "weak", grad=False), ViewRequest("strong", "unlabeled", "strong")]

    def initial_state(self, classes, device):
        """SoftMatch's start: mean confidence 1/C, variance 1, a uniform class distribution."""
        return {"mean": torch.tensor(1.0 / classes, device=device), "variance": torch.tensor(1.0, device=device),
                "p_model": torch.full((classes,), 1.0 / classes, device=device)}

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        weak, strong = inputs.views["weak"], inputs.views["strong"]
        probs = torch.softmax(weak.detach().float(), dim=1)
        state = self.committed(probs.shape[1], probs.device)
        p_model = state["p_model"]
        if self.align:
            [(batch_means, _)] = pooled_means([probs], self.context.all_reduce_sum)
            p_model = ema_update(p_model, batch_means, self.momentum)
            probs = align_distribution(probs, torch.full_like(p_model, 1.0 / len(p_model)), p_model)
        confidence, labels = probs.max(dim=1)
        mean, variance = softmatch_update(state["mean"], state["variance"], confidence, self.momentum,
                                          self.context.all_reduce_sum)
        self.propose({"mean": mean, "variance": variance, "p_model": p_model})
        weights = softmatch_weights(confidence, mean, variance, self.n_sigma)
        ce = weighted_cross_entropy(strong, labels, weights)
        return StrategyLoss(self.weight * ce, {"mask_rate": weights.mean(), "mu": mean.clone(),
                                               "variance": variance.clone()})
