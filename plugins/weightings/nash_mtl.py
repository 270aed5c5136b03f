"""Nash-MTL (Navon et al., ICML 2022): the tasks bargain over the update; the Nash solution weighs them.

The encoder gets ``d = sum_t a_t g_t`` where ``a > 0`` solves ``G^T G a = 1 / a`` (elementwise): every
task's gain ``g_t . d`` is ``1 / a_t``, the Nash bargaining solution. As in the authors' code, the Gram
matrix is first divided by its Frobenius norm, so ``a`` does not depend on the size of the gradients and
``d`` grows linearly with them (and with the fp16 loss scale).

Solver: the system is the stationarity condition of the strictly convex
``f(a) = a'Ma / 2 - sum_t log a_t``; damped Newton steps ``a <- a - H^{-1} grad f / (1 + lambda)``
(``lambda`` the Newton decrement) stay positive and converge quadratically once close, so ``iterations``
(20) fixed steps solve it to float precision from ``a_t = 1 / sqrt(M_tt)`` (exact for orthogonal
gradients). The paper instead solves a sequence of convex programs (concave-convex procedure with cvxpy)
that trades exactness for speed and stops early; this solves the system itself, with no extra
dependency. A ridge of 1e-6 (relative) keeps the problem well posed when gradients are linearly
dependent, where the exact system has no solution. The authors' gradient clipping and their option of
updating the weights only every few steps are left out. Heads get their own task's gradient.
"""
from __future__ import annotations

import torch

from mtssl.api import Field, Options
from mtssl_plugins.weightings.gradients import GradientWeighting


class NashMTLOptions(Options):
    iterations: int = Field(20, ge=1, le=1000, description="damped Newton steps")


def nash_weights(gram: torch.Tensor, iterations: int = 20, ridge: float = 1e-6) -> torch.Tensor:
    """``a > 0`` with ``M a = 1 / a`` for ``M = gram + ridge * I`` (``gram`` as given, not normalised)."""
    count = len(gram)
    matrix = gram + ridge * torch.eye(count, dtype=gram.dtype, device=gram.device)
    weights = matrix.diagonal().clamp_min(ridge).rsqrt()
    for _ in range(iterations):
        gradient = matrix @ weights - 1 / weights
        hessian = matrix + torch.diag(weights.pow(-2))
        newton = torch.linalg.solve(hessian, gradient)
        decrement = (gradient @ newton).clamp_min(0).sqrt()
        weights = weights - newton / (1 + decrement)
    return weights


class NashMTL(GradientWeighting):
    options_model = NashMTLOptions

    def task_weights(self, gram, losses):
        normalised = gram / torch.linalg.matrix_norm(gram).clamp_min(torch.finfo(gram.dtype).tiny)
        return nash_weights(normalised, self.iterations)
