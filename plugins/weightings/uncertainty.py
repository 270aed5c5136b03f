"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018): learned homoscedastic log-variances.

Each task t gets a learned ``s_t = log sigma_t^2`` and contributes
``exp(-s_t) / 2 * L_t + s_t / 2``: a noisy task (large loss) earns a large
variance and a small weight, and the ``s_t / 2`` term keeps the variances
from growing without bound. (The same form as LibMTL's ``UW``.) The log-variances
start at ``init`` (0: weight 1/2) and are trained by the run's optimizer, at
``lr`` when given (they move slowly at the model's 1e-4). ``init`` lies in
[-20, 20]: initial weights between 1e-9 and 2.4e8 cover any sensible start.
"""
from __future__ import annotations

import torch
from torch import nn

from mtssl.api import Field, Options, Weighting, WeightedLoss


class UncertaintyOptions(Options):
    init: float = Field(0.0, ge=-20.0, le=20.0, description="initial log-variance s_t (weight exp(-s)/2)")
    lr: float | None = Field(None, gt=0.0, description="learning rate of the log-variances (None: the run's)")


def uncertainty_weighted(losses: torch.Tensor, log_vars: torch.Tensor) -> torch.Tensor:
    """``sum_t exp(-s_t) / 2 * L_t + s_t / 2`` for stacked losses and log-variances."""
    return (0.5 * torch.exp(-log_vars) * losses + 0.5 * log_vars).sum()


class Uncertainty(Weighting):
    options_model = UncertaintyOptions

    def __init__(self, name: str, **options):
        super().__init__(name, **options)
        self.tasks: list[str] = []
        self.log_vars: nn.Parameter | None = None

    def setup(self, tasks, device):
        self.tasks = list(tasks)
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), self.init, device=device))

    def parameters(self):
        return [self.log_vars]

    def combine(self, losses, step):
        stacked = torch.stack([losses[t].float() for t in self.tasks])
        # tensors, not floats: the trainer copies every log value to the host in one transfer per step
        weights, log_vars = 0.5 * torch.exp(-self.log_vars.detach()), self.log_vars.detach().clone()
        return WeightedLoss(uncertainty_weighted(stacked, self.log_vars), dict(zip(self.tasks, weights.unbind())),
                            {f"log_var/{t}": v for t, v in zip(self.tasks, log_vars.unbind())})

    def state_dict(self):
        return {"log_vars": self.log_vars.detach().clone()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.log_vars.copy_(state["log_vars"])
