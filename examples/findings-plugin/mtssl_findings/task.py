"""The ``findings`` task: several findings per image, each present or not, some of them unread.

Sigmoid per finding, binary cross-entropy over the known findings only
(:func:`mtssl.api.masked_binary_cross_entropy`), accuracy and per-finding
AUC over the known findings only. Its head pools the deepest features under
one attention map per finding; bridge extras (e.g. the lungs a segmentation
found, through ``--bridge mask:seg->findings``) steer those maps.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from mtssl.api import (Field, HeadInputs, Options, PredictionWriter, Task, TaskEvaluation, known_mask,
                       masked_binary_cross_entropy, read_options, resize_like)

from mtssl_findings.phantom import FINDING_NAMES, FINDINGS


class AttentionPoolHead(nn.Module):
    """One attention map per finding over the deepest features, then one linear score per finding.

    The maps come from a 1x1 convolution over the features and every bridge
    extra (brought to the deepest stride). Its weights start at zero, so an
    untrained head pools uniformly: a global average pool and a linear layer.
    """

    def __init__(self, channels: int, extra_channels: int, findings: int):
        super().__init__()
        self.attention = nn.Conv2d(channels + extra_channels, findings, kernel_size=1)
        nn.init.zeros_(self.attention.weight)
        nn.init.zeros_(self.attention.bias)
        self.score = nn.Linear(channels, findings)

    def forward(self, features: list[torch.Tensor], extras: Mapping[int, torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        steering = [resize_like(extras[stride], x).to(x.dtype) for stride in sorted(extras)]
        weights = torch.softmax(self.attention(torch.cat([x, *steering], dim=1)).flatten(2), dim=-1)
        pooled = torch.einsum("bkn,bcn->bkc", weights, x.flatten(2))  # [B, findings, channels]
        return (pooled * self.score.weight).sum(dim=-1) + self.score.bias


def auc(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half); None without both classes."""
    positives = truth == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if not n_pos or not n_neg:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2)[inverse]  # 1-based ranks, the mean rank over ties
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class FindingsOptions(Options):
    weight: float = Field(1.0, ge=0.0, description="weight of the supervised loss")


class Findings(Task):
    """Multi-label findings, learned from the findings that were read."""

    target = FINDINGS
    default_labels = 40
    default_source = "findings-phantom"

    def __init__(self, name: str, **options):
        settings = read_options(f"task '{name}'", options, FindingsOptions)
        super().__init__(name, **options)
        self.weight = settings.weight

    def build_head(self, inputs: HeadInputs) -> nn.Module:
        return AttentionPoolHead(inputs.channels[-1], sum(inputs.extras.values()), len(FINDING_NAMES))

    def probabilities(self, output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(output.float())

    def supervised_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.weight * masked_binary_cross_entropy(output, target, self.target)

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        known = known_mask(target, self.target)
        correct = (self.probabilities(output) >= 0.5) == (target == 1)
        return {"accuracy": correct[known].float().mean().item(),
                "bce": masked_binary_cross_entropy(output, target, self.target).item()}

    def selection_score(self, metrics: Mapping[str, float]) -> float | None:
        return metrics.get("accuracy")

    def evaluate(self, probabilities: np.ndarray, targets: np.ndarray,
                 class_names: Sequence[str] = ()) -> TaskEvaluation:
        """Accuracy over the known findings and AUC per finding over the images where it was read."""
        names = tuple(class_names) or FINDING_NAMES
        probabilities, targets = np.asarray(probabilities, np.float64), np.asarray(targets, np.float64)
        known = known_mask(targets, self.target)
        correct = (probabilities >= 0.5) == (targets == 1)
        records = [{**{f"{name}/p": float(p) for name, p in zip(names, probs)},
                    **{name: (float(t) if k else None) for name, t, k in zip(names, truth, read)},
                    "known": int(read.sum()), "correct": int((right & read).sum())}
                   for probs, truth, read, right in zip(probabilities, targets, known, correct)]
        aggregate = {"accuracy": {"mean": float(correct[known].mean()) if known.any() else None, "std": None}}
        notes = []
        areas = []
        for column, name in enumerate(names):
            read = known[:, column]
            area = auc(probabilities[read, column], targets[read, column])
            aggregate[f"{name}/auc"] = {"mean": area, "std": None}
            if area is None:
                notes.append(f"{name}/auc undefined: the images where {name} was read are all of one class")
            else:
                areas.append(area)
        aggregate["mean_auc"] = {"mean": float(np.mean(areas)) if areas else None, "std": None}
        return TaskEvaluation(records, aggregate, notes=notes)

    def output_info(self, class_names: Sequence[str] = ()) -> dict:
        names = list(class_names or FINDING_NAMES)
        return {"shape": [len(names)], "findings": names, "activation": "sigmoid per finding",
                "decision": "a finding is present when its probability is at least 0.5"}

    def prediction_writer(self, out_dir: Path, class_names: Sequence[str] = ()) -> PredictionWriter:
        return FindingsCsv(Path(out_dir) / f"{self.name}.csv", tuple(class_names) or FINDING_NAMES)


class FindingsCsv(PredictionWriter):
    """``image,FINDING...`` rows of probabilities."""

    def __init__(self, path: Path, names: Sequence[str]):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.handle = open(path, "w", newline="")
        self.writer = csv.writer(self.handle)
        self.writer.writerow(["image", *names])

    def write(self, name: str, probability: np.ndarray, original_size: tuple[int, int]) -> None:
        self.writer.writerow([name, *(f"{p:.4f}" for p in np.asarray(probability, float).reshape(-1))])

    def close(self) -> list[Path]:
        self.handle.close()
        return [self.path]
