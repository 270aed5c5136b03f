"""The MultiMix saliency bridge (paper eq. 3-4).

For every image the target (segmentation) task decodes, the source
(classification) head's largest logit is differentiated with respect to the
input image. ``[image, |gradient|]`` is handed to the target head, which
resizes it to the declared stride (paper: the first decoder block, stride 8).
The map is detached: it guides the decoder as an input, it is not trained
through.
"""
from __future__ import annotations

from typing import Optional

import torch
from pydantic import Field

from mtssl.api import Bridge, BridgeInputs, HeadInputs, Options, Task, read_options
from mtssl_plugins.bridges.routes import CLASSIFICATION, DECODER, only_route
from mtssl_plugins.functional import input_saliency


class SaliencyOptions(Options):
    stride: int = Field(8, ge=1, description="stride at which the target head receives the map")
    normalize: bool = Field(True, description="scale each image's saliency to [0, 1] by its peak")
    in_channels: Optional[int] = Field(None, ge=1, description="image channels (default: the run's)")


class SaliencyBridge(Bridge):
    """Input-gradient saliency of the source task's top class, injected with the image into the target head."""

    needs_input_grad = True

    def __init__(self, name: str, source: str, target: str, **options):
        settings = read_options(f"bridge '{name}'", options, SaliencyOptions)
        super().__init__(name, source, target, **options)
        self._stride, self.normalize, self.in_channels = settings.stride, settings.normalize, settings.in_channels

    def setup(self, source: Task, target: Task, head_inputs: HeadInputs) -> None:
        """Refuse a source without one class per image: there is no top class to differentiate."""
        if not source.target.categorical:
            raise ValueError(f"bridge '{self.name}' differentiates the top class of its source, but task "
                             f"'{source.name}' has {source.target.describe()}; route it from a classification task")
        super().setup(source, target, head_inputs)

    @property
    def extra_channels(self) -> int:
        """The image's channels plus one saliency channel."""
        channels = self.image_channels if self.in_channels is None else int(self.in_channels)
        return channels + 1

    @property
    def stride(self) -> int:
        return self._stride

    def compute(self, inputs: BridgeInputs) -> torch.Tensor:
        score = inputs.source_output.max(dim=1).values
        saliency = input_saliency(score, inputs.images, self.normalize)[inputs.rows]
        return torch.cat([inputs.images[inputs.rows].detach(), saliency], dim=1)

    def maps(self, extra: torch.Tensor) -> dict[str, torch.Tensor]:
        """The saliency channel (the last one; the others are the image)."""
        return {"saliency": extra[:, -1:]}

    @staticmethod
    def infer_route(tasks: dict[str, Task]) -> tuple[str, str]:
        """Default route: the one task with one class per image into the one task with a spatial output."""
        return only_route("saliency", tasks, CLASSIFICATION, DECODER)
