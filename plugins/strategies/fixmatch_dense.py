"""FixMatch for binary masks: pixel-wise pseudo-labels from a weak view train a strong view of the same pixels.

The strong view is derived from the weak view with photometric operations
only (``aug="strong_photometric", of="weak"``), so the pseudo-label map
lines up with the strong view pixel for pixel. Each pixel (and channel) is a
Bernoulli variable: label ``sigmoid >= 0.5``, kept where ``max(p, 1 - p) >=
threshold`` (0.95, as UniMatch).
"""
from __future__ import annotations

from mtssl.api import SSLStrategy, StrategyInputs, StrategyLoss, ViewRequest, check_options
from mtssl_plugins.functional import dense_pseudo_label_loss


class DenseFixMatch(SSLStrategy):
    """weight * mean over pixels of mask * BCE(strong, [sigmoid(weak) >= 0.5])."""

    def serves(self, target):
        """Binary maps, one Bernoulli per pixel and channel (a sigmoid-activated head)."""
        return target.spatial and target.binary

    def __init__(self, name: str, **options):
        check_options(f"strategy '{name}'", options, {"threshold", "weight"})
        super().__init__(name, **options)
        self.threshold = float(options.get("threshold", 0.95))
        self.weight = float(options.get("weight", 1.0))
        if not 0.5 <= self.threshold <= 1.0:
            raise ValueError(f"strategy '{name}': threshold must lie in [0.5, 1] (a binary confidence), "
                             f"got {self.threshold}")

    def plan(self):
        return [ViewRequest("weak", "unlabeled", "weak", grad=False),
                ViewRequest("strong", "unlabeled", "strong_photometric", of="weak")]

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        loss, mask = dense_pseudo_label_loss(inputs.views["weak"], inputs.views["strong"], self.threshold)
        return StrategyLoss(self.weight * loss, {"mask_rate": mask.float().mean().detach()})
