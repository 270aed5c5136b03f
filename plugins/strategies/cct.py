"""Cross-consistency training (Ouali et al., CVPR 2020) for masks: auxiliary decoders on perturbed features.

The task's head (the main decoder) learns from labels only. Three auxiliary
decoders, each built as the task's head is (:meth:`SSLStrategy.modules`:
the strategy owns them, the core trains and checkpoints them), decode
perturbed backbone features of an unlabeled view and are pulled toward the
main decoder's prediction on the clean features; the encoder learns from
their consistency through the perturbed features. One perturbation per
decoder, on every feature level (the U-Net decoder reads every level):

* ``noise``: ``f + f * n`` with ``n ~ U(-noise, noise)``, one draw per position shared by the batch;
* ``drop``: positions whose channel-mean activation reaches ``gamma * max`` (``gamma ~ U(0.7, 0.9)``
  per image) are zeroed, hiding the most active regions;
* ``dropout``: channel dropout ``Dropout2d(dropout)``.

The loss is ``weight * rampup(step) * mean_k MSE(q(decoder_k(perturbed_k)), q(clean))``,
the clean prediction detached, probabilities per channel for a sigmoid head
and across channels for a softmax head. The auxiliary decoders take no part
in validation, evaluation or export.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mtssl.api import (Field, HeadInputs, Options, SSLStrategy, StrategyInputs, StrategyLoss, Task, ViewRequest,
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
    weight: float = Field(1.0, ge=0.0, description="weight of the consistency loss (after the ramp-up)")
    rampup: int = Field(200, ge=0, description="steps of the sigmoid ramp-up of the weight")
    noise: float = Field(0.3, ge=0.0, le=1.0, description="spread of the multiplicative feature noise")
    dropout: float = Field(0.3, ge=0.0, lt=1.0, description="channel dropout on the features")


class CrossConsistency(SSLStrategy):
    """weight * rampup(step) * mean over noise, drop and dropout of MSE(q(decoder_k(perturbed_k)), q(clean))."""

    options_model = CCTOptions

    def serves(self, target):
        """Binary structure maps, one or more channels (a sigmoid or a softmax head)."""
        return target.spatial and target.binary

    def __init__(self, name: str, **options):
        super().__init__(name, **options)
        self.decoders: nn.ModuleDict | None = None

    def modules(self, task: Task, inputs: HeadInputs) -> nn.ModuleDict:
        """One auxiliary decoder per perturbation, each built as the task's own head."""
        self.decoders = nn.ModuleDict({name: task.build_head(inputs) for name in self.perturbations()})
        return self.decoders

    def plan(self):
        return [ViewRequest("unlabeled", "unlabeled", "weak", features=True)]

    def perturbations(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        """CCT's three feature perturbations, by the name their loss is logged under."""
        return {"noise": lambda f: feature_noise(f, self.noise), "drop": feature_drop,
                "dropout": lambda f: F.dropout2d(f, self.dropout, training=True)}

    def consistency(self, inputs: StrategyInputs, name: str, clean: torch.Tensor) -> torch.Tensor:
        """MSE of auxiliary decoder ``name`` on its perturbation of the unlabeled view's features to ``clean``."""
        features = [self.perturbations()[name](f) for f in inputs.view_features["unlabeled"]]
        output = inputs.head("unlabeled", features, self.decoders[name])
        return distribution_mse(log_distribution(inputs.task, output), clean).mean()

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        if self.decoders is None:
            raise ValueError(f"strategy '{self.name}': its auxiliary decoders were never built (modules())")
        clean = log_distribution(inputs.task, inputs.views["unlabeled"]).exp().detach()
        terms = {name: self.consistency(inputs, name, clean) for name in self.perturbations()}
        mse = torch.stack(list(terms.values())).mean()
        weight = self.weight * sigmoid_rampup(inputs.step, self.rampup)
        return StrategyLoss(weight * mse, {**{k: v.detach() for k, v in terms.items()}, "weight": weight})
