"""The MultiMix encoder (paper Table 4): five double-conv blocks, 16-32-64-128-256."""
from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from pydantic import BeforeValidator, Field

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


def parse_widths(widths: object) -> tuple[int, ...]:
    """``16-32-64`` (or ``16,32,64``, one number, a list) -> block widths, each a positive whole number."""
    if isinstance(widths, str):
        parts = [w for w in widths.replace("-", ",").split(",") if w.strip()]
    else:
        parts = list(widths) if isinstance(widths, (list, tuple)) else [widths]
    texts = [str(w).strip() for w in parts]
    if not texts or not all(t.isdigit() and int(t) >= 1 for t in texts):
        raise ValueError(f"expected positive channel counts such as 16-32-64-128-256, got {widths!r}")
    return tuple(int(t) for t in texts)


class UNetOptions(Options):
    widths: Annotated[tuple[int, ...], BeforeValidator(parse_widths)] = Field(
        (16, 32, 64, 128, 256), description="channels of each encoder block, shallowest first (16-32-64-128-256)")
    dropout: float = Field(0.25, ge=0.0, lt=1.0, description="dropout probability at the end of each encoder block")


def build(name: str, in_channels: int = 1, **options) -> UNetEncoder:
    settings = read_options(f"backbone '{name}'", options, UNetOptions)
    return UNetEncoder(in_channels, settings.widths, settings.dropout)
