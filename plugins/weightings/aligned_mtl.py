"""Aligned-MTL (Senushkin et al., CVPR 2023): align the task gradients to an orthogonal, equal-norm system.

With the Gram matrix ``M = G G^T = V diag(lambda) V^T`` of the T task gradients (rows of G), the balance
transform ``B = sqrt(lambda_min) V diag(lambda)^{-1/2} V^T`` makes the aligned gradients ``B G`` orthogonal
with equal norms ``sqrt(lambda_min)`` (condition number 1). The encoder gets ``sum_t (B G)_t``, i.e.
``d = sum_t a_t g_t`` with ``a = B 1`` (the paper's task weights all 1), and ``a`` is logged. Eigenvalues
below ``lambda_max * T * eps`` are treated as zero (their directions are dropped, and ``lambda_min`` is the
smallest kept one), as for a rank-deficient Gram matrix in the authors' code. Heads get their own task's
gradient.
"""
from __future__ import annotations

import torch

from mtssl.api import Options
from mtssl_plugins.weightings.gradients import GradientWeighting, unit_scale


def balance_transform(gram: torch.Tensor) -> torch.Tensor:
    """``B = sqrt(lambda_min) V diag(lambda)^{-1/2} V^T`` over the eigenvalues above the rank tolerance."""
    values, vectors = torch.linalg.eigh(gram)
    kept = values > values.max() * len(values) * torch.finfo(values.dtype).eps
    inverse_root = torch.where(kept, values.clamp_min(torch.finfo(values.dtype).tiny).rsqrt(),
                               torch.zeros_like(values))
    smallest = torch.where(kept, values, torch.full_like(values, torch.inf)).min()
    smallest = torch.where(torch.isinf(smallest), torch.zeros_like(smallest), smallest)  # all gradients zero
    return smallest.clamp_min(0).sqrt() * (vectors * inverse_root) @ vectors.T


def aligned_weights(gram: torch.Tensor) -> torch.Tensor:
    """``a = B 1``: the weight of each task gradient in the sum of the aligned gradients."""
    return balance_transform(unit_scale(gram)).sum(1)


class AlignedMTL(GradientWeighting):
    options_model = Options  # takes none

    def task_weights(self, gram, losses):
        return aligned_weights(gram)
