"""Equal weighting: the plain sum of the task losses (the default, MultiMix's Algorithm 1)."""
from __future__ import annotations

from mtssl.api import Options, Weighting, WeightedLoss


class Equal(Weighting):
    """sum_t L_t: every task's loss counts once."""

    options_model = Options  # takes none

    def combine(self, losses, step):
        total = None
        for loss in losses.values():
            total = loss if total is None else total + loss
        return WeightedLoss(total, {task: 1.0 for task in losses})
