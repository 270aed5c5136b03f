"""MGDA (Sener & Koltun, NeurIPS 2018): the min-norm point in the convex hull of the task gradients.

The encoder gets ``d = sum_t a_t g_t`` with ``a`` on the simplex minimising ``||sum_t a_t g_t||^2``: a
direction that decreases every task's loss unless the run is Pareto-stationary. ``a`` is found by the
paper's Frank-Wolfe solver with its exact line search, worked on the Gram matrix of the gradients (exact
for two tasks after one iteration). ``normalize`` divides each gradient before solving, as in the authors'
code: ``l2`` by its norm, ``loss`` by the task's loss, ``loss+`` by both; the weights then apply to the
unnormalised gradients. Heads get their own task's gradient.

``ub=true`` is MGDA-UB, the paper's cheaper upper bound: the weights come from the gradients with
respect to the shared *representation* (the encoder's outputs of the step's passes, which the core
records for a weighting that sets ``needs_representation``) instead of the encoder's parameters. Each
task's backward then stops at the representation (and gives the heads their own gradients); one more
backward of ``sum_t a_t L_t`` gives every shared parameter its weighted gradient. That last pass runs
through the heads again, because shared parameters may sit above the representation (MTAN's carries), so
UB costs T head passes plus one full backward: cheaper than MGDA's T full passes only when every task's
loss covers the same images (in MultiMix each task has its own rows, and UB is the slower of the two).
"""
from __future__ import annotations

from typing import Literal

import torch

from mtssl.api import Field, Options
from mtssl_plugins.weightings.gradients import GradientWeighting, task_gradients, trainable, unit_scale


class MGDAOptions(Options):
    normalize: Literal["none", "l2", "loss", "loss+"] = Field(
        "none", description="gradient normalisation before solving (the authors' code)")
    iterations: int = Field(100, ge=1, le=10_000, description="Frank-Wolfe iterations")
    ub: bool = Field(False, description="MGDA-UB: solve on the gradients of the encoder's outputs")


def min_norm_weights(gram: torch.Tensor, iterations: int = 100) -> torch.Tensor:
    """Frank-Wolfe for ``min_a a^T M a`` on the simplex, from the uniform point (Sener & Koltun, Alg. 2).

    Each iteration moves towards the vertex t with the smallest ``(M a)_t`` by the step ``gamma`` that
    minimises the norm on the segment: ``gamma = clip((a'Ma - (Ma)_t) / (a'Ma + M_tt - 2 (Ma)_t), 0, 1)``.
    Written without data-dependent branches, so it would not wait for a device; the weightings call it on
    the host (see ``GradientWeighting.solve``).
    """
    gram = unit_scale(gram)
    count = len(gram)
    weights = torch.full((count,), 1.0 / count, dtype=gram.dtype, device=gram.device)
    eye = torch.eye(count, dtype=gram.dtype, device=gram.device)
    for _ in range(iterations):
        product = gram @ weights
        vertex = torch.argmin(product)
        current, towards, corner = weights @ product, product[vertex], gram[vertex, vertex]
        gap = current + corner - 2 * towards
        gamma = ((current - towards) / gap.clamp_min(1e-12)).clamp(0.0, 1.0)
        weights = (1 - gamma) * weights + gamma * eye[vertex]
    return weights


def normalizers(gram: torch.Tensor, losses: torch.Tensor, kind: str) -> torch.Tensor:
    """What each gradient is divided by before solving (the authors' ``gradient_normalizers``)."""
    norms = gram.diagonal().clamp_min(0).sqrt()
    by = {"none": torch.ones_like(norms), "l2": norms, "loss": losses, "loss+": losses * norms}[kind]
    return by.clamp_min(torch.finfo(gram.dtype).tiny)


class MGDA(GradientWeighting):
    options_model = MGDAOptions

    @property
    def needs_representation(self) -> bool:
        return self.ub

    def backward(self, losses, combined, shared, others, representation=()):
        if not self.needs_representation:
            return super().backward(losses, combined, shared, others)
        names = list(losses)
        if not representation:
            raise ValueError(f"weighting '{self.name}' (ub=true) got no shared representation to differentiate: "
                             "no encoder output of this step carries a gradient")
        # float32 rows: under bf16 autocast the representation is bf16, too coarse for the Gram matrix
        grads = task_gradients([losses[t] for t in names], representation, others).float()
        weights = self.solve(grads, torch.stack([losses[t].detach().float() for t in names]))
        total = sum(w * losses[t] for w, t in zip(weights.unbind(), names))
        shared = trainable(shared)
        for p, g in zip(shared, torch.autograd.grad(total, shared, allow_unused=True)):
            p.grad = g
        return self.named_logs(names, {"weights": weights.detach()})

    def task_weights(self, gram, losses):
        scale = normalizers(gram, losses, self.normalize)
        return min_norm_weights(gram / torch.outer(scale, scale), self.iterations)
