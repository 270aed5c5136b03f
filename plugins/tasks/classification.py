"""Image classification: max-pool, global average pool, one linear layer; cross-entropy."""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from mtssl.api import HeadInputs, Task, check_options, hookimpl


class ClassificationHead(nn.Module):
    """Paper Table 4 tail: MaxPool(2) -> AvgPool -> FC on the deepest feature map."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, features: list[torch.Tensor], extras: Mapping[int, torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        if min(x.shape[-2:]) >= 2:
            x = F.max_pool2d(x, 2)
        return self.fc(x.mean(dim=(-2, -1)))


class ClassificationTask(Task):
    """Image-level classes (e.g. normal vs pneumonia), trained with cross-entropy."""

    target_kind = "class"
    default_labels = 100  # the paper's smallest budget

    def __init__(self, name: str, **options):
        check_options(f"task '{name}'", options, {"classes", "weight"})
        super().__init__(name, **options)
        self.num_classes = int(options.get("classes", 2))
        self.weight = float(options.get("weight", 1.0))

    def build_head(self, inputs: HeadInputs) -> nn.Module:
        if inputs.extras:
            raise ValueError(f"task '{self.name}' takes no bridge inputs (its head has no decoder)")
        return ClassificationHead(inputs.channels[-1], self.num_classes)

    def supervised_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.weight * F.cross_entropy(output.float(), target.long())

    def probabilities(self, output: torch.Tensor) -> torch.Tensor:
        return torch.softmax(output.float(), dim=1)

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        return {"acc": (output.argmax(1) == target).float().mean().item()}

    def selection_score(self, metrics: Mapping[str, float]) -> float | None:
        return metrics.get("acc")


@hookimpl
def register_tasks(register):
    register("cls", ClassificationTask, aliases=("classification",),
             description="image classification (pool + FC, cross-entropy); options classes, weight")
