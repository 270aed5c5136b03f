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

from mtssl.api import (Field, Options, StrategyInputs, StrategyLoss, ViewRequest, freematch_fairness, freematch_mask,
                       freematch_thresholds, freematch_update)
from mtssl_plugins.strategies.stateful import StatefulStrategy


class FreeMatchOptions(Options):
    weight: float = Field(1.0, ge=0.0, description="weight of the pseudo-label loss")
    momentum: float = Field(0.999, ge=0.0, lt=1.0, description="EMA momentum of the statistics")
    fairness: float = Field(0.01, ge=0.0, description="weight of the self-adaptive fairness term")


class FreeMatch(StatefulStrategy):
    """weight * masked CE(strong, argmax weak) + fairness * SAF, with adaptive class-wise thresholds."""

    STATE = ("time_p", "p_model", "label_hist")
    options_model = FreeMatchOptions

    def serves(self, target):
        """One class per image: thresholds are class-wise."""
        return target.categorical

    def plan(self):
        return [ViewRequest("weak", "unlabeled", "weak", grad=False), ViewRequest("strong", "unlabeled", "strong")]

    def initial_state(self, classes, device):
        """FreeMatch starts each statistic at the uniform 1/C."""
        uniform = torch.full((classes,), 1.0 / classes, device=device)
        return {"time_p": uniform.mean(), "p_model": uniform, "label_hist": uniform.clone()}

    @property
    def time_p(self) -> torch.Tensor | None:
        """The committed global threshold tau (None before the first applied step)."""
        return None if self.state is None else self.state["time_p"]

    @property
    def p_model(self) -> torch.Tensor | None:
        """The committed class-mean probabilities (None before the first applied step)."""
        return None if self.state is None else self.state["p_model"]

    @property
    def label_hist(self) -> torch.Tensor | None:
        """The committed histogram of pseudo-labels (None before the first applied step)."""
        return None if self.state is None else self.state["label_hist"]

    def thresholds(self) -> torch.Tensor:
        """The current class-wise thresholds ``tau * p~(c) / max p~``."""
        return freematch_thresholds(self.time_p, self.p_model)

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        weak, strong = inputs.views["weak"], inputs.views["strong"]
        probs = torch.softmax(weak.detach().float(), dim=1)
        committed = self.committed(probs.shape[1], probs.device)
        time_p, p_model, label_hist = freematch_update(*(committed[key] for key in self.STATE), probs, self.momentum,
                                                       self.context.all_reduce_sum)
        self.propose(dict(zip(self.STATE, (time_p, p_model, label_hist))))
        mask = freematch_mask(probs, time_p, p_model)
        ce = (F.cross_entropy(strong.float(), probs.argmax(1), reduction="none") * mask.float()).mean()
        loss = self.weight * ce
        logs = {"mask_rate": mask.float().mean().detach(), "tau": time_p.detach().clone()}
        if self.fairness:
            fair = freematch_fairness(mask, strong, p_model, label_hist)
            loss = loss + self.fairness * fair
            logs["fairness"] = fair.detach()
        return StrategyLoss(loss, logs)
