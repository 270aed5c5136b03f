"""Mean Teacher (Tarvainen & Valpola 2017), for any task whose outputs have probabilities.

The student's predictions on a weakly augmented unlabeled batch are pulled
toward those of its EMA teacher (``teacher_decay``; the core keeps and
checkpoints the teacher) by the mean squared difference of probabilities,
weighted by ``weight * exp(-5 (1 - t/rampup)^2)`` (sigmoid ramp-up).

By default (``views=aligned``) the teacher sees the student's own pixels, so
the term works for dense targets (masks) unchanged; the two predictions
differ through the averaged weights and dropout (both networks run in
training mode), as in SSL4MIS's segmentation Mean Teacher. ``views=independent``
gives the teacher its own weak augmentation (only for per-image targets:
the geometry no longer lines up).
"""
from __future__ import annotations

from typing import Literal

from mtssl.api import (Field, Options, SSLStrategy, StrategyInputs, StrategyLoss, ViewRequest,
                       sigmoid_rampup)
from mtssl_plugins.functional import probability_mse


class MeanTeacherOptions(Options):
    weight: float = Field(1.0, ge=0.0, description="weight of the consistency loss (after the ramp-up)")
    rampup: int = Field(200, ge=0, description="steps of the sigmoid ramp-up of the weight")
    ema: float = Field(0.99, ge=0.0, lt=1.0, description="decay of the EMA teacher")
    views: Literal["aligned", "independent"] = Field(
        "aligned", description="aligned: teacher sees the student's pixels; independent: its own weak view")


class MeanTeacher(SSLStrategy):
    """weight * rampup(step) * MSE(p_student(weak), p_teacher(weak))."""

    options_model = MeanTeacherOptions

    def serves(self, target):
        """Any target whose head has probabilities (the consistency is on task.probabilities)."""
        return True

    def teacher_decay(self) -> float:
        return self.ema

    def plan(self):
        student = ViewRequest("student", "unlabeled", "weak")
        if self.views == "aligned":
            return [student, ViewRequest("teacher", "unlabeled", "none", grad=False, model="teacher", of="student")]
        return [student, ViewRequest("teacher", "unlabeled", "weak", grad=False, model="teacher")]

    def current_weight(self, step: int) -> float:
        return self.weight * sigmoid_rampup(step, self.rampup)

    def loss(self, inputs: StrategyInputs) -> StrategyLoss:
        task = inputs.task
        mse = probability_mse(task.probabilities(inputs.views["student"]), task.probabilities(inputs.views["teacher"]))
        weight = self.current_weight(inputs.step)
        return StrategyLoss(weight * mse, {"mse": mse.detach(), "weight": weight})
