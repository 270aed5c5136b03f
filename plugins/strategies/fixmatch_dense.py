"""FixMatch for masks: pixel-wise pseudo-labels from a weak view train a strong view of the same pixels.

The strong view is derived from the weak view with photometric operations
only (``aug="strong_photometric", of="weak"``), so the pseudo-label map
lines up with the strong view pixel for pixel. For a sigmoid head each pixel
(and channel) is a Bernoulli variable: label ``sigmoid >= 0.5``, kept where
``max(p, 1 - p) >= threshold`` (0.95, as UniMatch). For a softmax head each
pixel is one categorical variable: label its most likely channel, kept where
that channel's probability is ``>= threshold``.
"""
from __future__ import annotations

from mtssl.api import Field, Options, SSLStrategy, StrategyInputs, StrategyLoss, ViewRequest
from mtssl_plugins.strategies.dense import log_distribution, pseudo_label_loss


class DenseFixMatchOptions(Options):
    threshold: float = Field(0.95, ge=0.0, le=1.0, description="confidence of a pixel's label to keep it")
    weight: float = Field(1.0, ge=0.0, description="weight of the pixel-wise pseudo-label loss")


class DenseFixMatch(SSLStrategy):
    """weight * mean over pixels of mask * CE(strong, weak's most likely label), per channel for sigmoid."""

    options_model = DenseFixMatchOptions

    def serves(self, target):
        """Binary structure maps, one or more channels (a sigmoid or a softmax head)."""
        return target.spatial and target.binary

    def plan(self):
        return [ViewRequest("weak", "unlabeled", "weak", grad=False),
                ViewRequest("strong", "unlabeled", "strong_photometric", of="weak")]

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        weak, strong = (log_distribution(inputs.task, inputs.views[v]) for v in ("weak", "strong"))
        loss, mask = pseudo_label_loss(weak, strong, self.threshold)
        return StrategyLoss(self.weight * loss, {"mask_rate": mask.float().mean().detach()})
