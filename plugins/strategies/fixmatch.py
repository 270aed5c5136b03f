"""FixMatch-style pseudo-labelling (MultiMix eq. 1): weak view labels, strong view learns."""
from __future__ import annotations

from mtssl.api import SSLStrategy, StrategyInputs, StrategyLoss, ViewRequest, check_options, hookimpl
from mtssl_plugins.functional import fixmatch_loss


class FixMatch(SSLStrategy):
    """lambda * CE(strong, argmax(weak)) where max softmax(weak) >= threshold."""

    def serves(self, target):
        """One class per image: pseudo-labels are the weak view's most confident class."""
        return target.categorical

    def __init__(self, name: str, **options):
        check_options(f"strategy '{name}'", options, {"threshold", "weight"})
        super().__init__(name, **options)
        self.threshold = float(options.get("threshold", 0.7))
        self.weight = float(options.get("weight", 0.25))
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"strategy '{name}': threshold must lie in [0, 1], got {self.threshold}")

    def plan(self):
        return [ViewRequest("weak", "unlabeled", "weak", grad=False),
                ViewRequest("strong", "unlabeled", "strong")]

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        loss, mask = fixmatch_loss(inputs.views["weak"], inputs.views["strong"], self.threshold)
        return StrategyLoss(self.weight * loss, {"mask_rate": mask.float().mean()})


@hookimpl
def register_strategies(register):
    register("fixmatch", FixMatch, description="pseudo-labels from weak view (conf >= threshold) train strong view; "
                                               "options threshold=0.7, weight=0.25")
