"""Segmentation of one or more structures: a U-Net decoder over the backbone pyramid, alpha * Dice.

One channel per structure. ``activation=sigmoid`` (the default) scores each
structure on its own, so overlapping structures (heart and lungs) can both be
on at a pixel; ``activation=softmax`` adds a background channel and makes the
structures exclusive. Metrics are per structure, plus their mean.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pydantic import Field

from mtssl.api import (EvaluatedSet, HeadInputs, Options, PredictionWriter, ReportFigure, Task, TaskEvaluation, read_options, resize_like)
from mtssl_plugins.metrics.aggregate import summarize
from mtssl_plugins.metrics.segmentation import image_diagonal, mask_metrics
from mtssl_plugins.tasks import plots
from mtssl_plugins.functional import soft_dice
from mtssl_plugins.layers import double_conv
from mtssl_plugins.targets import binary_masks

ACTIVATIONS = ("sigmoid", "softmax")


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


class SegmentationOptions(Options):
    alpha: float = Field(5.0, ge=0.0, description="weight of the soft Dice loss (the paper's alpha)")
    dropout: float = Field(0.25, ge=0.0, lt=1.0, description="dropout probability at the end of each decoder block")
    channels: int = Field(1, ge=1, description="structures segmented")
    activation: Literal[ACTIVATIONS] = Field(
        "sigmoid", description="sigmoid: each structure on its own; softmax: exclusive, plus a background")


class SegmentationTask(Task):
    """Structure masks (lungs; or lungs, heart, clavicles) from a U-Net decoder; loss alpha * soft Dice."""

    needs_decoder = True
    default_labels = 10  # the paper's smallest budget
    default_source = "synthetic"  # the built-in phantom: trains with no data given

    def __init__(self, name: str, **options):
        settings = read_options(f"task '{name}'", options, SegmentationOptions)
        super().__init__(name, **options)
        self.alpha, self.dropout = settings.alpha, settings.dropout
        self.channels, self.activation = settings.channels, settings.activation
        self.target = binary_masks(self.channels)

    def build_head(self, inputs: HeadInputs) -> nn.Module:
        extra = 1 if self.activation == "softmax" else 0  # the background channel
        return UNetDecoder(inputs, self.channels + extra, self.dropout)

    def supervised_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.alpha * soft_dice(self.probabilities(output), target)

    def probabilities(self, output: torch.Tensor) -> torch.Tensor:
        """Foreground probability per structure, ``[B, channels, H, W]`` (softmax drops its background)."""
        if self.activation == "softmax":
            return torch.softmax(output.float(), dim=1)[:, 1:]
        return torch.sigmoid(output.float())

    def output_info(self, class_names: Sequence[str] = ()) -> dict:
        how = "sigmoid of the logits" if self.activation == "sigmoid" else "softmax, background channel dropped"
        return {"shape": ["batch", self.channels, "size", "size"],
                "meaning": f"per-pixel foreground probability of each structure ({how})",
                "structures": self.structure_names(class_names),
                "decision": "foreground where probability >= threshold", "threshold": 0.5}

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        on = output > 0 if self.activation == "sigmoid" else self.probabilities(output) >= 0.5
        pred = on.float().flatten(2)
        truth = target.float().flatten(2)
        inter = (pred * truth).sum(-1)
        denom = pred.sum(-1) + truth.sum(-1)
        dice = torch.where(denom > 0, 2 * inter / denom.clamp_min(1), torch.ones_like(denom))
        values = {"dice": dice.mean().item()}
        if self.channels > 1:
            values.update({f"dice/{c}": v for c, v in enumerate(dice.mean(0).tolist())})
        return values

    def selection_score(self, metrics: Mapping[str, float]) -> float | None:
        return metrics.get("dice")

    def evaluate(self, probabilities: np.ndarray, targets: np.ndarray,
                 class_names: Sequence[str] = ()) -> TaskEvaluation:
        """Per-image Dice, Jaccard, SSIM, average Hausdorff (pixels), precision, recall; mean ± std.

        The prediction is the probability map thresholded at 0.5. An image
        where exactly one of prediction and truth is empty scores Dice 0 and
        a Hausdorff distance equal to the image diagonal; such images are
        counted in ``extra["one_empty"]`` (see :mod:`mtssl_plugins.metrics.segmentation`).
        With several structures every metric is given per structure
        (``heart/dice``) and as the mean over structures (``dice``).
        """
        predictions = np.asarray(probabilities) >= 0.5
        truths = np.asarray(targets)
        names = self.structure_names(class_names)
        if len(names) == 1:
            records = [mask_metrics(p[0], t[0]) for p, t in zip(predictions, truths)]
            metric_names = list(SEGMENTATION_METRICS)
        else:
            records = [structure_metrics(p, t, names) for p, t in zip(predictions, truths)]
            metric_names = [*SEGMENTATION_METRICS, *(f"{n}/{m}" for n in names for m in SEGMENTATION_METRICS)]
        aggregate = summarize(records, metric_names)
        one_empty = sum(r["one_empty"] for r in records)
        height, width = predictions.shape[-2:]
        extra = {"hd_unit": f"pixels at the evaluation size {height}x{width}",
                 "hd_when_one_empty": image_diagonal((height, width)), "one_empty": one_empty}
        notes = [f"{one_empty} image(s) with exactly one of prediction and truth empty: Dice 0, "
                 f"Hausdorff = image diagonal ({extra['hd_when_one_empty']:.1f} px)"] if one_empty else []
        return TaskEvaluation(records, aggregate, extra, notes)

    def structure_names(self, class_names: Sequence[str] = ()) -> list[str]:
        """The source's structure names, or ``c0, c1, ...``; one channel keeps its plain metric names."""
        names = list(class_names)
        if len(names) == self.channels:
            return names
        return ["mask"] if self.channels == 1 else [f"c{c}" for c in range(self.channels)]

    def prediction_writer(self, out_dir: Path, class_names: Sequence[str] = ()) -> PredictionWriter:
        names = self.structure_names(class_names)
        return MaskPngs(Path(out_dir) / self.name, names if len(names) > 1 else ())

    def report_figures(self, sets: Sequence[EvaluatedSet]) -> list[ReportFigure]:
        figures = []
        for data in sets:
            names = self.structure_names(data.class_names)
            views = [(self.name, data)] if len(names) == 1 else \
                [(f"{self.name} {name}", structure_view(data, c, name)) for c, name in enumerate(names)]
            for title, view in views:
                figures.append(bland_altman_figure(title, view))
                figures.append(boundaries_figure(title, view))
                figures.append(best_worst_figure(title, view))
        return figures


