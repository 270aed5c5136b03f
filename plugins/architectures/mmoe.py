"""Multi-gate Mixture-of-Experts (Ma et al. 2018) over whole encoders.

``K`` experts are independently initialised encoders of the run's backbone spec (the first is the model's
backbone). Task ``t`` mixes their pyramids level by level with its own gate of the image,

    f_t^l(x) = sum_k g_t(x)_k E_k(x)^l        g_t(x) = softmax(W_t pool(x) + b_t)

where ``pool`` averages the image over a 4x4 grid of cells, so the gate fits any image size. The gates start
at zero, so every task begins from the experts' mean and learns its own mixture. Pooling and mixing are
matrix products and sums, whose input gradients (a saliency bridge's) export as plain operators.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mtssl.api import Architecture, Backbone, Field, Options, read_options

GATE_GRID = 4
"""The gate reads the image averaged to this many cells per side."""


def cell_means(images: torch.Tensor, cells: int) -> torch.Tensor:
    """``[n, C, cells, cells]`` means of ``images`` over a grid of cells (the cells of adaptive average pooling)."""
    def averaging(size: int) -> torch.Tensor:  # [cells, size]: row i averages cell i's pixels
        index = torch.arange(size, device=images.device)
        starts = [i * size // cells for i in range(cells)]
        ends = [-(-(i + 1) * size // cells) for i in range(cells)]
        rows = [((index >= s) & (index < e)).to(images.dtype) / (e - s) for s, e in zip(starts, ends)]
        return torch.stack(rows)

    return averaging(images.shape[-2]) @ images @ averaging(images.shape[-1]).T


class MMoEOptions(Options):
    experts: int = Field(2, ge=1, le=16, description="encoders the tasks mix (each a full copy of the backbone)")


class MMoE(Architecture):
    """Experts shared by all tasks, one softmax gate per task."""

    def __init__(self, name: str, **options):
        settings = read_options(f"architecture '{name}'", options, MMoEOptions)
        super().__init__(name, **options)
        self.count = settings.experts
        self.experts = nn.ModuleList()
        """Experts beyond the model's backbone (which is expert 0)."""
        self.gates = nn.ModuleDict()

    def setup(self, backbone: Backbone, tasks: Sequence[str], build_backbone) -> None:
        self.experts.extend(build_backbone() for _ in range(self.count - 1))
        for task in tasks:
            gate = nn.Linear(backbone.in_channels * GATE_GRID ** 2, self.count)
            nn.init.zeros_(gate.weight)
            nn.init.zeros_(gate.bias)
            self.gates[task] = gate

    def encode(self, backbone: Backbone, images: torch.Tensor) -> list[list[torch.Tensor]]:
        return [backbone(images), *(expert(images) for expert in self.experts)]

    def gate(self, task: str, images: torch.Tensor) -> torch.Tensor:
        """``[n, K]``: task ``task``'s weights of the experts for each image."""
        pooled = cell_means(images, GATE_GRID).flatten(1)
        return torch.softmax(self.gates[task](pooled), dim=1)

    def task_features(self, task: str, encoded: list[list[torch.Tensor]], images: torch.Tensor,
                      rows: slice) -> list[torch.Tensor]:
        weights = self.gate(task, images[rows])[:, :, None, None, None]
        levels = zip(*encoded)  # level by level, each a tuple of the experts' maps
        return [(weights * torch.stack([expert[rows] for expert in maps], 1)).sum(1) for maps in levels]

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.experts.parameters())
