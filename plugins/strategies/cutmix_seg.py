"""CutMix consistency for segmentation (French et al., BMVC 2020), with a mean teacher.

Each unlabeled image is mixed with the next one of its batch under a box
mask M (:func:`box_masks`: a box covering ``area`` of the image, random
aspect ratio and position): ``x_mix = (1 - M) x_a + M x_b``. The EMA teacher
(the core's, ``teacher_decay``) predicts both unmixed images, and its
probabilities are mixed the same way; the student predicts the mixed image
(one more backbone pass, :attr:`mtssl.api.StrategyInputs.forward`, since the
mix is drawn after the views are planned). The loss is
``weight * rampup(step) * mean (q_s(x_mix) - mix(q_t(x_a), q_t(x_b)))^2``
over pixels and categories (per channel for a sigmoid head, across channels
for a softmax head), the paper's squared-error consistency without its
optional confidence threshold.
"""
from __future__ import annotations

from mtssl.api import (Field, Options, SSLStrategy, StrategyInputs, StrategyLoss, ViewRequest,
                       sigmoid_rampup)
from mtssl_plugins.strategies.dense import box_masks, distribution_mse, log_distribution, mix


class CutMixOptions(Options):
    weight: float = Field(1.0, ge=0.0, description="weight of the CutMix consistency loss (after the ramp-up)")
    rampup: int = Field(0, ge=0, description="steps of the sigmoid ramp-up of the weight")
    ema: float = Field(0.99, ge=0.0, lt=1.0, description="decay of the EMA teacher")
    area: float = Field(0.5, gt=0.0, le=1.0, description="fraction of the image the pasted box covers")


class CutMixSeg(SSLStrategy):
    """weight * rampup(step) * MSE(q_student(mix(x_a, x_b)), mix(q_teacher(x_a), q_teacher(x_b)))."""

    options_model = CutMixOptions

    def serves(self, target):
        """Binary structure maps, one or more channels (a sigmoid or a softmax head)."""
        return target.spatial and target.binary

    def teacher_decay(self) -> float:
        return self.ema

    def plan(self):
        return [ViewRequest("teacher", "unlabeled", "weak", grad=False, model="teacher")]

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        task, images = inputs.task, inputs.view_images["teacher"]
        masks = box_masks(images.shape[0], images.shape[-2], images.shape[-1], self.area, images.device)
        mixed = mix(images, images.roll(1, dims=0), masks)
        teacher = log_distribution(task, inputs.views["teacher"]).exp()
        target = mix(teacher, teacher.roll(1, dims=0), masks)
        mse = distribution_mse(log_distribution(task, inputs.forward(mixed)), target).mean()
        weight = self.weight * sigmoid_rampup(inputs.step, self.rampup)
        return StrategyLoss(weight * mse, {"mse": mse.detach(), "weight": weight})
