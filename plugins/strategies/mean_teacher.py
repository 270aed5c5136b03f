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

from mtssl.api import SSLStrategy, StrategyInputs, StrategyLoss, ViewRequest, check_options
from mtssl_plugins.functional import probability_mse, sigmoid_rampup


class MeanTeacher(SSLStrategy):
    """weight * rampup(step) * MSE(p_student(weak), p_teacher(weak))."""

    def serves(self, target):
        """Any target whose head has probabilities (the consistency is on task.probabilities)."""
        return True

    def __init__(self, name: str, **options):
        check_options(f"strategy '{name}'", options, {"weight", "rampup", "ema", "views"})
        super().__init__(name, **options)
        self.weight = float(options.get("weight", 1.0))
        self.rampup = int(options.get("rampup", 200))
        self.ema = float(options.get("ema", 0.99))
        self.views = str(options.get("views", "aligned"))
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"strategy '{name}': ema must lie in [0, 1), got {self.ema}")
        if self.rampup < 0:
            raise ValueError(f"strategy '{name}': rampup must be >= 0 steps, got {self.rampup}")
        if self.views not in {"aligned", "independent"}:
            raise ValueError(f"strategy '{name}': views must be 'aligned' or 'independent', got '{self.views}'")

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
