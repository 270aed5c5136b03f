"""Cross pseudo supervision (Chen et al., CVPR 2021) for masks.

Two networks of the same design, initialised differently (the core's
``peer``, asked for with ``needs_peer``), each learn from the other's hard
pixel-wise labels on the same unlabeled pixels:
``weight * rampup(step) * (BCE(a, [p_b >= 0.5]) + BCE(b, [p_a >= 0.5]))`` for a
sigmoid head; for a softmax head the cross-entropy against the other's most
likely channel per pixel.
The peer also learns from the labeled batch (the task's own supervised loss
on a labeled view it runs). Validation, evaluation and prediction use the
first network only.
"""
from __future__ import annotations

import torch

from mtssl.api import (Field, Options, SSLStrategy, StrategyInputs, StrategyLoss, Task, ViewRequest,
                       sigmoid_rampup)
from mtssl_plugins.strategies.dense import log_distribution, pseudo_label_loss


def cross_pseudo_loss(logits_a: torch.Tensor, logits_b: torch.Tensor, task: Task | None = None) -> torch.Tensor:
    """``CE(a, most likely label of b) + CE(b, most likely label of a)``, each averaged over pixels: for a
    sigmoid head (or no ``task``) ``BCE(a, [sigmoid(b) >= 0.5])`` per channel, for a softmax ``task``
    across channels."""
    log_a, log_b = log_distribution(task, logits_a), log_distribution(task, logits_b)
    return pseudo_label_loss(log_b, log_a, 0.0)[0] + pseudo_label_loss(log_a, log_b, 0.0)[0]


class CPSOptions(Options):
    weight: float = Field(1.5, ge=0.0, description="weight of the cross pseudo-label loss (after the ramp-up)")
    rampup: int = Field(0, ge=0, description="steps of the sigmoid ramp-up of the weight")


class CrossPseudoSupervision(SSLStrategy):
    options_model = CPSOptions

    def serves(self, target):
        """Binary structure maps, one or more channels (a sigmoid or a softmax head)."""
        return target.spatial and target.binary

    def needs_peer(self) -> bool:
        return True

    def plan(self):
        return [ViewRequest("unlabeled", "unlabeled", "weak"),
                ViewRequest("peer", "unlabeled", "none", model="peer", of="unlabeled"),
                ViewRequest("peer_labeled", "labeled", "weak", model="peer")]

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        target = inputs.view_targets.get("peer_labeled")
        if target is None:
            raise ValueError(f"strategy '{self.name}' needs the targets of its labeled peer view")
        peer_sup = inputs.task.supervised_loss(inputs.views["peer_labeled"], target)
        cross = cross_pseudo_loss(inputs.views["unlabeled"], inputs.views["peer"], inputs.task)
        weight = self.weight * sigmoid_rampup(inputs.step, self.rampup)
        return StrategyLoss(peer_sup + weight * cross, {"peer_sup": peer_sup.detach(), "cross": cross.detach(),
                                                        "weight": weight})
