"""Entropy minimisation (Grandvalet & Bengio 2005), per pixel, for masks.

The model is pushed toward confident predictions on unlabeled images:
``weight * rampup(step) * mean H(q)``, where H is each pixel's entropy in nats,
per channel for a sigmoid head (a Bernoulli per structure) and across channels
for a softmax head (structures plus background), averaged over every pixel.
"""
from __future__ import annotations

from mtssl.api import (Field, Options, SSLStrategy, StrategyInputs, StrategyLoss, ViewRequest,
                       sigmoid_rampup)
from mtssl_plugins.strategies.dense import entropy, log_distribution


class EntropyOptions(Options):
    weight: float = Field(0.1, ge=0.0, description="weight of the mean pixel entropy (after the ramp-up)")
    rampup: int = Field(200, ge=0, description="steps of the sigmoid ramp-up of the weight")


class EntropyMinimisation(SSLStrategy):
    """weight * rampup(step) * mean per-pixel entropy of the unlabeled predictions."""

    options_model = EntropyOptions

    def serves(self, target):
        """Binary structure maps, one or more channels (a sigmoid or a softmax head)."""
        return target.spatial and target.binary

    def plan(self):
        return [ViewRequest("unlabeled", "unlabeled", "weak")]

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        mean_entropy = entropy(log_distribution(inputs.task, inputs.views["unlabeled"])).mean()
        weight = self.weight * sigmoid_rampup(inputs.step, self.rampup)
        return StrategyLoss(weight * mean_entropy, {"entropy": mean_entropy.detach(), "weight": weight})
