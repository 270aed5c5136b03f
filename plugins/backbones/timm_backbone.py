"""Any timm model with ``features_only=True`` as a backbone: ``--backbone timm:model=resnet18``.

``pretrained=true`` loads the model's pretrained weights through timm (from
the Hugging Face Hub or timm's cache, adapted to the image channels);
``pretrained_file=PATH`` loads the same weights from a local file instead, for
machines without network. ``checkpoint=PATH`` loads a file of this very
model (``features_only`` keys) with ``pretrained`` off.
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

    def __init__(self, model: str, in_channels: int = 1, checkpoint: str | None = None, pretrained: bool = False,
                 pretrained_file: str | None = None):
        super().__init__()
        import timm

        kwargs = {"checkpoint_path": checkpoint} if checkpoint else {}
        if pretrained_file:
            kwargs["pretrained_cfg_overlay"] = {"file": pretrained_file}
        self.net = timm.create_model(model, pretrained=pretrained or bool(pretrained_file), features_only=True,
                                     in_chans=in_channels, **kwargs)
        self.in_channels = in_channels
        self.channels = tuple(self.net.feature_info.channels())
        self.strides = tuple(self.net.feature_info.reduction())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.net(x))


class TimmOptions(Options):
    model: str = Field("resnet18", min_length=1, description="timm model name (see timm.list_models())")
    checkpoint: Optional[str] = Field(None, description="file of this model's own weights (features_only keys) to load")
    pretrained: bool = Field(False, description="load timm's pretrained weights (from the Hugging Face Hub or cache)")
    pretrained_file: Optional[str] = Field(
        None, description="local file of the pretrained weights, for use without network")


def build(name: str, in_channels: int = 1, **options) -> TimmBackbone:
    settings = read_options(f"backbone '{name}'", options, TimmOptions)
    import timm

    if not timm.is_model(settings.model):
        close = difflib.get_close_matches(settings.model, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else " (see timm.list_models())"
        raise ValueError(f"backbone '{name}': unknown timm model '{settings.model}'{hint}")
    for option in ("checkpoint", "pretrained_file"):
        if (file := getattr(settings, option)) and not Path(file).is_file():
            raise ValueError(f"backbone '{name}': {option} {file}: file not found")
    if settings.checkpoint and (settings.pretrained or settings.pretrained_file):
        raise ValueError(f"backbone '{name}': give checkpoint or pretrained weights, not both")
    try:
        return TimmBackbone(settings.model, in_channels, settings.checkpoint, settings.pretrained,
                            settings.pretrained_file)
    except Exception as exc:  # noqa: BLE001 - sorted below; what a download raises depends on the hub
        detail = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        if settings.pretrained_file:
            raise ValueError(f"backbone '{name}': cannot load {settings.pretrained_file} as the pretrained "
                             f"weights of '{settings.model}' ({detail})") from None
        if settings.pretrained:
            raise ValueError(f"backbone '{name}': cannot load the pretrained weights of '{settings.model}' "
                             f"through timm ({detail}); without network, download them once elsewhere and "
                             "give pretrained_file=PATH") from None
        if isinstance(exc, (RuntimeError, ValueError, TypeError, KeyError)):  # e.g. a model without features_only
            raise ValueError(f"backbone '{name}': timm cannot build '{settings.model}' as a feature extractor "
                             f"({detail})") from None
        raise
