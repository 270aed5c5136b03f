"""Per-task gradients on the shared encoder: the one mechanism behind every gradient-based weighting.

Each task's loss is differentiated on its own (T backward passes per step, each keeping the graph for the
next). The shared encoder's gradients are flattened into one row per task, ``[T, P]``, which the method
turns into the one gradient the encoder gets. Every other trained parameter (a head, a bridge, a peer)
gets the sum of the tasks' own gradients unchanged: only its own task reaches a head, so there is
nothing to reconcile there (as in MGDA's and PCGrad's algorithms).

In float16 the losses carry the gradient scaler's factor s, which the core divides out of every ``.grad``
afterwards, so a method must give s times the gradient for s times the losses. Each method here does:
its task weights depend on the gradients only through ratios (scale-free), and the encoder gets a
weighted sum of the rows.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from mtssl.api import Weighting, WeightedLoss


def trainable(parameters: Sequence[nn.Parameter]) -> list[nn.Parameter]:
    return [p for p in parameters if p.requires_grad]


def flatten(parameters: Sequence[nn.Parameter], grads: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """One flat row of ``grads`` over ``parameters`` (zeros where a parameter got none)."""
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(parameters, grads)])


def task_gradients(losses: Sequence[torch.Tensor], shared: Sequence[nn.Parameter],
                   others: Sequence[nn.Parameter] = ()) -> torch.Tensor:
    """``[T, P]``: row t is task t's gradient on ``shared``, flattened; each task's gradient on ``others``
    is added to their ``.grad``. One backward pass per task; the graph is kept for the caller."""
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, [*shared, *others], retain_graph=True, allow_unused=True)
        rows.append(flatten(shared, grads[:len(shared)]))
        for p, g in zip(others, grads[len(shared):]):
            if g is not None:
                p.grad = g.clone() if p.grad is None else p.grad + g
    return torch.stack(rows)


def write_shared(shared: Sequence[nn.Parameter], flat: torch.Tensor) -> None:
    """Set ``.grad`` of ``shared`` from one flat ``[P]`` gradient."""
    offset = 0
    for p in shared:
        p.grad = flat[offset: offset + p.numel()].view_as(p).clone()
        offset += p.numel()


def unit_scale(gram: torch.Tensor) -> torch.Tensor:
    """``gram`` divided by its largest diagonal entry: the solvers' iterates and tolerances then do not depend
    on the size of the gradients (nor on the fp16 loss scale). An all-zero matrix is left as it is."""
    return gram / gram.diagonal().max().clamp_min(torch.finfo(gram.dtype).tiny)


class GradientWeighting(Weighting):
    """A weighting that reconciles the tasks' gradients on the shared encoder (one process only).

    :meth:`combine` returns the plain sum (what the divergence guard checks and ``loss`` logs); the weights
    each task's encoder gradient gets come out of :meth:`backward` and are logged there as ``weight/TASK``.
    Subclasses give :meth:`task_weights` from the Gram matrix of the task gradients, or override
    :meth:`shared_gradient` when the result is not a weighted sum of them.
    """

    needs_task_gradients = True

    def combine(self, losses, step):
        return WeightedLoss(torch.stack([loss.float() for loss in losses.values()]).sum())

    def backward(self, losses, combined, shared, others, representation=()):
        shared = trainable(shared)
        names = list(losses)
        grads = task_gradients([losses[t] for t in names], shared, others)
        flat, logs = self.shared_gradient(grads, torch.stack([losses[t].detach().float() for t in names]))
        write_shared(shared, flat)
        return self.named_logs(names, logs)

    def named_logs(self, names: list[str], logs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``weights`` as ``weight/TASK``, anything else as ``NAME/KEY``."""
        out = {}
        for key, value in logs.items():
            if key == "weights":
                out.update({f"weight/{t}": w for t, w in zip(names, value.unbind())})
            else:
                out[f"{self.name}/{key}"] = value
        return out

    def shared_gradient(self, grads: torch.Tensor, losses: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The encoder's ``[P]`` gradient from ``[T, P]`` task gradients, and what to log (``weights``: one per
        task, logged as ``weight/TASK``; any other key as ``NAME/KEY``)."""
        weights = self.solve(grads, losses)
        return weights @ grads, {"weights": weights.detach()}

    def solve(self, grads: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """``[T]`` weights of the ``[T, P]`` task gradients, from their Gram matrix by :meth:`task_weights`."""
        # T x T: solved on the host in double precision, one small transfer per step, instead of a kernel launch
        # per solver operation and a device synchronisation in each linear-algebra error check
        gram = (grads @ grads.T).to("cpu", torch.float64)
        if not torch.isfinite(gram).all():
            # a float16 step whose gradients overflowed: NaN weights keep the gradient non-finite, so the
            # scaler skips the step (linear algebra may raise on inf)
            return torch.full((len(gram),), torch.nan, dtype=grads.dtype, device=grads.device)
        weights = self.task_weights(gram, losses.to("cpu", torch.float64))
        return weights.to(grads.device, grads.dtype)

    def task_weights(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """``[T]`` weights of the task gradients from their ``[T, T]`` Gram matrix (and the task losses)."""
        raise NotImplementedError(f"weighting '{self.name}' defines neither task_weights nor shared_gradient")
