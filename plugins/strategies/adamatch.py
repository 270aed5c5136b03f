"""AdaMatch (Berthelot et al., ICLR 2022): distribution alignment toward the labeled data, relative threshold.

The weak probabilities of the unlabeled batch are rescaled by
``p_labeled / p_unlabeled`` (the class means of the labeled batch's and the
unlabeled batch's predictions) and renormalised, so the pseudo-labels follow
the labeled class distribution even when the unlabeled images come from
another domain. A pseudo-label counts when its aligned confidence reaches
``tau`` times the mean confidence on the labeled batch (the relative
threshold): the bar follows how confident the model is where it is right.
The class means are moving averages (momentum 0: this batch only, as in the
paper; USB's 0.999 by default), reduced with the labeled confidence over
processes in one all-reduce, proposed by ``loss``, kept by ``commit``.
The paper's ramp of the unlabeled weight and its random logit interpolation
are left out (as in USB); the task's supervised loss is unchanged.
"""
from __future__ import annotations

import torch

from mtssl.api import (Field, Options, StrategyInputs, StrategyLoss, ViewRequest, align_distribution, ema_update,
                       pooled_means, weighted_cross_entropy)
from mtssl_plugins.strategies.stateful import StatefulStrategy


class AdaMatchOptions(Options):
    tau: float = Field(0.9, ge=0.0, le=1.0, description="relative threshold: share of the labeled confidence")
    weight: float = Field(1.0, ge=0.0, description="weight of the pseudo-label loss")
    momentum: float = Field(0.999, ge=0.0, lt=1.0, description="EMA momentum of the class means (0: per batch)")


class AdaMatch(StatefulStrategy):
    """weight * CE(strong, argmax aligned weak) where aligned max p >= tau * mean labeled max p."""

    STATE = ("p_labeled", "p_unlabeled")
    options_model = AdaMatchOptions

    def serves(self, target):
        """One class per image: alignment is over classes."""
        return target.categorical

    def plan(self):
        return [ViewRequest("weak", "unlabeled", "weak", grad=False), ViewRequest("strong", "unlabeled", "strong")]

    def initial_state(self, classes, device):
        uniform = torch.full((classes,), 1.0 / classes, device=device)
        return {"p_labeled": uniform, "p_unlabeled": uniform.clone()}

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        if inputs.labeled_output is None:
            raise ValueError(f"strategy '{self.name}' needs its task's labeled outputs (the labeled weak view)")
        weak, strong = inputs.views["weak"], inputs.views["strong"]
        labeled = torch.softmax(inputs.labeled_output.detach().float(), dim=1)
        probs = torch.softmax(weak.detach().float(), dim=1)
        state = self.committed(probs.shape[1], probs.device)
        (labeled_means, _), (unlabeled_means, _) = pooled_means(
            [torch.cat([labeled, labeled.max(dim=1, keepdim=True).values], dim=1), probs], self.context.all_reduce_sum)
        p_labeled = ema_update(state["p_labeled"], labeled_means[:-1], self.momentum)
        p_unlabeled = ema_update(state["p_unlabeled"], unlabeled_means, self.momentum)
        self.propose({"p_labeled": p_labeled, "p_unlabeled": p_unlabeled})
        aligned = align_distribution(probs, p_labeled, p_unlabeled)
        cutoff = self.tau * labeled_means[-1]
        confidence, labels = aligned.max(dim=1)
        mask = confidence >= cutoff
        ce = weighted_cross_entropy(strong, labels, mask)
        return StrategyLoss(self.weight * ce, {"mask_rate": mask.float().mean(), "cutoff": cutoff.detach()})