def structure_metrics(pred: np.ndarray, truth: np.ndarray, names: Sequence[str]) -> dict:
    """Per-structure metrics (``NAME/metric``) of one image, their means, and flags over all structures."""
    record: dict = {}
    per = [mask_metrics(p, t) for p, t in zip(pred, truth)]
    for name, values in zip(names, per):
        record.update({f"{name}/{k}": v for k, v in values.items()})
    for metric in SEGMENTATION_METRICS:
        record[metric] = float(np.mean([values[metric] for values in per]))
    record["pred_pixels"] = sum(values["pred_pixels"] for values in per)
    record["true_pixels"] = sum(values["true_pixels"] for values in per)
    record["one_empty"] = any(values["one_empty"] for values in per)
    return record


def structure_view(data: EvaluatedSet, channel: int, name: str) -> EvaluatedSet:
    """One structure of a multi-structure set, shaped like a one-structure set for the figures."""
    prefix = f"{name}/"
    records = [{k[len(prefix):]: v for k, v in r.items() if k.startswith(prefix)} for r in data.evaluation.per_image]
    evaluation = TaskEvaluation(records, {}, {}, [])
    return EvaluatedSet(f"{data.label}", data.images, np.asarray(data.probabilities)[:, channel:channel + 1],
                        np.asarray(data.targets)[:, channel:channel + 1], data.keys, (name,), evaluation, data.maps,
                        data.map_labels)


SEGMENTATION_METRICS = ("dice", "jaccard", "ssim", "hd_avg", "precision", "recall")


class MaskPngs(PredictionWriter):
    """One 8-bit PNG (0 background, 255 foreground) per image and structure, at the image's original size.

    The probability map is resized bilinearly to the original size before
    thresholding at 0.5, so the mask edge follows the smooth map, not the
    evaluation-size pixel grid. One structure writes ``FOLDER/NAME.png``;
    several write ``FOLDER/STRUCTURE/NAME.png``.
    """

    def __init__(self, folder: Path, structures: Sequence[str] = ()):
        self.folder = folder
        self.structures = list(structures)
        for sub in self.structures or [""]:
            (folder / sub).mkdir(parents=True, exist_ok=True)
        self.written: list[Path] = []

    def write(self, name: str, probability: np.ndarray, original_size: tuple[int, int]) -> None:
        height, width = original_size
        planes = np.asarray(probability, np.float32).reshape(-1, *probability.shape[-2:])
        for channel, sub in enumerate(self.structures or [""]):
            prob = Image.fromarray(planes[channel], mode="F")
            prob = np.asarray(prob.resize((width, height), Image.Resampling.BILINEAR))
            path = self.folder / sub / f"{name}.png"
            Image.fromarray(np.where(prob >= 0.5, 255, 0).astype(np.uint8)).save(path)
            self.written.append(path)

    def close(self) -> list[Path]:
        return list(self.written)


