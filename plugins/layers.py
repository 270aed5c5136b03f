"""Building blocks shared by the paper's encoder and decoder (Tables 4-5)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MASK_LEVELS = 1 << 16
"""Dropout masks compare 16 random bits per element, so a drop probability is kept to 1/65536."""


def double_conv(in_channels: int, out_channels: int, dropout: float = 0.25, slope: float = 0.2) -> nn.Sequential:
    """Conv3x3-InstanceNorm-LeakyReLU twice, then dropout: one block of the paper's U-Net."""
    layers: list[nn.Module] = []
    for cin in (in_channels, out_channels):
        layers += [nn.Conv2d(cin, out_channels, 3, padding=1), InstanceNorm2d(out_channels),
                   nn.LeakyReLU(slope, inplace=True)]
    if dropout > 0:
        layers.append(Dropout(dropout))
    return nn.Sequential(*layers)


class InstanceNorm2d(nn.InstanceNorm2d):
    """Instance norm computed as a group norm with one group per channel: the same numbers.

    ``F.instance_norm`` returns a view of a reshaped batch norm, so the
    in-place LeakyReLU after it makes autograd copy the whole gradient back
    through the view; group norm's output is a tensor of its own, which on the
    CPU took a fifth off a 128 px block's forward and backward.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.track_running_stats or x.dim() != 4:
            return super().forward(x)
        weight, bias = (self.weight, self.bias) if self.affine else (None, None)
        return F.group_norm(x, x.shape[1], weight, bias, self.eps)


class Dropout(nn.Dropout):
    """Element dropout that takes about a third of ``F.dropout``'s time on the CPU.

    On the CPU, ``F.dropout`` draws one Bernoulli number per element from a
    serial generator and was the largest cost of a training step after the
    convolutions. Here each 64-bit draw of torch's generator (so seeding and
    resuming work as before) gives four 16-bit numbers; an element is kept
    where its number is above the drop threshold. The drop probability is
    therefore a multiple of 1/65536 (0.25 exactly) and the kept values are
    scaled by the inverse of the exact keep probability, so the expected
    output equals the input. Probabilities too close to 0 or 1 for that
    resolution, and other devices, keep torch's own dropout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        drop_levels = round(self.p * MASK_LEVELS)
        if not self.training or x.device.type != "cpu" or not 0 < drop_levels < MASK_LEVELS:
            return super().forward(x)
        keep = keep_mask(x.shape, drop_levels, x.device)
        return torch.where(keep, x * (MASK_LEVELS / (MASK_LEVELS - drop_levels)), 0.0)


def keep_mask(shape: torch.Size, drop_levels: int, device: torch.device) -> torch.Tensor:
    """True where an element survives: P(False) = ``drop_levels`` / 65536, independently per element."""
    count = math.prod(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_(-2**63, 2**63 - 1)
    lowest = -(MASK_LEVELS // 2)
    return (words.view(torch.int16)[:count] >= lowest + drop_levels).view(shape)
