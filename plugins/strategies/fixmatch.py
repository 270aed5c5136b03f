"""FixMatch-style pseudo-labelling (MultiMix eq. 1): weak view labels, strong view learns."""
from __future__ import annotations

from mtssl.api import Field, Options, SSLStrategy, StrategyInputs, StrategyLoss, ViewRequest, fixmatch_loss


class FixMatchOptions(Options):
    threshold: float = Field(0.7, ge=0.0, le=1.0, description="weak-view confidence a pseudo-label needs")
    weight: float = Field(0.25, ge=0.0, description="weight of the pseudo-label loss (lambda)")


class FixMatch(SSLStrategy):
    """lambda * CE(strong, argmax(weak)) where max softmax(weak) >= threshold."""

    options_model = FixMatchOptions

    def serves(self, target):
        """One class per image: pseudo-labels are the weak view's most confident class."""
        return target.categorical

    def plan(self):
        return [ViewRequest("weak", "unlabeled", "weak", grad=False),
                ViewRequest("strong", "unlabeled", "strong")]

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        loss, mask = fixmatch_loss(inputs.views["weak"], inputs.views["strong"], self.threshold)
        return StrategyLoss(self.weight * loss, {"mask_rate": mask.float().mean()})
