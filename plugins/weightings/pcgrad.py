"""PCGrad (Yu et al., NeurIPS 2020): project away conflicting task gradients on the shared encoder.

For each task i, its encoder gradient g_i is projected, against every other
task j in random order, onto the normal plane of g_j whenever the two conflict
(g_i . g_j < 0); the encoder gets the sum of the projected gradients. Heads
get their own task's gradient unchanged (no other task reaches them). The
gradients are flattened over all encoder parameters, as in the paper.
"""
from __future__ import annotations

import torch

from mtssl.api import Options, Weighting, WeightedLoss, read_options


def project_conflicts(grads: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """PCGrad on ``[T, P]`` task gradients: the combined ``[P]`` gradient and the number of projections."""
    projected = grads.clone()
    count = 0
    for i in range(len(grads)):
        others = [j for j in torch.randperm(len(grads), generator=generator).tolist() if j != i]
        for j in others:
            dot = projected[i] @ grads[j]
            if dot < 0:
                projected[i] -= dot / grads[j].pow(2).sum().clamp_min(1e-20) * grads[j]
                count += 1
    return projected.sum(0), count


class PCGrad(Weighting):
    needs_task_gradients = True

    def __init__(self, name: str, **options):
        read_options(f"weighting '{name}'", options, Options)  # takes none
        super().__init__(name, **options)

    def combine(self, losses, step):
        total = torch.stack([loss.float() for loss in losses.values()]).sum()
        return WeightedLoss(total, {task: 1.0 for task in losses})

    def backward(self, losses, combined, shared, others):
        shared = [p for p in shared if p.requires_grad]
        rows = []
        for loss in losses.values():
            grads = torch.autograd.grad(loss, shared + list(others), retain_graph=True, allow_unused=True)
            flat = [torch.zeros_like(p) if g is None else g for p, g in zip(shared, grads[:len(shared)])]
            rows.append(torch.cat([g.flatten() for g in flat]))
            for p, g in zip(others, grads[len(shared):]):
                if g is not None:
                    p.grad = g.clone() if p.grad is None else p.grad + g
        combined_grad, count = project_conflicts(torch.stack(rows))
        offset = 0
        for p in shared:
            p.grad = combined_grad[offset: offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        return {"pcgrad/projections": float(count)}
