"""FreeMatch (Wang et al., ICLR 2023): FixMatch with self-adaptive, class-wise thresholds.

The threshold starts low (1/C) and follows the model's confidence: a global
EMA of the mean max probability on weak views, scaled per class by the EMA
class-mean probabilities (normalised by their max). Those statistics are the
strategy's state: they persist across steps and ``--resume``. An optional
self-adaptive fairness term (``fairness``, USB's ``ent_loss_ratio``) keeps the
pseudo-labels from collapsing onto one class. Follows USB's implementation:
the statistics are updated with the current batch before masking, and under
torchrun with every process's batch (one all-reduce), so all ranks keep the
same thresholds. ``loss`` proposes the update; ``commit`` keeps it once the
step is applied, so a skipped step leaves the statistics as they were.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mtssl.api import (Field, Options, SSLStrategy, StrategyInputs, StrategyLoss, ViewRequest, freematch_fairness,
                       freematch_mask, freematch_thresholds, freematch_update)

Statistics = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class FreeMatchOptions(Options):
    weight: float = Field(1.0, ge=0.0, description="weight of the pseudo-label loss")
    momentum: float = Field(0.999, ge=0.0, lt=1.0, description="EMA momentum of the statistics")
    fairness: float = Field(0.01, ge=0.0, description="weight of the self-adaptive fairness term")


class FreeMatch(SSLStrategy):
    """weight * masked CE(strong, argmax weak) + fairness * SAF, with adaptive class-wise thresholds."""

    options_model = FreeMatchOptions

    def serves(self, target):
        """One class per image: thresholds are class-wise."""
        return target.categorical
    STATE = ("time_p", "p_model", "label_hist")

    def __init__(self, name: str, **options):
        super().__init__(name, **options)
        self.time_p: torch.Tensor | None = None
        self.p_model: torch.Tensor | None = None
        self.label_hist: torch.Tensor | None = None
        self.proposed: Statistics | None = None

    def plan(self):
        return [ViewRequest("weak", "unlabeled", "weak", grad=False), ViewRequest("strong", "unlabeled", "strong")]

    def committed(self, classes: int, device: torch.device) -> Statistics:
        """The statistics as of the last applied step, on ``device``; FreeMatch starts each at the uniform 1/C."""
        if self.p_model is None:
            uniform = torch.full((classes,), 1.0 / classes, device=device)
            return uniform.mean(), uniform, uniform.clone()
        return tuple(t.to(device) for t in (self.time_p, self.p_model, self.label_hist))

    def thresholds(self) -> torch.Tensor:
        """The current class-wise thresholds ``tau * p~(c) / max p~``."""
        return freematch_thresholds(self.time_p, self.p_model)

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        weak, strong = inputs.views["weak"], inputs.views["strong"]
        probs = torch.softmax(weak.detach().float(), dim=1)
        time_p, p_model, label_hist = self.proposed = freematch_update(
            *self.committed(probs.shape[1], probs.device), probs, self.momentum, self.context.all_reduce_sum)
        mask = freematch_mask(probs, time_p, p_model)
        ce = (F.cross_entropy(strong.float(), probs.argmax(1), reduction="none") * mask.float()).mean()
        loss = self.weight * ce
        logs = {"mask_rate": mask.float().mean().detach(), "tau": time_p.detach().clone()}
        if self.fairness:
            fair = freematch_fairness(mask, strong, p_model, label_hist)
            loss = loss + self.fairness * fair
            logs["fairness"] = fair.detach()
        return StrategyLoss(loss, logs)

    def commit(self):
        if self.proposed is not None:
            self.time_p, self.p_model, self.label_hist = self.proposed
            self.proposed = None

    def state_dict(self):
        if self.p_model is None:
            return {}
        return {key: getattr(self, key).detach().clone() for key in self.STATE}

    def load_state_dict(self, state):
        if state:
            for key in self.STATE:
                setattr(self, key, state[key].clone())
        self.proposed = None
