"""Cross-consistency training (Ouali et al., CVPR 2020) for masks, with the main decoder on perturbed features.

CCT trains auxiliary decoders on perturbed encoder features of unlabeled
images to agree with the main decoder's prediction on the clean features.
Here the perturbed features go through the task's own head
(:attr:`mtssl.api.StrategyInputs.head`), not through separate auxiliary
decoders: strategies own no trainable modules, so the consistency trains the
encoder and the shared head alike. Each step runs three of CCT's
perturbations on every feature level of an unlabeled view:

* feature noise: ``f + f * n`` with ``n ~ U(-noise, noise)``, one draw per position shared by the batch;
* feature drop: positions whose channel-mean activation reaches ``gamma * max`` (``gamma ~ U(0.7, 0.9)``
  per image) are zeroed, hiding the most active regions;
* dropout: channel dropout ``Dropout2d(dropout)``.

The loss is ``weight * rampup(step) * mean_k MSE(q(perturbed_k), q(clean))``,
the clean prediction detached, probabilities per channel for a sigmoid head
and across channels for a softmax head.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from mtssl.api import (Field, Options, SSLStrategy, StrategyInputs, StrategyLoss, ViewRequest, read_options,
                       sigmoid_rampup)
from mtssl_plugins.strategies.dense import distribution_mse, log_distribution


def feature_noise(features: torch.Tensor, spread: float) -> torch.Tensor:
    """``f + f * n``, ``n ~ U(-spread, spread)`` drawn once per channel and position, shared by the batch."""
    noise = (torch.rand(features.shape[1:], device=features.device) * 2 - 1) * spread
    return features + features * noise.to(features.dtype).unsqueeze(0)


def feature_drop(features: torch.Tensor, low: float = 0.7, high: float = 0.9) -> torch.Tensor:
    """Zero the positions whose channel-mean activation is >= ``gamma * max`` of its image, ``gamma ~ U(low, high)``."""
    attention = features.float().mean(dim=1, keepdim=True)
    peak = attention.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    gamma = low + (high - low) * torch.rand(features.shape[0], 1, 1, 1, device=features.device)
    return features * (attention < peak * gamma).to(features.dtype)


class CCTOptions(Options):
    weight: float = Field(1.0, ge=0.0)
    rampup: int = Field(200, ge=0, description="steps of the sigmoid ramp-up of the weight")
    noise: float = Field(0.3, ge=0.0, le=1.0, description="spread of the multiplicative feature noise")
    dropout: float = Field(0.3, ge=0.0, lt=1.0, description="channel dropout on the features")


class CrossConsistency(SSLStrategy):
    """weight * rampup(step) * mean over noise, drop and dropout of MSE(q(head(perturbed)), q(clean))."""

    def serves(self, target):
        """Binary structure maps, one or more channels (a sigmoid or a softmax head)."""
        return target.spatial and target.binary

    def __init__(self, name: str, **options):
        settings = read_options(f"strategy '{name}'", options, CCTOptions)
        super().__init__(name, **options)
        self.weight, self.rampup = settings.weight, settings.rampup
        self.noise, self.dropout = settings.noise, settings.dropout

    def plan(self):
        return [ViewRequest("unlabeled", "unlabeled", "weak", features=True)]

    def perturbations(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        """CCT's three feature perturbations, by the name their loss is logged under."""
        return {"noise": lambda f: feature_noise(f, self.noise), "drop": feature_drop,
                "dropout": lambda f: F.dropout2d(f, self.dropout, training=True)}

    @staticmethod
    def consistency(inputs: StrategyInputs, perturb: Callable[[torch.Tensor], torch.Tensor],
                    clean: torch.Tensor) -> torch.Tensor:
        """MSE of the head's prediction on perturbed features of the unlabeled view to the clean prediction."""
        features = [perturb(f) for f in inputs.view_features["unlabeled"]]
        return distribution_mse(log_distribution(inputs.task, inputs.head("unlabeled", features)), clean).mean()

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        clean = log_distribution(inputs.task, inputs.views["unlabeled"]).exp().detach()
        terms = {name: self.consistency(inputs, perturb, clean) for name, perturb in self.perturbations().items()}
        mse = torch.stack(list(terms.values())).mean()
        weight = self.weight * sigmoid_rampup(inputs.step, self.rampup)
        return StrategyLoss(weight * mse, {**{k: v.detach() for k, v in terms.items()}, "weight": weight})