def _predicted(data: EvaluatedSet) -> np.ndarray:
    return np.asarray(data.probabilities)[:, 0] >= 0.5


def _truth(data: EvaluatedSet) -> np.ndarray:
    return np.asarray(data.targets)[:, 0] > 0


def bland_altman_figure(task: str, data: EvaluatedSet) -> ReportFigure:
    """Agreement of predicted and true foreground pixel counts (MultiMix Fig. 5)."""
    pred = np.array([r["pred_pixels"] for r in data.evaluation.per_image], float)
    true = np.array([r["true_pixels"] for r in data.evaluation.per_image], float)
    mean, diff = (pred + true) / 2, pred - true
    bias, spread = float(diff.mean()), float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    fig, axes = plots.figure(panel=4)
    ax = axes[0, 0]
    ax.scatter(mean, diff, s=14, alpha=0.7, color="tab:blue")
    ax.axhline(bias, color="tab:red", label=f"bias {bias:+.0f}")
    for sign in (-1, 1):
        ax.axhline(bias + sign * 1.96 * spread, color="tab:red", ls="--", lw=1)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xlabel("mean of predicted and true pixels")
    ax.set_ylabel("predicted - true pixels")
    ax.legend(loc="best", fontsize=8)
    size = "x".join(str(s) for s in data.images.shape[-2:])
    return ReportFigure(f"{task} Bland-Altman of foreground pixels · {data.label}", fig,
                        f"Pixel counts at {size}; dashed lines: bias ± 1.96 SD ({spread:.0f} px).")


def _overlay(ax, image: np.ndarray, truth: np.ndarray, pred: np.ndarray, title: str) -> None:
    """Ground-truth boundary in green, predicted boundary in red (MultiMix Fig. 4)."""
    plots.show_image(ax, image, title)
    for mask, colour in ((truth, "lime"), (pred, "red")):
        if mask.any() and not mask.all():
            ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=1)


def boundaries_figure(task: str, data: EvaluatedSet) -> ReportFigure:
    pred, truth = _predicted(data), _truth(data)
    count = min(plots.MAX_PANELS, len(pred))
    fig, axes = plots.figure(count, 1, panel=2.4)
    for j in range(count):
        dice = data.evaluation.per_image[j]["dice"]
        _overlay(axes[0, j], data.images[j], truth[j], pred[j], f"Dice {dice:.3f}")
    return ReportFigure(f"{task} predicted vs true boundaries · {data.label}", fig,
                        "Green: ground truth; red: prediction (first images of the set).")


def best_worst_figure(task: str, data: EvaluatedSet) -> ReportFigure:
    """The best and the worst images by Dice, titled with their files, with any bridge maps next to them."""
    pred, truth = _predicted(data), _truth(data)
    dice = np.array([r["dice"] for r in data.evaluation.per_image])
    order = np.argsort(-dice, kind="stable")
    count = min(3, max(1, len(order) // 2))  # never show an image as both best and worst
    picks = [("best", i) for i in order[:count]] + [("worst", i) for i in order[count:][::-1][:count]]
    map_names = list(data.maps)
    fig, axes = plots.figure(1 + len(map_names), len(picks), panel=2.2)
    for row, (kind, i) in enumerate(picks):
        _overlay(axes[row, 0], data.images[i], truth[i], pred[i],
                 f"{kind}: Dice {dice[i]:.3f}\n{plots.short_name(data.keys[i])}")
        for col, name in enumerate(map_names, start=1):
            plots.show_map(axes[row, col], data.images[i], data.maps[name][i], data.map_label(name))
    named = "; ".join(f"{kind} {data.keys[i]} (Dice {dice[i]:.3f})" for kind, i in picks)
    labels = ", ".join(data.map_label(name) for name in map_names)
    return ReportFigure(f"{task} best and worst cases by Dice · {data.label}", fig,
                        "Green: ground truth; red: prediction" + (f"; right: {labels}" if map_names else "")
                        + f". Cases: {named}.")
