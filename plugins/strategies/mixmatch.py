"""MixMatch (Berthelot et al. 2019) for class targets: the paper's Enc-MM baseline.

Each step: K weak augmentations of the unlabeled batch give a guessed label
(mean softmax, sharpened with temperature T, no gradient). The weakly
augmented labeled batch (one-hot targets) and the K unlabeled views (guessed
targets) are pooled, shuffled and mixed with their shuffled copy using
``lambda' = max(lambda, 1 - lambda)``, ``lambda ~ Beta(alpha, alpha)``. The
mixed images go through the model once more (``StrategyInputs.forward``):
cross-entropy on the mixed labeled part plus ``weight`` times the squared
error of the probabilities on the mixed unlabeled part.

The trainer still adds the task's own supervised loss on its plain labeled
batch, so the labeled data are seen both unmixed and mixed. ``weight`` ramps
up linearly over the first ``rampup`` steps, as in MixMatch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mtssl.api import (Field, Options, SSLStrategy, StrategyInputs, StrategyLoss, ViewRequest, guess_labels,
                       linear_rampup, mixup, mixup_lambda, soft_cross_entropy)
from mtssl_plugins.functional import probability_l2


class MixMatchOptions(Options):
    K: int = Field(2, ge=1, description="augmentations per unlabeled image")
    T: float = Field(0.5, gt=0.0, description="sharpening temperature")
    alpha: float = Field(0.75, gt=0.0, description="mixup ratio drawn from Beta(alpha, alpha)")
    weight: float = Field(75.0, ge=0.0, description="weight of the unlabeled squared error (after the ramp-up)")
    rampup: int = Field(500, ge=0, description="steps")


class MixMatch(SSLStrategy):
    """CE(mixed labeled) + weight * L2(mixed unlabeled, sharpened guesses over K weak views)."""

    options_model = MixMatchOptions

    def serves(self, target):
        """One class per image: guessed labels are class distributions."""
        return target.categorical

    def plan(self):
        unlabeled = [ViewRequest(f"weak{i}", "unlabeled", "weak", grad=False) for i in range(self.K)]
        return [ViewRequest("labeled", "labeled", "weak", grad=False), *unlabeled]

    def current_weight(self, step: int) -> float:
        return self.weight * linear_rampup(step, self.rampup)

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        if inputs.forward is None:
            raise ValueError(f"strategy '{self.name}' needs a trainer that can run the model on mixed images")
        target = inputs.view_targets.get("labeled")
        if target is None:
            raise ValueError(f"strategy '{self.name}' needs the targets of its labeled view")
        weak = [inputs.views[f"weak{i}"] for i in range(self.K)]
        num_classes = weak[0].shape[1]
        guessed = guess_labels(weak, self.T)

        labeled_x = inputs.view_images["labeled"]
        labeled_p = F.one_hot(target.long(), num_classes).float()
        unlabeled_x = torch.cat([inputs.view_images[f"weak{i}"] for i in range(self.K)])
        pooled_x = torch.cat([labeled_x, unlabeled_x])
        pooled_p = torch.cat([labeled_p, guessed.repeat(self.K, 1)])
        order = torch.randperm(len(pooled_x), device=pooled_x.device)
        lam = mixup_lambda(self.alpha)
        mixed_x, mixed_p = mixup(pooled_x, pooled_p, pooled_x[order], pooled_p[order], lam)

        logits = inputs.forward(mixed_x)
        n = len(labeled_x)
        supervised = soft_cross_entropy(logits[:n], mixed_p[:n])
        unsupervised = probability_l2(logits[n:], mixed_p[n:])
        weight = self.current_weight(inputs.step)
        return StrategyLoss(supervised + weight * unsupervised,
                            {"mixed_ce": supervised.detach(), "l2": unsupervised.detach(), "lambda": lam,
                             "weight": weight})
