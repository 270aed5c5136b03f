"""IMTL-G (Liu et al., ICLR 2021, "Towards impartial multi-task learning"), the gradient balance.

The encoder gets ``d = sum_t a_t g_t`` with ``sum_t a_t = 1`` chosen so that ``d`` has the same projection
on every task's unit gradient ``u_t = g_t / ||g_t||``: no task is favoured. In closed form, with
``D = [g_1 - g_t]`` and ``U = [u_1 - u_t]`` (t = 2..T), ``a_{2:T} = g_1 U^T (D U^T)^{-1}`` and
``a_1 = 1 - sum a_{2:T}``, computed here from the Gram matrix (a pseudo-inverse where two gradients are
parallel). The paper balances the gradients of the shared *representation*; the weighting interface hands
over the encoder's parameters, so these are the parameter gradients. IMTL-L, the paper's learned loss
scales, is not included. Heads get their own task's gradient.
"""
from __future__ import annotations

import torch

from mtssl.api import Options
from mtssl_plugins.weightings.gradients import GradientWeighting


def imtl_weights(gram: torch.Tensor) -> torch.Tensor:
    """IMTL-G's ``a`` from the ``[T, T]`` Gram matrix of the task gradients."""
    norms = gram.diagonal().clamp_min(0).sqrt().clamp_min(torch.finfo(gram.dtype).tiny)
    unit = gram / norms  # unit[i, j] = g_i . u_j
    first = unit[0, 0] - unit[0, 1:]  # g_1 . (u_1 - u_j)
    cross = unit[0, 0] - unit[0, 1:][None, :] - unit[1:, :1] + unit[1:, 1:]  # (g_1 - g_i) . (u_1 - u_j)
    rest = first @ torch.linalg.pinv(cross)
    return torch.cat([1 - rest.sum(0, keepdim=True), rest])


class IMTL(GradientWeighting):
    options_model = Options  # takes none

    def task_weights(self, gram, losses):
        return imtl_weights(gram)
