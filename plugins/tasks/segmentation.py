"""Binary segmentation: a U-Net decoder over the backbone pyramid, trained with alpha * Dice."""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from mtssl.api import HeadInputs, Task, check_options, hookimpl, resize_like
from mtssl_plugins.functional import soft_dice_loss
from mtssl_plugins.layers import double_conv


class UNetDecoder(nn.Module):
    """Paper Table 5, generalised: one block per pyramid level, deepest first.

    Block i upsamples the previous output, concatenates the skip at level i and
    any bridge extras declared for that level's stride, and narrows to the
    skip's width. A final 1x1 convolution gives one logit per pixel, upsampled
    to the input size when the shallowest level is strided.
    """

    def __init__(self, inputs: HeadInputs, out_channels: int = 1, dropout: float = 0.25):
        super().__init__()
        unknown = set(inputs.extras) - set(inputs.strides[:-1])
        if unknown:
            raise ValueError(f"decoder has no block at stride(s) {sorted(unknown)}; "
                             f"decoder strides: {list(inputs.strides[:-1])}")
        self.strides = inputs.strides
        self.blocks = nn.ModuleList()
        prev = inputs.channels[-1]
        for level in range(len(inputs.channels) - 2, -1, -1):
            skip = inputs.channels[level]
            extra = inputs.extras.get(inputs.strides[level], 0)
            self.blocks.append(double_conv(prev + skip + extra, skip, dropout))
            prev = skip
        self.final = nn.Conv2d(prev, out_channels, 1)

    def forward(self, features: list[torch.Tensor], extras: Mapping[int, torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for block, level in zip(self.blocks, range(len(features) - 2, -1, -1)):
            skip = features[level]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            parts = [x, skip]
            stride = self.strides[level]
            if stride in extras:
                parts.append(resize_like(extras[stride], skip))
            x = block(torch.cat(parts, dim=1))
        x = self.final(x)
        if self.strides[0] > 1:
            x = F.interpolate(x, scale_factor=self.strides[0], mode="bilinear", align_corners=False)
        return x


class SegmentationTask(Task):
    """Binary masks (e.g. lungs) from a U-Net decoder; loss alpha * soft Dice."""

    target_kind = "mask"
    needs_decoder = True
    default_labels = 10  # the paper's smallest budget

    def __init__(self, name: str, **options):
        check_options(f"task '{name}'", options, {"alpha", "dropout"})
        super().__init__(name, **options)
        self.alpha = float(options.get("alpha", 5.0))
        self.dropout = float(options.get("dropout", 0.25))

    def build_head(self, inputs: HeadInputs) -> nn.Module:
        return UNetDecoder(inputs, 1, self.dropout)

    def supervised_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.alpha * soft_dice_loss(output, target)

    def probabilities(self, output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(output.float())

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        pred = (output > 0).float().flatten(1)
        truth = target.float().flatten(1)
        inter = (pred * truth).sum(1)
        denom = pred.sum(1) + truth.sum(1)
        dice = torch.where(denom > 0, 2 * inter / denom.clamp_min(1), torch.ones_like(denom))
        return {"dice": dice.mean().item()}

    def selection_score(self, metrics: Mapping[str, float]) -> float | None:
        return metrics.get("dice")


@hookimpl
def register_tasks(register):
    register("seg", SegmentationTask, aliases=("segmentation",),
             description="binary segmentation (U-Net decoder, alpha * Dice); options alpha, dropout")
