"""FlexMatch (Zhang et al., NeurIPS 2021): FixMatch with curriculum pseudo labeling.

Each class gets its own threshold ``M(beta_c) * threshold`` from its learning
status: how many unlabeled predictions are confidently (above the fixed
``threshold``) of that class, relative to the best-learned class, or, during
warm-up, to the predictions that are not yet confident (``M(x) = x / (2 - x)``
by default). Classes the model has learned little get low thresholds and
so more pseudo-labels.

FlexMatch keeps every unlabeled item's latest confident prediction, which
needs item identities that views do not carry; this plugin approximates the
counts by an exponential moving average of each batch's class shares (a window
of about ``1 / (1 - momentum)`` batches; the paper's window is one pass over the
unlabeled set). The shares start all unconfident, as FlexMatch's items start
unused, are reduced over processes, proposed by ``loss`` and kept by ``commit``.
"""
from __future__ import annotations

from typing import Literal

import torch

from mtssl.api import (Field, Options, StrategyInputs, StrategyLoss, ViewRequest, flexmatch_thresholds,
                       flexmatch_update, weighted_cross_entropy)
from mtssl_plugins.strategies.stateful import StatefulStrategy


class FlexMatchOptions(Options):
    threshold: float = Field(0.95, gt=0.0, le=1.0, description="fixed threshold tau the class thresholds scale")
    weight: float = Field(1.0, ge=0.0, description="weight of the pseudo-label loss")
    momentum: float = Field(0.99, ge=0.0, lt=1.0, description="EMA momentum of the class shares")
    warmup: bool = Field(True, description="count unconfident predictions as a class (threshold warm-up)")
    mapping: Literal["convex", "linear"] = Field("convex", description="M(x) = x / (2 - x), or x")


class FlexMatch(StatefulStrategy):
    """weight * CE(strong, argmax weak) where max softmax(weak) >= M(beta_c) * threshold for its class c."""

    STATE = ("learning",)
    options_model = FlexMatchOptions

    def serves(self, target):
        """One class per image: thresholds are class-wise."""
        return target.categorical

    def plan(self):
        return [ViewRequest("weak", "unlabeled", "weak", grad=False), ViewRequest("strong", "unlabeled", "strong")]

    def initial_state(self, classes, device):
        """Every prediction unconfident: all the share is the last (unused) entry."""
        learning = torch.zeros(classes + 1, device=device)
        learning[-1] = 1.0
        return {"learning": learning}

    def thresholds(self) -> torch.Tensor:
        """The class-wise thresholds as of the last applied step."""
        if self.state is None:
            raise ValueError(f"strategy '{self.name}' has no learning status before its first applied step")
        return flexmatch_thresholds(self.state["learning"], self.threshold, self.warmup, self.mapping)

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        weak, strong = inputs.views["weak"], inputs.views["strong"]
        probs = torch.softmax(weak.detach().float(), dim=1)
        learning = flexmatch_update(self.committed(probs.shape[1], probs.device)["learning"], probs,
                                    self.threshold, self.momentum, self.context.all_reduce_sum)
        self.propose({"learning": learning})
        thresholds = flexmatch_thresholds(learning, self.threshold, self.warmup, self.mapping)
        confidence, labels = probs.max(dim=1)
        mask = confidence >= thresholds[labels]
        ce = weighted_cross_entropy(strong, labels, mask)
        return StrategyLoss(self.weight * ce, {"mask_rate": mask.float().mean(), "unused": learning[-1].clone(),
                                               "threshold_min": thresholds.min()})
