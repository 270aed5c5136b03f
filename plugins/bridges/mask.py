"""The source task's probability maps handed to the target head: segmentation into classification.

The source is a task with a per-pixel output (a segmentation); its
probabilities, as its own :meth:`Task.probabilities` defines them (sigmoid
per structure, or softmax without the background), are passed detached to
the target head. The built-in ``cls`` head pools its features under each map
(the classifier also sees what lies inside the lungs); a decoder concatenates
them like any other extra. The default stride is the backbone's deepest, where
the ``cls`` head pools; give ``stride=`` for a decoder target.
"""
from __future__ import annotations

from typing import Optional

import torch
from pydantic import Field

from mtssl.api import Bridge, BridgeInputs, HeadInputs, Options, Task, read_options
from mtssl_plugins.bridges.routes import CLASSIFICATION, DECODER, only_route


class MaskOptions(Options):
    stride: Optional[int] = Field(None, ge=1, description="stride of the injection (default: the deepest)")


class MaskBridge(Bridge):
    """The source's per-pixel probabilities, one extra channel per structure, into the target head."""

    def __init__(self, name: str, source: str, target: str, **options):
        settings = read_options(f"bridge '{name}'", options, MaskOptions)
        super().__init__(name, source, target, **options)
        self.requested_stride = settings.stride
        self.injection: tuple[int, int] | None = None
        """``(stride, channels)`` once :meth:`setup` has seen the source task and the backbone."""

    def setup(self, source: Task, target: Task, head_inputs: HeadInputs) -> None:
        """Take one channel per structure of the source; refuse a source without per-pixel maps."""
        if not source.target.spatial:
            raise ValueError(f"bridge '{self.name}' hands on per-pixel probability maps, but task '{source.name}' "
                             f"has {source.target.describe()}; route it from a segmentation task")
        super().setup(source, target, head_inputs)
        self.injection = (self.requested_stride or max(head_inputs.strides), source.target.channels)

    def _injection(self) -> tuple[int, int]:
        if self.injection is None:
            raise RuntimeError(f"bridge '{self.name}': its stride and channels are known only after setup()")
        return self.injection

    @property
    def extra_channels(self) -> int:
        return self._injection()[1]

    @property
    def stride(self) -> int:
        return self._injection()[0]

    def compute(self, inputs: BridgeInputs) -> torch.Tensor:
        return inputs.source_probabilities.detach()

    @staticmethod
    def infer_route(tasks: dict[str, Task]) -> tuple[str, str]:
        """Default route: the one task with a spatial output into the one task with one class per image."""
        return only_route("mask", tasks, DECODER, CLASSIFICATION)
