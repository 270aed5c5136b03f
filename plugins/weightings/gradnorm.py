"""GradNorm (Chen et al., ICML 2018): learn task weights that balance the tasks' gradient norms.

The network trains on ``sum_i w_i L_i``. The weights are parameters, trained on their own loss
``L_grad = sum_i | G_i - mean(G) r_i^alpha |`` with ``G_i = w_i ||grad_W L_i||`` on the last shared layer W
(here the encoder's deepest parameter with more than one dimension), ``r_i = L~_i / mean(L~)`` and
``L~_i = L_i(t) / L_i(0)``; the target ``mean(G) r_i^alpha`` is held constant. A task that trains
slower than the others (larger r) is pushed to a larger gradient norm; ``alpha`` sets how hard. After each
applied step the weights are renormalised to sum to the number of tasks (floored at 1e-3 each, so none
turns negative). The first step's losses are L(0); they and the weights are saved with the run.

Cost: T backward passes down to W per step plus the usual one. In float16 the task losses carry the loss
scale s: the norms and L_grad grow by s with them, and the core divides s out of the weights' gradient as
out of any other; the loss ratios come from the unscaled losses. (The logged ``gradnorm/loss`` and
``gradnorm/grad_norm/TASK`` are then in scaled units.)
"""
from __future__ import annotations

import torch
from torch import nn

from mtssl.api import Field, Options, Weighting, WeightedLoss
from mtssl_plugins.weightings.gradients import task_gradients, trainable


class GradNormOptions(Options):
    alpha: float = Field(1.5, ge=0.0, le=10.0, description="strength of the restoring force (0: equal norms)")
    lr: float | None = Field(None, gt=0.0, description="learning rate of the weights (None: the run's)")


def gradnorm_loss(weights: torch.Tensor, norms: torch.Tensor, ratios: torch.Tensor, alpha: float) -> torch.Tensor:
    """``sum_i |w_i n_i - sg[mean(w n) r_i^alpha]|`` with ``r`` the loss ratios over their mean."""
    grad_norms = weights * norms
    relative = ratios / ratios.mean()
    target = (grad_norms.mean() * relative.pow(alpha)).detach()
    return (grad_norms - target).abs().sum()


def last_shared_layer(shared: list[nn.Parameter]) -> nn.Parameter:
    """The deepest weight of the encoder: its last parameter with more than one dimension."""
    matrices = [p for p in shared if p.dim() > 1]
    if not matrices:
        raise ValueError("weighting 'gradnorm' needs a shared encoder with a weight matrix or kernel")
    return matrices[-1]


class GradNorm(Weighting):
    needs_task_gradients = True
    options_model = GradNormOptions

    def __init__(self, name: str, **options):
        super().__init__(name, **options)
        self.tasks: list[str] = []

    def setup(self, tasks, device):
        self.tasks = list(tasks)
        self.weights = nn.Parameter(torch.ones(len(self.tasks), device=device))
        self.initial = torch.zeros(0, device=device)  # L(0), empty until the first applied step
        self.losses: torch.Tensor | None = None  # this step's unscaled losses

    def parameters(self):
        return [self.weights]

    def combine(self, losses, step):
        self.losses = torch.stack([losses[t].float() for t in self.tasks])
        weights = self.weights.detach().clone()
        return WeightedLoss((weights * self.losses).sum(), dict(zip(self.tasks, weights.unbind())))

    def backward(self, losses, combined, shared, others):
        layer = last_shared_layer(trainable(shared))
        norms = task_gradients([losses[t] for t in self.tasks], [layer]).norm(dim=1)
        combined.loss.backward()  # the network's gradient: the weights enter it as constants
        current = self.losses.detach()
        initial = self.initial if len(self.initial) else current
        ratios = current / initial.clamp_min(torch.finfo(initial.dtype).tiny)
        loss = gradnorm_loss(self.weights, norms, ratios, self.alpha)
        self.weights.grad = torch.autograd.grad(loss, self.weights)[0]
        return {f"{self.name}/loss": loss.detach(), **{f"{self.name}/grad_norm/{t}": n
                                                       for t, n in zip(self.tasks, norms.unbind())}}

    def commit(self):
        if not len(self.initial):
            self.initial = self.losses.detach().clone()
        with torch.no_grad():
            floored = self.weights.clamp_min(1e-3)
            self.weights.copy_(floored * len(self.tasks) / floored.sum())

    def state_dict(self):
        return {"weights": self.weights.detach().clone(), "initial": self.initial.clone()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.weights.copy_(state["weights"])
        self.initial = state["initial"].to(self.weights.device).clone()
