"""Any timm model with ``features_only=True`` as a backbone: ``--backbone timm:model=resnet18``.

Weights are never downloaded: ``pretrained`` is off, or set ``checkpoint=PATH``
to a local file that timm can read.
"""
from __future__ import annotations

import torch

from mtssl.api import Backbone, check_options, hookimpl


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


def build(name: str, in_channels: int = 1, **options) -> TimmBackbone:
    check_options(f"backbone '{name}'", options, {"model", "checkpoint"})
    return TimmBackbone(str(options.get("model", "resnet18")), in_channels, options.get("checkpoint"))


@hookimpl
def register_backbones(register):
    register("timm", build, description="any timm encoder (features_only); option model=NAME, checkpoint=PATH")
