"""CAGrad (Liu et al., NeurIPS 2021): the update that best helps the worst task near the average gradient.

With ``g0`` the average of the T task gradients and ``g_w = sum_t w_t g_t``, the dual problem is
``min_w g_w . g0 + c ||g0|| ||g_w||`` over the simplex; the encoder gets
``d = g0 + (c ||g0|| / ||g_w||) g_w``, divided by ``1 + c^2`` when ``rescale`` is on (the authors' code's
default, which keeps the step size near plain averaging's). ``c = 0`` is the average gradient; larger ``c``
moves further towards the worst-off task. The dual is solved on the Gram matrix by exponentiated-gradient
(mirror) descent on the simplex, ``iterations`` steps of size 2 after scaling the Gram matrix to unit
diagonal maximum; the authors use scipy's SLSQP. ``d`` is a weighted sum of the task gradients, and those
weights are logged. Heads get their own task's gradient.
"""
from __future__ import annotations

import torch

from mtssl.api import Field, Options
from mtssl_plugins.weightings.gradients import GradientWeighting, unit_scale


class CAGradOptions(Options):
    c: float = Field(0.5, ge=0.0, le=10.0, description="radius of the ball around the average gradient")
    rescale: bool = Field(True, description="divide the update by 1 + c^2 (the authors' default)")
    iterations: int = Field(100, ge=1, le=10_000, description="mirror-descent iterations for the dual")


def cagrad_dual(gram: torch.Tensor, c: float, iterations: int = 100, step: float = 2.0) -> torch.Tensor:
    """The simplex point ``w`` minimising ``w'M b + c sqrt(b'M b) sqrt(w'M w)`` with ``b`` uniform."""
    gram = unit_scale(gram)
    count = len(gram)
    uniform = torch.full((count,), 1.0 / count, dtype=gram.dtype, device=gram.device)
    towards_mean, radius = gram @ uniform, c * (uniform @ gram @ uniform).clamp_min(0).sqrt()
    weights = uniform
    for _ in range(iterations):
        spread = gram @ weights
        gradient = towards_mean + radius * spread / (weights @ spread).clamp_min(1e-12).sqrt()
        weights = weights * torch.exp(-step * (gradient - gradient.min()))  # shifted: no overflow
        weights = weights / weights.sum()
    return weights


def cagrad_weights(gram: torch.Tensor, c: float, rescale: bool = True, iterations: int = 100) -> torch.Tensor:
    """``d = sum_t weights_t g_t``: ``1/T + lambda w_t`` with ``lambda = c ||g0|| / ||g_w||`` (over 1 + c^2)."""
    count = len(gram)
    w = cagrad_dual(gram, c, iterations)
    uniform = torch.full_like(w, 1.0 / count)
    mean_norm = (uniform @ gram @ uniform).clamp_min(0).sqrt()
    dual_norm = (w @ gram @ w).clamp_min(0).sqrt()
    weights = uniform + c * mean_norm / dual_norm.clamp_min(torch.finfo(gram.dtype).tiny) * w
    return weights / (1 + c * c) if rescale else weights


class CAGrad(GradientWeighting):
    options_model = CAGradOptions

    def task_weights(self, gram, losses):
        return cagrad_weights(gram, self.c, self.rescale, self.iterations)
