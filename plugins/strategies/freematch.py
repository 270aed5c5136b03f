"""FreeMatch (Wang et al., ICLR 2023): FixMatch with self-adaptive, class-wise thresholds.

The threshold starts low (1/C) and follows the model's confidence: a global
EMA of the mean max probability on weak views, scaled per class by the EMA
class-mean probabilities (normalised by their max). Those statistics are the
strategy's state: they persist across steps and ``--resume``. An optional
self-adaptive fairness term (``fairness``, USB's ``ent_loss_ratio``) keeps the
pseudo-labels from collapsing onto one class. Follows USB's implementation:
the statistics are updated with the current batch before masking.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mtssl.api import SSLStrategy, StrategyInputs, StrategyLoss, ViewRequest, check_options
from mtssl_plugins.functional import freematch_fairness, freematch_mask, freematch_update


class FreeMatch(SSLStrategy):
    """weight * masked CE(strong, argmax weak) + fairness * SAF, with adaptive class-wise thresholds."""

    def serves(self, target):
        """One class per image: thresholds are class-wise."""
        return target.categorical
    STATE = ("time_p", "p_model", "label_hist")

    def __init__(self, name: str, **options):
        check_options(f"strategy '{name}'", options, {"weight", "momentum", "fairness"})
        super().__init__(name, **options)
        self.weight = float(options.get("weight", 1.0))
        self.momentum = float(options.get("momentum", 0.999))
        self.fairness = float(options.get("fairness", 0.01))
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"strategy '{name}': momentum must lie in [0, 1), got {self.momentum}")
        self.time_p: torch.Tensor | None = None
        self.p_model: torch.Tensor | None = None
        self.label_hist: torch.Tensor | None = None

    def plan(self):
        return [ViewRequest("weak", "unlabeled", "weak", grad=False), ViewRequest("strong", "unlabeled", "strong")]

    def _initialise(self, classes: int, device: torch.device) -> None:
        if self.p_model is None:  # FreeMatch starts every statistic at the uniform 1/C
            self.p_model = torch.full((classes,), 1.0 / classes, device=device)
            self.label_hist = torch.full((classes,), 1.0 / classes, device=device)
            self.time_p = self.p_model.mean()

    def thresholds(self) -> torch.Tensor:
        """The current class-wise thresholds ``tau * p~(c) / max p~``."""
        return self.time_p * self.p_model / self.p_model.max()

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        weak, strong = inputs.views["weak"], inputs.views["strong"]
        probs = torch.softmax(weak.detach().float(), dim=1)
        self._initialise(probs.shape[1], probs.device)
        if self.p_model.device != probs.device:  # restored from a checkpoint on another device
            self.time_p, self.p_model, self.label_hist = (t.to(probs.device) for t in
                                                          (self.time_p, self.p_model, self.label_hist))
        self.time_p, self.p_model, self.label_hist = freematch_update(
            self.time_p, self.p_model, self.label_hist, probs, self.momentum)
        mask = freematch_mask(probs, self.time_p, self.p_model)
        ce = (F.cross_entropy(strong.float(), probs.argmax(1), reduction="none") * mask.float()).mean()
        loss = self.weight * ce
        logs = {"mask_rate": mask.float().mean().detach(), "tau": self.time_p.detach().clone()}
        if self.fairness:
            fair = freematch_fairness(mask, strong, self.p_model, self.label_hist)
            loss = loss + self.fairness * fair
            logs["fairness"] = fair.detach()
        return StrategyLoss(loss, logs)

    def state_dict(self):
        if self.p_model is None:
            return {}
        return {key: getattr(self, key).detach().clone() for key in self.STATE}

    def load_state_dict(self, state):
        if state:
            for key in self.STATE:
                setattr(self, key, state[key].clone())
