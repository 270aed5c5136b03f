"""Entropy minimisation (Grandvalet & Bengio 2005) as a third-party mtssl strategy.

Install with ``pip install -e examples/entropy-plugin``, then train with
``mtssl train --task cls:entropy:weight=0.1``. It imports only ``mtssl.api``.
"""
from __future__ import annotations

import torch

from mtssl.api import (Field, Options, SSLStrategy, StrategyInputs, StrategyLoss, ViewRequest, hookimpl,
                       read_options)


class EntropyOptions(Options):
    weight: float = Field(0.1, ge=0)


class EntropyMinimisation(SSLStrategy):
    """weight * mean entropy of the class distribution on weakly augmented unlabeled images."""

    def serves(self, target):
        """One class per image (entropy of a class distribution)."""
        return target.categorical

    def __init__(self, name: str, **options):
        settings = read_options(f"strategy '{name}'", options, EntropyOptions)
        super().__init__(name, **options)
        self.weight = settings.weight

    def plan(self):
        return [ViewRequest("weak", "unlabeled", "weak")]

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        log_p = torch.log_softmax(inputs.views["weak"].float(), dim=1)
        entropy = -(log_p.exp() * log_p).sum(dim=1).mean()
        return StrategyLoss(self.weight * entropy, {"entropy": entropy.item()})


@hookimpl
def register_strategies(register):
    register("entropy", EntropyMinimisation, description="entropy minimisation on unlabeled images; option weight")
