"""Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019): weigh each task by how slowly its loss falls.

With ``L_k(t)`` task k's mean loss over averaging window t, the rate ``r_k = L_k(t-1) / L_k(t-2)`` and
``w_k = K exp(r_k / T) / sum_i exp(r_i / T)`` for K tasks at temperature ``T``: a task whose loss stopped
falling (r near 1 or above) gets more weight, and the weights sum to K. Until two windows are complete
every weight is 1. The paper averages over an epoch; mtssl does not tell a weighting its epoch length, so
the window is ``window`` steps (set it to the run's steps per epoch for the paper's behaviour). The
window statistics are state: proposed by every step, committed only by an applied one, saved with the run.
Under torchrun the losses are averaged over the processes first, so every rank uses the same weights.
"""
from __future__ import annotations

import torch

from mtssl.api import Field, Options, Weighting, WeightedLoss


class DWAOptions(Options):
    T: float = Field(2.0, gt=0.0, le=100.0, description="softmax temperature (the paper's 2)")
    window: int = Field(50, ge=1, le=1_000_000, description="steps averaged into one loss value")


def dwa_weights(previous: torch.Tensor, before: torch.Tensor, temperature: float) -> torch.Tensor:
    """``K softmax(r / T)`` with ``r = previous / before``, for ``[K]`` mean losses of the last two windows."""
    rates = previous / before.clamp_min(torch.finfo(before.dtype).tiny)
    return len(rates) * torch.softmax(rates / temperature, dim=0)


class DWA(Weighting):
    options_model = DWAOptions

    def __init__(self, name: str, **options):
        super().__init__(name, **options)
        self.tasks: list[str] = []

    def setup(self, tasks, device):
        self.tasks = list(tasks)
        self.state = {"sums": torch.zeros(len(self.tasks), device=device),  # of the window being filled
                      "steps": torch.zeros((), dtype=torch.int64),  # in that window (a host tensor)
                      "means": torch.zeros(2, len(self.tasks), device=device),  # the last two windows, newest first
                      "complete": torch.zeros((), dtype=torch.int64)}  # windows completed (at most 2 counted)
        self.proposal: dict[str, torch.Tensor] | None = None

    def weights(self) -> torch.Tensor:
        if int(self.state["complete"]) < 2:
            return torch.ones(len(self.tasks), device=self.state["sums"].device)
        previous, before = self.state["means"]
        return dwa_weights(previous, before, self.T)

    def combine(self, losses, step):
        stacked = torch.stack([losses[t].float() for t in self.tasks])
        weights = self.weights()
        self.proposal = self.advance(self.context.all_reduce_mean(stacked.detach()))
        return WeightedLoss((weights * stacked).sum(), dict(zip(self.tasks, weights.unbind())))

    def advance(self, losses: torch.Tensor) -> dict[str, torch.Tensor]:
        """The state after adding this step's ``losses`` to the window (a window that fills up is closed)."""
        sums, steps = self.state["sums"] + losses, int(self.state["steps"]) + 1
        if steps < self.window:
            return {**self.state, "sums": sums, "steps": torch.tensor(steps)}
        means = torch.stack([sums / steps, self.state["means"][0]])
        complete = min(int(self.state["complete"]) + 1, 2)
        return {"sums": torch.zeros_like(sums), "steps": torch.tensor(0), "means": means,
                "complete": torch.tensor(complete)}

    def commit(self):
        if self.proposal is not None:
            self.state, self.proposal = self.proposal, None

    def state_dict(self):
        return {k: v.clone() for k, v in self.state.items()}

    def load_state_dict(self, state):
        self.state = {k: state[k].to(self.state[k].device, self.state[k].dtype).clone() for k in self.state}
