"""The MultiMix encoder (paper Table 4): five double-conv blocks, 16-32-64-128-256."""
from __future__ import annotations

import torch
from torch import nn

from pydantic import Field

from mtssl.api import Backbone, Options, read_options
from mtssl_plugins.layers import double_conv


class UNetEncoder(Backbone):
    """Five double-conv blocks with max-pooling between them; pyramid at strides 1, 2, 4, 8, 16."""

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (16, 32, 64, 128, 256),
                 dropout: float = 0.25):
        super().__init__()
        self.in_channels = in_channels
        self.channels = tuple(widths)
        self.strides = tuple(2 ** i for i in range(len(widths)))
        self.blocks = nn.ModuleList()
        cin = in_channels
        for width in widths:
            self.blocks.append(double_conv(cin, width, dropout))
            cin = width
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, block in enumerate(self.blocks):
            if i:
                x = self.pool(x)
            x = block(x)
            features.append(x)
        return features


def _parse_widths(widths) -> tuple[int, ...]:
    if isinstance(widths, str):
        return tuple(int(w) for w in widths.replace("-", ",").split(",") if w)
    if isinstance(widths, int):
        return (widths,)
    return tuple(int(w) for w in widths)


class UNetOptions(Options):
    widths: object = (16, 32, 64, 128, 256)
    dropout: float = Field(0.25, ge=0.0, lt=1.0)


def build(name: str, in_channels: int = 1, **options) -> UNetEncoder:
    settings = read_options(f"backbone '{name}'", options, UNetOptions)
    try:
        widths = _parse_widths(settings.widths)
    except (TypeError, ValueError):
        widths = ()
    if not widths or any(w < 1 for w in widths):
        raise ValueError(f"backbone '{name}': option widths: expected positive channel counts such as "
                         f"16-32-64-128-256, got {settings.widths!r}")
    return UNetEncoder(in_channels, widths, settings.dropout)
