"""PCGrad (Yu et al., NeurIPS 2020): project away conflicting task gradients on the shared encoder.

For each task i, its encoder gradient g_i is projected, against every other
task j in random order, onto the normal plane of g_j whenever the two conflict
(g_i . g_j < 0); the encoder gets the sum of the projected gradients. Heads
get their own task's gradient unchanged (no other task reaches them). The
gradients are flattened over all encoder parameters, as in the paper. The
orders come from the weighting's own generator (seeded from the run, saved
with it), so the run's other random streams are not shifted.
"""
from __future__ import annotations

import torch

from mtssl.api import Options, WeightedLoss
from mtssl_plugins.weightings.gradients import GradientWeighting
from mtssl_plugins.weightings.randomness import CommittedGenerator


def project_conflicts(grads: torch.Tensor, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """PCGrad on ``[T, P]`` task gradients: the combined ``[P]`` gradient and the number of projections
    (a 0-d tensor; nothing here waits for the device)."""
    projected = grads.clone()
    count = grads.new_zeros(())
    for i in range(len(grads)):
        others = [j for j in torch.randperm(len(grads), generator=generator).tolist() if j != i]
        for j in others:
            conflict = (projected[i] @ grads[j]).clamp(max=0)  # 0 where they do not conflict: no change
            projected[i] -= conflict / grads[j].pow(2).sum().clamp_min(1e-20) * grads[j]
            count += (conflict < 0).to(count.dtype)
    return projected.sum(0), count


class PCGrad(GradientWeighting):
    options_model = Options  # takes none

    def __init__(self, name: str, **options):
        super().__init__(name, **options)
        self.random = CommittedGenerator(self.context.seed, f"weighting/{name}")

    def bind(self, context):
        super().bind(context)
        self.random = CommittedGenerator(context.seed, f"weighting/{self.name}")

    def combine(self, losses, step):
        total = torch.stack([loss.float() for loss in losses.values()]).sum()
        return WeightedLoss(total, {task: 1.0 for task in losses})

    def shared_gradient(self, grads, losses):
        combined, count = project_conflicts(grads, self.random.draw())
        return combined, {"projections": count}

    def commit(self):
        self.random.commit()

    def state_dict(self):
        return {"generator": self.random.state()}

    def load_state_dict(self, state):
        if state:  # (a run saved before PCGrad had a generator of its own starts this one afresh)
            self.random.load_state(state["generator"])
