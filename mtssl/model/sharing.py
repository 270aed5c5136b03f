"""Hard parameter sharing, the default architecture: every task reads the one backbone's pyramid.

It lives in the core because a model built without an architecture uses it; the catalog registers it
as ``shared`` like any other architecture.
"""
from __future__ import annotations

import torch

from mtssl.interfaces import Architecture, Backbone
from mtssl.options import Options, read_options


class HardSharing(Architecture):
    """One backbone pass over the batch; a task's pyramid is its rows of it (views, not copies)."""

    def __init__(self, name: str = "shared", **options):
        read_options(f"architecture '{name}'", options, Options)  # takes none
        super().__init__(name, **options)

    def encode(self, backbone: Backbone, images: torch.Tensor) -> list[torch.Tensor]:
        return backbone(images)

    def task_features(self, task: str, encoded: list[torch.Tensor], images: torch.Tensor,
                      rows: slice) -> list[torch.Tensor]:
        return [level[rows] for level in encoded]
