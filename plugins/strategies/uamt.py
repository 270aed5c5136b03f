"""Uncertainty-aware Mean Teacher (Yu et al., MICCAI 2019) for masks.

The EMA teacher (the core's, ``teacher_decay``) runs ``passes`` stochastic
passes over the student's pixels; their mean ``q_t`` is the target and its
entropy ``U`` the uncertainty. Only pixels with ``U < threshold`` count, the
threshold ramped from 0.75 to 1 times the largest entropy ``ln K`` over
``threshold_rampup`` steps (``K`` = 2 per channel of a sigmoid head, channels
plus background of a softmax head), so the teacher is trusted on more pixels
as it improves. The loss is
``weight * rampup(step) * sum(mask * mse) / (sum(mask) + 1e-16)``, ``mse`` the
per-pixel mean over categories of ``(q_s - q_t)^2`` (as SSL4MIS's
``sum(mask * dist) / (2 sum(mask))`` for two classes).

The passes differ through the teacher's dropout (both networks run in training
mode) and, with ``perturb=photometric``, through their own random intensity
operations on the student's pixels (the core's views offer no additive
Gaussian noise; intensity operations play the paper's input noise).
"""
from __future__ import annotations

import math
from typing import Literal

import torch

from mtssl.api import (Field, Options, SSLStrategy, StrategyInputs, StrategyLoss, ViewRequest,
                       sigmoid_rampup)
from mtssl_plugins.strategies.dense import distribution_mse, entropy, log_distribution


def uncertainty_threshold(step: int, length: int, categories: int) -> float:
    """``(0.75 + 0.25 * rampup(step)) * ln K`` (SSL4MIS's UA-MT ramp, for K categories)."""
    return (0.75 + 0.25 * sigmoid_rampup(step, length)) * math.log(categories)


def uncertainty_masked_mse(student_log_q: torch.Tensor, teacher_qs: list[torch.Tensor],
                           threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean of the per-pixel MSE to the teachers' mean over pixels whose mean's entropy < threshold.

    Returns (loss, mask, uncertainty); 0 (connected to the student) where no pixel is certain enough.
    """
    mean_q = torch.stack([q.detach().float() for q in teacher_qs]).mean(dim=0)
    uncertainty = entropy(torch.log(mean_q.clamp_min(1e-12)))
    mask = (uncertainty < threshold).float()
    mse = distribution_mse(student_log_q, mean_q)
    return (mask * mse).sum() / (mask.sum() + 1e-16), mask, uncertainty


class UAMTOptions(Options):
    weight: float = Field(0.1, ge=0.0, description="weight of the masked consistency loss (after the ramp-up)")
    rampup: int = Field(200, ge=0, description="steps of the sigmoid ramp-up of the weight")
    ema: float = Field(0.99, ge=0.0, lt=1.0, description="decay of the EMA teacher")
    passes: int = Field(8, ge=1, le=32, description="stochastic teacher passes (T)")
    threshold_rampup: int = Field(1000, ge=0, description="steps of the threshold's ramp from 0.75 to 1 x ln K")
    perturb: Literal["photometric", "none"] = Field(
        "photometric", description="photometric: each teacher pass its own intensity operations; none: dropout only")


class UncertaintyMeanTeacher(SSLStrategy):
    """weight * rampup(step) * MSE(q_student, mean of T teacher passes) over pixels of low teacher entropy."""

    options_model = UAMTOptions

    def serves(self, target):
        """Binary structure maps, one or more channels (a sigmoid or a softmax head)."""
        return target.spatial and target.binary

    def teacher_decay(self) -> float:
        return self.ema

    def plan(self):
        aug = "strong_photometric" if self.perturb == "photometric" else "none"
        return [ViewRequest("student", "unlabeled", "weak"),
                *(ViewRequest(f"teacher{t}", aug=aug, of="student", grad=False, model="teacher")
                  for t in range(self.passes))]

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        task = inputs.task
        student = log_distribution(task, inputs.views["student"])
        teachers = [log_distribution(task, inputs.views[f"teacher{t}"]).exp() for t in range(self.passes)]
        threshold = uncertainty_threshold(inputs.step, self.threshold_rampup, student.shape[1])
        mse, mask, uncertainty = uncertainty_masked_mse(student, teachers, threshold)
        weight = self.weight * sigmoid_rampup(inputs.step, self.rampup)
        return StrategyLoss(weight * mse, {"mse": mse.detach(), "mask_rate": mask.mean(),
                                           "uncertainty": uncertainty.mean(), "threshold": threshold,
                                           "weight": weight})
