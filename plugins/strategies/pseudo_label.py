"""Pseudo-Label (Lee 2013): the model's own confident predictions on unlabeled images become its targets.

One weakly augmented view of the unlabeled batch both makes the hard labels
(its detached argmax, kept where the confidence reaches ``threshold``, as USB
does; Lee's original keeps every label, ``threshold=0``) and learns from them.
The weight ramps linearly from 0 at step ``start`` to ``weight`` ``rampup``
steps later (Lee's alpha(t) between T1 and T2), so early, mostly wrong labels
count little.
"""
from __future__ import annotations

from mtssl.api import (Field, Options, SSLStrategy, StrategyInputs, StrategyLoss, ViewRequest, fixmatch_loss,
                       linear_rampup)


class PseudoLabelOptions(Options):
    threshold: float = Field(0.95, ge=0.0, le=1.0, description="confidence a pseudo-label needs")
    weight: float = Field(1.0, ge=0.0, description="final weight (Lee's alpha_f)")
    rampup: int = Field(120, ge=0, description="steps from start to the full weight")
    start: int = Field(0, ge=0, description="step before which the weight is 0 (Lee's T1)")


class PseudoLabel(SSLStrategy):
    """alpha(t) * CE(weak, argmax weak) where max softmax(weak) >= threshold, on one weak view."""

    options_model = PseudoLabelOptions

    def serves(self, target):
        """One class per image: pseudo-labels are the most confident class."""
        return target.categorical

    def plan(self):
        return [ViewRequest("weak", "unlabeled", "weak")]

    def current_weight(self, step: int) -> float:
        """Lee's alpha(t): 0 before ``start``, then linear up to ``weight`` over ``rampup`` steps."""
        return self.weight * linear_rampup(step - self.start, self.rampup) if step >= self.start else 0.0

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        logits = inputs.views["weak"]
        ce, mask = fixmatch_loss(logits, logits, self.threshold)  # labels are detached; the view learns
        weight = self.current_weight(inputs.step)
        return StrategyLoss(weight * ce, {"mask_rate": mask.float().mean(), "ce": ce.detach(), "weight": weight})
