"""FixMatch for binary masks: pixel-wise pseudo-labels from a weak view train a strong view of the same pixels.

The strong view is derived from the weak view with photometric operations
only (``aug="strong_photometric", of="weak"``), so the pseudo-label map
lines up with the strong view pixel for pixel. Each pixel (and channel) is a
Bernoulli variable: label ``sigmoid >= 0.5``, kept where ``max(p, 1 - p) >=
threshold`` (0.95, as UniMatch).
"""
from __future__ import annotations

from mtssl.api import (Field, Options, SSLStrategy, StrategyInputs, StrategyLoss, ViewRequest,
                       dense_pseudo_label_loss, read_options)


class DenseFixMatchOptions(Options):
    threshold: float = Field(0.95, ge=0.5, le=1.0, description="binary confidence max(p, 1 - p) to keep a pixel")
    weight: float = Field(1.0, ge=0.0)


class DenseFixMatch(SSLStrategy):
    """weight * mean over pixels of mask * BCE(strong, [sigmoid(weak) >= 0.5])."""

    def serves(self, target):
        """Binary maps, one Bernoulli per pixel and channel (a sigmoid-activated head)."""
        return target.spatial and target.binary

    def __init__(self, name: str, **options):
        settings = read_options(f"strategy '{name}'", options, DenseFixMatchOptions)
        super().__init__(name, **options)
        self.threshold, self.weight = settings.threshold, settings.weight

    def plan(self):
        return [ViewRequest("weak", "unlabeled", "weak", grad=False),
                ViewRequest("strong", "unlabeled", "strong_photometric", of="weak")]

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        loss, mask = dense_pseudo_label_loss(inputs.views["weak"], inputs.views["strong"], self.threshold)
        return StrategyLoss(self.weight * loss, {"mask_rate": mask.float().mean().detach()})
