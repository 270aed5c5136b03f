"""Scoring the model on each task's validation split during training.

Each task reports its metrics; the run's selection score (``--select-by``)
is the mean of the tasks' own selection scores, or one named metric. Each
task may also name problems with its predictions that a number hides (a
classifier that puts every image in one class): they are collected as
one-line warnings for the console.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from mtssl.data.prepare import TaskArrays
from mtssl.interfaces import Task
from mtssl.model.network import to_float
from mtssl.training.batches import tensor_targets


@torch.no_grad()
def validate(model: nn.Module, tasks: Mapping[str, Task], data: Mapping[str, TaskArrays], device: torch.device,
             select_by: str = "mean", batch_size: int = 32, warnings: list[str] | None = None) -> dict[str, float]:
    """``TASK/METRIC`` for every task with a validation split, plus ``score``.

    ``warnings``, when given, receives one line per problem a task finds in its predictions
    (:meth:`Task.validation_warnings`), naming the task.
    """
    model.eval()
    metrics: dict[str, float] = {}
    scores = []
    for name, task in tasks.items():
        val = data[name].val
        if len(val) == 0:
            continue
        outputs = []
        for start in range(0, len(val), batch_size):
            x = to_float(torch.from_numpy(val.images[start:start + batch_size]).to(device))
            outputs.append(model(x, {name: slice(0, len(x))})[name].detach())
        target = tensor_targets(val, np.arange(len(val))).to(device)
        output = torch.cat(outputs)
        task_metrics = task.metrics(output, target)
        if warnings is not None:
            warnings.extend(f"{name} · validation: {problem}"
                            for problem in task.validation_warnings(output, target, data[name].train.class_names))
        metrics.update({f"{name}/{k}": v for k, v in task_metrics.items()})
        score = task.selection_score(task_metrics)
        if score is not None:
            scores.append(score)
    if select_by == "mean":
        metrics["score"] = float(np.mean(scores)) if scores else float("nan")
    else:
        if select_by not in metrics:
            raise ValueError(f"--select-by {select_by}: no such validation metric; "
                             f"available: mean, {', '.join(sorted(metrics))}")
        metrics["score"] = metrics[select_by]
    return metrics
