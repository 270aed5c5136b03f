"""UniMatch (Yang et al., CVPR 2023) for masks: one weak view's pseudo-labels train three perturbed streams.

Per pixel, the weak view's most likely category (per channel for a sigmoid
head, across channels for a softmax head) is kept where its probability is
>= ``threshold`` and trains, by cross-entropy averaged over every pixel:

* two strong views of the same pixels (``strong_photometric`` of the weak view,
  drawn independently: UniMatch's dual strong stream), weighted 0.25 each;
* the feature-perturbed stream: the weak view's backbone features, every level
  through channel dropout (``Dropout2d(dropout)``), decoded again by the task's
  head (:attr:`mtssl.api.StrategyInputs.head`; no second backbone pass), weighted 0.5.

The strong views are photometric only (the pseudo-label map must line up with
them), so UniMatch's CutMix between strong images is not part of them. The
paper divides supervised plus unsupervised terms by 2; here the supervised
term stands alone, so ``weight=1`` keeps the paper's one-to-one balance.
"""
from __future__ import annotations

import torch.nn.functional as F

from mtssl.api import Field, Options, SSLStrategy, StrategyInputs, StrategyLoss, ViewRequest
from mtssl_plugins.strategies.dense import log_distribution, pseudo_label_loss


class UniMatchOptions(Options):
    threshold: float = Field(0.95, ge=0.0, le=1.0, description="probability a pseudo-label needs to be kept")
    weight: float = Field(1.0, ge=0.0, description="weight of the three streams' pseudo-label loss")
    dropout: float = Field(0.5, ge=0.0, lt=1.0, description="channel dropout on the weak view's features")


class UniMatch(SSLStrategy):
    """weight * (0.25 CE(s1) + 0.25 CE(s2) + 0.5 CE(head(dropout(features(weak))))) against weak pseudo-labels."""

    options_model = UniMatchOptions

    def serves(self, target):
        """Binary structure maps, one or more channels (a sigmoid or a softmax head)."""
        return target.spatial and target.binary

    def plan(self):
        # the weak view keeps its gradient: the perturbed stream trains the encoder through its features
        return [ViewRequest("weak", "unlabeled", "weak", features=True),
                ViewRequest("strong1", aug="strong_photometric", of="weak"),
                ViewRequest("strong2", aug="strong_photometric", of="weak")]

    def perturbed_output(self, inputs: StrategyInputs):
        """The head on the weak view's features after channel dropout (every level, training mode)."""
        dropped = [F.dropout2d(f, self.dropout, training=True) for f in inputs.view_features["weak"]]
        return inputs.head("weak", dropped)

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        task = inputs.task
        weak = log_distribution(task, inputs.views["weak"]).detach()
        s1, mask = pseudo_label_loss(weak, log_distribution(task, inputs.views["strong1"]), self.threshold)
        s2, _ = pseudo_label_loss(weak, log_distribution(task, inputs.views["strong2"]), self.threshold)
        fp, _ = pseudo_label_loss(weak, log_distribution(task, self.perturbed_output(inputs)), self.threshold)
        total = 0.25 * s1 + 0.25 * s2 + 0.5 * fp
        return StrategyLoss(self.weight * total, {"strong1": s1.detach(), "strong2": s2.detach(),
                                                  "fp": fp.detach(), "mask_rate": mask.float().mean()})
