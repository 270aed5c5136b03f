"""Multi-Task Attention Network (Liu et al. 2019): per task, soft attention over the shared features.

At level ``l`` with shared features ``f^l``, task ``t`` attends with

    a_t^l = sigmoid(conv1x1(relu(conv1x1([f^l, h^l(g_t^(l-1))]))))      g_t^l = a_t^l * f^l

where ``h^l`` (shared by the tasks, as MTAN's shared 3x3 block and pooling) brings the previous level's
attended features to level ``l``'s channels and size; the first level attends to ``f^0`` alone. The task's
pyramid is ``[g_t^0, g_t^1, ...]``: the backbone's channels and strides, so any head fits.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mtssl.api import Architecture, Backbone, Options, read_options


def attention_block(in_channels: int, channels: int) -> nn.Sequential:
    """The two 1x1 convolutions and the sigmoid that turn features into one task's mask."""
    return nn.Sequential(nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, channels, 1), nn.Sigmoid())


class Carry(nn.Module):
    """``h^l``: a 3x3 convolution to level ``l``'s channels, then max-pooling to its size (levels of a pyramid
    differ by whole factors; plain max-pooling keeps the saliency's input gradient exportable)."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, previous: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        out = self.conv(previous)
        factor = (out.shape[-2] // like.shape[-2], out.shape[-1] // like.shape[-1])
        return out if factor == (1, 1) else F.max_pool2d(out, factor)


class MTAN(Architecture):
    """Task-specific attention modules over the shared encoder's pyramid."""

    def __init__(self, name: str, **options):
        read_options(f"architecture '{name}'", options, Options)  # takes none
        super().__init__(name, **options)
        self.attention = nn.ModuleDict()
        self.carry = nn.ModuleList()

    def setup(self, backbone: Backbone, tasks: Sequence[str], build_backbone) -> None:
        channels = list(backbone.channels)
        self.carry.extend(Carry(cin, cout) for cin, cout in zip(channels, channels[1:]))
        for task in tasks:
            self.attention[task] = nn.ModuleList(
                attention_block(c if level == 0 else 2 * c, c) for level, c in enumerate(channels))

    def encode(self, backbone: Backbone, images: torch.Tensor) -> list[torch.Tensor]:
        return backbone(images)

    def attend(self, task: str, shared: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Task ``task``'s masks ``[a_t^0, a_t^1, ...]`` over ``shared`` and its attended pyramid ``[g_t^0, ...]``."""
        masks: list[torch.Tensor] = []
        attended: list[torch.Tensor] = []
        for level, (features, block) in enumerate(zip(shared, self.attention[task])):
            given = features if level == 0 else torch.cat([features, self.carry[level - 1](attended[-1], features)], 1)
            masks.append(block(given))
            attended.append(masks[-1] * features)
        return masks, attended

    def task_features(self, task: str, encoded: list[torch.Tensor], images: torch.Tensor,
                      rows: slice) -> list[torch.Tensor]:
        return self.attend(task, [level[rows] for level in encoded])[1]

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.carry.parameters())
