"""Building blocks shared by the paper's encoder and decoder (Tables 4-5)."""
from __future__ import annotations

from torch import nn


def double_conv(in_channels: int, out_channels: int, dropout: float = 0.25, slope: float = 0.2) -> nn.Sequential:
    """Conv3x3-InstanceNorm-LeakyReLU twice, then dropout: one block of the paper's U-Net."""
    layers: list[nn.Module] = []
    for cin in (in_channels, out_channels):
        layers += [nn.Conv2d(cin, out_channels, 3, padding=1), nn.InstanceNorm2d(out_channels),
                   nn.LeakyReLU(slope, inplace=True)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)
