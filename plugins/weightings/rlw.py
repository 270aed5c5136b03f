"""Random Loss Weighting (Lin et al., TMLR 2022, "Reasonable effectiveness of random weighting").

Every step draws fresh task weights: ``softmax(z)`` with ``z ~ N(0, I)`` (``distribution=normal``, the form
LibMTL uses) or a flat ``Dirichlet(1, ..., 1)`` draw (``distribution=dirichlet``: normalised Exp(1)
draws). The paper's weights sum to 1; here they are multiplied by the number of tasks K, so that each
weight is 1 on average, as with ``equal``, and ``--lr`` means the same with either. The draws come from
the weighting's own generator, seeded from the run and saved with it (the same weights after
``--resume``, and the run's other random streams untouched); every rank draws the same weights.
"""
from __future__ import annotations

from typing import Literal

import torch

from mtssl.api import Field, Options, Weighting, WeightedLoss
from mtssl_plugins.weightings.randomness import CommittedGenerator


class RLWOptions(Options):
    distribution: Literal["normal", "dirichlet"] = Field("normal", description="softmax of N(0,1) or flat Dirichlet")


def random_weights(count: int, distribution: str, generator: torch.Generator) -> torch.Tensor:
    """``count`` weights on the simplex, times ``count`` (mean 1), drawn on the CPU from ``generator``."""
    if distribution == "normal":
        weights = torch.softmax(torch.randn(count, generator=generator), dim=0)
    else:
        draws = torch.empty(count).exponential_(generator=generator)  # Exp(1) / sum: Dirichlet(1, ..., 1)
        weights = draws / draws.sum()
    return count * weights


class RLW(Weighting):
    options_model = RLWOptions

    def __init__(self, name: str, **options):
        super().__init__(name, **options)
        self.tasks: list[str] = []

    def setup(self, tasks, device):
        self.tasks, self.device = list(tasks), device
        self.random = CommittedGenerator(self.context.seed, f"weighting/{self.name}")

    def combine(self, losses, step):
        stacked = torch.stack([losses[t].float() for t in self.tasks])
        weights = random_weights(len(self.tasks), self.distribution, self.random.draw()).to(self.device,
                                                                                             non_blocking=True)
        return WeightedLoss((weights * stacked).sum(), dict(zip(self.tasks, weights.unbind())))

    def commit(self):
        self.random.commit()

    def state_dict(self):
        return {"generator": self.random.state()}

    def load_state_dict(self, state):
        self.random.load_state(state["generator"])
