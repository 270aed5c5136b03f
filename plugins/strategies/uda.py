"""UDA (Xie et al. 2020): a strongly augmented view matches the sharpened prediction on a weak one.

The target is the weak view's softmax sharpened with temperature ``T``
(``softmax(z / T)``), kept only where the weak view's confidence reaches
``threshold`` (confidence-based masking); the strong view learns through
``KL(target || softmax(strong))``, averaged over the whole unlabeled batch.
Training signal annealing (TSA) is not implemented: it withholds labeled
images from the *supervised* loss, which belongs to the task, not to a strategy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mtssl.api import (Field, Options, SSLStrategy, StrategyInputs, StrategyLoss, ViewRequest,
                       sharpen)


class UDAOptions(Options):
    T: float = Field(0.4, gt=0.0, le=1.0, description="sharpening temperature of the targets")
    threshold: float = Field(0.8, ge=0.0, le=1.0, description="weak-view confidence a target needs")
    weight: float = Field(1.0, ge=0.0, description="weight of the KL consistency loss")


def uda_consistency(weak_logits: torch.Tensor, strong_logits: torch.Tensor, temperature: float,
                    threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked ``KL(sharpen(softmax(weak), T) || softmax(strong))`` averaged over the batch; returns (loss, mask)."""
    probs = torch.softmax(weak_logits.detach().float(), dim=1)
    mask = probs.max(dim=1).values >= threshold
    target = sharpen(probs, temperature)
    log_q = F.log_softmax(strong_logits.float(), dim=1)
    kl = (torch.special.xlogy(target, target) - target * log_q).sum(dim=1)
    return (kl * mask.float()).mean(), mask


class UDA(SSLStrategy):
    """weight * KL(sharpened weak || strong) where max softmax(weak) >= threshold."""

    options_model = UDAOptions

    def serves(self, target):
        """One class per image: targets are class distributions."""
        return target.categorical

    def plan(self):
        return [ViewRequest("weak", "unlabeled", "weak", grad=False), ViewRequest("strong", "unlabeled", "strong")]

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        kl, mask = uda_consistency(inputs.views["weak"], inputs.views["strong"], self.T, self.threshold)
        return StrategyLoss(self.weight * kl, {"mask_rate": mask.float().mean(), "kl": kl.detach()})
