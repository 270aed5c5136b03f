"""A third-party plugin whose source mixes labeled items, items without a target and partly read findings.

Installed per test with :func:`install` (through the ``plugin_factory`` fixture). Its tasks refuse to
see the missing value in supervision, validation metrics or evaluation, so a run in which an unlabeled item
(or a placeholder) reaches any of them fails loudly.
"""
from __future__ import annotations

MODULE = "mtssl_demo_partial"

SOURCE = '''
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtssl.api import (HeadInputs, Sample, Source, TargetSpec, Task, TaskEvaluation, UnservedTarget, hookimpl,
                       known_mask, masked_binary_cross_entropy)

GRADE = TargetSpec("grade", "int64", (), missing=-1)
FINDINGS = TargetSpec("findings", "float32", (3,), missing=-1.0)


def has_target(index):
    return index % 3 != 2


def findings(index):
    """Finding 1 is unread on every fourth item; never all three, so such an item is still labeled."""
    return np.array([index % 2, -1.0 if index % 4 == 0 else 1.0, (index // 2) % 2], np.float32)


class Mixed(Source):
    """``mixed:n=N[,patients=1]``: every third item has no target; patients=1 pairs items by patient."""

    class_names = ("low", "high")

    def __init__(self, target, n, patients, seed):
        self.target, self.n, self.patients, self.seed = target, n, patients, seed

    @property
    def keys(self):
        return [f"mixed/{i:03d}" for i in range(self.n)]

    def load(self, index):
        image = np.random.default_rng([self.seed, index]).integers(0, 255, (40, 40), dtype=np.uint8)
        if not has_target(index):
            return Sample(image, None)
        return Sample(image, index % 2 if self.target.kind == "grade" else findings(index))

    def class_labels(self):
        if self.target.kind != "grade":
            return None
        return [i % 2 if has_target(i) else None for i in range(self.n)]

    def labeled(self):
        return [has_target(i) for i in range(self.n)]

    def groups(self):
        return [f"p{i // 2}" for i in range(self.n)] if self.patients else None


def build_mixed(name, path=None, target=None, seed=0, n=24, patients=0):
    if target is None or not (target.agrees(GRADE) or target.agrees(FINDINGS)):
        raise UnservedTarget(f"source '{name}' provides grade or findings targets, not "
                             f"{target.describe() if target else 'none'}")
    return Mixed(GRADE if target.agrees(GRADE) else FINDINGS, int(n), int(patients), seed)


class Head(nn.Module):
    def __init__(self, channels, outputs):
        super().__init__()
        self.fc = nn.Linear(channels, outputs)

    def forward(self, features, extras):
        return self.fc(features[-1].mean(dim=(2, 3)))


def refuse_placeholder(where, target):
    if not known_mask(target, GRADE).all():
        raise AssertionError(f"{where} received an item without a grade")


class GradeTask(Task):
    target = GRADE

    def build_head(self, inputs: HeadInputs):
        return Head(inputs.channels[-1], 2)

    def supervised_loss(self, output, target):
        refuse_placeholder("supervised_loss", target)
        return F.cross_entropy(output.float(), target)

    def probabilities(self, output):
        return torch.softmax(output.float(), dim=1)

    def metrics(self, output, target):
        refuse_placeholder("metrics", target)
        return {"accuracy": float((output.argmax(1) == target).float().mean())}

    def evaluate(self, probabilities, targets, class_names=()):
        refuse_placeholder("evaluate", targets)
        correct = (probabilities.argmax(1) == targets).astype(float)
        return TaskEvaluation([{"correct": c} for c in correct.tolist()],
                              {"accuracy": {"mean": float(correct.mean()), "std": float(correct.std())}})


class FindingsTask(Task):
    target = FINDINGS

    def build_head(self, inputs: HeadInputs):
        return Head(inputs.channels[-1], 3)

    def supervised_loss(self, output, target):
        if not known_mask(target, FINDINGS).any(dim=1).all():
            raise AssertionError("supervised_loss received an item without any finding")
        return masked_binary_cross_entropy(output, target, FINDINGS)

    def probabilities(self, output):
        return torch.sigmoid(output.float())


@hookimpl
def register_sources(register):
    register("mixed", build_mixed, description="labeled, unlabeled and partly read items")


@hookimpl
def register_tasks(register):
    register("grade", GradeTask, description="two grades; refuses placeholders")
    register("findings", FindingsTask, description="three findings, some unread (masked BCE)")
'''


def install(plugin_factory) -> None:
    plugin_factory.install("mtssl-demo-partial", {MODULE: SOURCE}, {"partial": MODULE})
