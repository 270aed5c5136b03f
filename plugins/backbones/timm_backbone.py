"""Any timm model with ``features_only=True`` as a backbone: ``--backbone timm:model=resnet18``.

Weights are never downloaded: ``pretrained`` is off, or set ``checkpoint=PATH``
to a local file that timm can read.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Optional

import torch
from pydantic import Field

from mtssl.api import Backbone, Options, read_options


class TimmBackbone(Backbone):
    """Wraps ``timm.create_model(..., features_only=True)`` and reports its channels and strides."""

    def __init__(self, model: str, in_channels: int = 1, checkpoint: str | None = None):
        super().__init__()
        import timm

        kwargs = {"checkpoint_path": checkpoint} if checkpoint else {}
        self.net = timm.create_model(model, pretrained=False, features_only=True, in_chans=in_channels, **kwargs)
        self.in_channels = in_channels
        self.channels = tuple(self.net.feature_info.channels())
        self.strides = tuple(self.net.feature_info.reduction())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.net(x))


class TimmOptions(Options):
    model: str = Field("resnet18", min_length=1)
    checkpoint: Optional[str] = None


def build(name: str, in_channels: int = 1, **options) -> TimmBackbone:
    settings = read_options(f"backbone '{name}'", options, TimmOptions)
    import timm

    if not timm.is_model(settings.model):
        close = difflib.get_close_matches(settings.model, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else " (see timm.list_models())"
        raise ValueError(f"backbone '{name}': unknown timm model '{settings.model}'{hint}")
    if settings.checkpoint and not Path(settings.checkpoint).is_file():
        raise ValueError(f"backbone '{name}': checkpoint {settings.checkpoint}: file not found")
    try:
        return TimmBackbone(settings.model, in_channels, settings.checkpoint)
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:  # e.g. a model without features_only
        raise ValueError(f"backbone '{name}': timm cannot build '{settings.model}' as a feature extractor "
                         f"({type(exc).__name__}: {exc})") from None
