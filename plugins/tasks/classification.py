"""Image classification: max-pool, global average pool, one linear layer; cross-entropy.

Bridge extras (e.g. a segmentation's probabilities) add pooling under each extra map before the linear layer.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pydantic import Field

from mtssl.api import (EvaluatedSet, HeadInputs, Options, PredictionWriter, ReportFigure, Task, TaskEvaluation, read_options,
                       resize_like)
from mtssl_plugins.metrics.calibration import reliability_bins
from mtssl_plugins.metrics.classification import binary_roc, classification_scores
from mtssl_plugins.metrics.imbalance import balanced_class_weights, class_counts, collapse_note
from mtssl_plugins.targets import CLASS_LABEL
from mtssl_plugins.tasks import plots


class ClassificationHead(nn.Module):
    """Paper Table 4 tail: MaxPool(2) -> AvgPool -> FC on the deepest feature map.

    Bridge extras are pooling weights: each channel of the extras at stride
    ``s`` (e.g. a segmentation's lung probability) is brought to the features
    at ``s`` with ``resize_like``, clamped to be non-negative, and pools those
    features as a weighted mean ``sum(w * f) / sum(w)``, so the classifier
    also sees what lies inside the structure. These pooled vectors follow the
    global one into the FC. Without extras the head is exactly the paper's.
    """

    def __init__(self, channels: int, num_classes: int, pooled: Sequence[tuple[int, int, int]] = ()):
        """``pooled`` lists ``(stride, feature level, pooled width)`` for each stride bridges inject at; the
        width is the level's feature channels times the extra channels there."""
        super().__init__()
        self.pooled = tuple(pooled)
        self.fc = nn.Linear(channels + sum(width for _, _, width in self.pooled), num_classes)

    def forward(self, features: list[torch.Tensor], extras: Mapping[int, torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        if min(x.shape[-2:]) >= 2:
            x = F.max_pool2d(x, 2)
        x = x.mean(dim=(-2, -1))
        if self.pooled:
            x = torch.cat([x, *(weighted_pool(features[level], resize_like(extras[stride], features[level]))
                                for stride, level, _ in self.pooled)], dim=1)
        return self.fc(x)


POOL_EPS = 1e-6
"""Keeps a weight map that is (nearly) zero everywhere from dividing by zero."""


def weighted_pool(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` features pooled under each of ``[B, K, H, W]`` weight maps: ``[B, K * C]``.

    A map that is zero everywhere pools to zeros.
    """
    weights = weights.clamp_min(0)
    total = torch.einsum("bkhw,bchw->bkc", weights, features)
    return (total / (weights.sum(dim=(-2, -1)).unsqueeze(-1) + POOL_EPS)).flatten(1)


class ClassificationOptions(Options):
    classes: int = Field(2, ge=2, description="number of classes the head outputs")
    weight: float = Field(1.0, ge=0.0, description="weight of the cross-entropy loss")
    balance: Literal["none", "loss", "sampler"] = Field(
        "none", description="loss: weight classes by inverse labeled frequency; sampler: draw them equally")


class ClassificationTask(Task):
    """Image-level classes (e.g. normal vs pneumonia), trained with cross-entropy."""

    target = CLASS_LABEL
    default_labels = 100  # the paper's smallest budget
    default_source = "synthetic"  # the built-in phantom: trains with no data given

    def __init__(self, name: str, **options):
        settings = read_options(f"task '{name}'", options, ClassificationOptions)
        super().__init__(name, **options)
        self.num_classes, self.weight = settings.classes, settings.weight
        self.balance = settings.balance
        self.class_weights: torch.Tensor | None = None  # per class, with balance=loss (observe_labels)

    def build_head(self, inputs: HeadInputs) -> nn.Module:
        """The paper's head; bridge extras become pooling weights over the features at their stride."""
        levels = {stride: inputs.strides.index(stride) for stride in sorted(inputs.extras)}
        pooled = [(stride, level, inputs.channels[level] * inputs.extras[stride]) for stride, level in levels.items()]
        return ClassificationHead(inputs.channels[-1], self.num_classes, pooled)

    def observe_labels(self, targets: np.ndarray) -> None:
        if self.balance == "loss":
            self.class_weights = torch.from_numpy(balanced_class_weights(targets, self.num_classes)).float()

    def draw_weights(self, targets: np.ndarray) -> np.ndarray | None:
        """With balance=sampler, each image's chance is 1 / its class's count: every class equally likely."""
        if self.balance != "sampler":
            return None
        counts = class_counts(targets, self.num_classes)
        return 1.0 / counts[np.asarray(targets, int)]

    def supervised_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.class_weights is not None and self.class_weights.device != output.device:
            self.class_weights = self.class_weights.to(output.device)  # once, not a copy every step
        weight = self.class_weights
        return self.weight * F.cross_entropy(output.float(), target.long(), weight=weight)

    def probabilities(self, output: torch.Tensor) -> torch.Tensor:
        return torch.softmax(output.float(), dim=1)

    def output_info(self, class_names: Sequence[str] = ()) -> dict:
        return {"shape": ["batch", self.num_classes], "meaning": "class probabilities (softmax of the logits)",
                "decision": "argmax over axis 1", "classes": self.class_names_or_default(class_names)}

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        return {"acc": (output.argmax(1) == target).float().mean().item()}

    def selection_score(self, metrics: Mapping[str, float]) -> float | None:
        return metrics.get("acc")

    def validation_warnings(self, output: torch.Tensor, target: torch.Tensor,
                            class_names: Sequence[str] = ()) -> list[str]:
        note = collapse_note(output.argmax(1).cpu().numpy(), target.cpu().numpy(),
                             self.class_names_or_default(class_names))
        return [note] if note else []

    def class_names_or_default(self, class_names: Sequence[str]) -> list[str]:
        names = list(class_names)
        return names if len(names) == self.num_classes else [f"class{c}" for c in range(self.num_classes)]

    def evaluate(self, probabilities: np.ndarray, targets: np.ndarray,
                 class_names: Sequence[str] = ()) -> TaskEvaluation:
        """Accuracy, F1 per class, ROC AUC, sensitivity/specificity (set-level: std is None)."""
        names = self.class_names_or_default(class_names)
        targets = np.asarray(targets, int)
        scores = classification_scores(targets, probabilities, names)
        predicted = probabilities.argmax(1)
        records = [{"target": names[t], "predicted": names[p], "correct": bool(t == p),
                    **{f"p_{n}": float(v) for n, v in zip(names, row)}}
                   for t, p, row in zip(targets, predicted, probabilities)]
        aggregate = {k: {"mean": v, "std": None} for k, v in scores.values.items()}
        collapsed = collapse_note(predicted, targets, names)
        return TaskEvaluation(records, aggregate, {"confusion": scores.confusion, "class_names": names},
                              [collapsed, *scores.notes] if collapsed else scores.notes)

    def prediction_writer(self, out_dir: Path, class_names: Sequence[str] = ()) -> PredictionWriter:
        return ProbabilityCsv(Path(out_dir) / f"{self.name}.csv", self.class_names_or_default(class_names))

    def report_figures(self, sets: Sequence[EvaluatedSet]) -> list[ReportFigure]:
        figures = []
        for data in sets:
            names = self.class_names_or_default(data.class_names)
            figures.append(roc_figure(self.name, data, names))
            figures.append(confusion_figure(self.name, data, names))
            figures.append(calibration_figure(self.name, data))
            figures.append(misclassified_figure(self.name, data, names))
            for map_name, maps in data.maps.items():
                figures.append(maps_by_class_figure(self.name, data, names, map_name, maps))
        return [f for f in figures if f is not None]


class ProbabilityCsv(PredictionWriter):
    """One row per image: its output name, its input path, the predicted class, and one probability per class."""

    def __init__(self, path: Path, class_names: list[str]):
        self.path, self.class_names = path, class_names
        self.sources: dict[str, Path] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "w", newline="")
        self.writer = csv.writer(self.handle)
        self.writer.writerow(["image", "path", "predicted", *class_names])

    def source(self, name: str, path: Path) -> None:
        self.sources[name] = path

    def write(self, name: str, probability: np.ndarray, original_size: tuple[int, int]) -> None:
        probability = np.asarray(probability, float).reshape(-1)
        self.writer.writerow([name, str(self.sources.pop(name, "")), self.class_names[int(probability.argmax())],
                              *(f"{p:.6f}" for p in probability)])

    def close(self) -> list[Path]:
        self.handle.close()
        return [self.path]


def roc_figure(task: str, data: EvaluatedSet, names: list[str]) -> ReportFigure | None:
    """ROC curve of the positive (second) class; skipped for other than two classes."""
    if data.probabilities.shape[1] != 2:
        return None
    auc = data.evaluation.aggregate.get("auc", {}).get("mean")
    fig, axes = plots.figure(panel=4)
    ax = axes[0, 0]
    if auc is None:
        plots.blank(ax, "ROC curve undefined: the set holds one class only")
    else:
        fpr, tpr, _ = binary_roc(np.asarray(data.targets) == 1, data.probabilities[:, 1])
        ax.plot(fpr, tpr, color="tab:red", lw=2, label=f"AUC = {auc:.3f}")
        ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=1, label="chance")
        ax.set_xlabel("false positive rate (1 - specificity)")
        ax.set_ylabel(f"true positive rate (sensitivity, {names[1]})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.legend(loc="lower right")
    return ReportFigure(f"{task} ROC curve · {data.label}", fig,
                        f"Positive class: {names[1]}; n = {len(data.targets)}.")


def confusion_figure(task: str, data: EvaluatedSet, names: list[str]) -> ReportFigure:
    matrix = np.asarray(data.evaluation.extra["confusion"])
    fig, axes = plots.figure(panel=3.6)
    ax = axes[0, 0]
    ax.imshow(matrix, cmap="Blues")
    peak = matrix.max() if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = data.evaluation.aggregate.get("acc", {}).get("mean")
    caption = f"Accuracy {acc:.3f}." if acc is not None else ""
    return ReportFigure(f"{task} confusion matrix · {data.label}", fig, caption)


def calibration_figure(task: str, data: EvaluatedSet, bins: int = 10) -> ReportFigure:
    """Reliability diagram: accuracy against confidence per confidence bin, with the ECE."""
    found = reliability_bins(data.probabilities, data.targets, bins)
    fig, axes = plots.figure(panel=4)
    ax = axes[0, 0]
    centres, width = (found.edges[:-1] + found.edges[1:]) / 2, 1 / bins
    filled = found.counts > 0
    ax.bar(centres[filled], found.accuracy[filled], width=width * 0.9, color="tab:blue", alpha=0.8,
           label="accuracy")
    ax.plot(centres[filled], found.confidence[filled], "_", color="tab:red", ms=14, mew=2,
            label="mean confidence (calibrated height)")
    ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=1, label="calibrated")
    for x, y, n in zip(centres[filled], found.accuracy[filled], found.counts[filled]):
        ax.text(x, min(y + 0.02, 0.97), str(n), ha="center", fontsize=7)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.legend(loc="upper left", fontsize=8)
    return ReportFigure(f"{task} calibration (reliability diagram) · {data.label}", fig,
                        f"ECE = {found.ece:.3f} over {bins} equal-width confidence bins (n = {len(data.targets)}); "
                        "numbers over the bars are images per bin; bars below the diagonal: overconfident.")


def misclassified_figure(task: str, data: EvaluatedSet, names: list[str]) -> ReportFigure:
    """The wrong predictions, most confident first, each titled with its file; the caption lists them all."""
    predicted = data.probabilities.argmax(1)
    truth = np.asarray(data.targets).reshape(-1).astype(int)
    wrong = np.flatnonzero(predicted != truth)
    wrong = wrong[np.argsort(-data.probabilities[wrong, predicted[wrong]], kind="stable")]
    shown = wrong[:plots.MAX_PANELS]
    fig, axes = plots.figure(max(1, len(shown)), panel=2.6)
    if not len(shown):
        plots.blank(axes[0, 0], "no misclassified image")
    for ax, i in zip(axes[0], shown):
        plots.show_image(ax, data.images[i], f"{plots.short_name(data.keys[i])}\ntrue {names[truth[i]]}\n"
                                             f"predicted {names[predicted[i]]} "
                                             f"({data.probabilities[i, predicted[i]]:.2f})")
    listing = plots.case_list([f"{data.keys[i]} (true {names[truth[i]]}, predicted {names[predicted[i]]}, "
                               f"p = {data.probabilities[i, predicted[i]]:.2f})" for i in wrong])
    return ReportFigure(f"{task} misclassified cases · {data.label}", fig,
                        f"{len(wrong)} of {len(truth)} misclassified, most confident first" +
                        (f": {listing}" if len(wrong) else "."))


def maps_by_class_figure(task: str, data: EvaluatedSet, names: list[str], map_name: str,
                         maps: np.ndarray) -> ReportFigure:
    """A row per predicted class, most confident first: images with the bridge map over them (MultiMix Fig. 9)."""
    predicted = data.probabilities.argmax(1)
    columns = plots.MAX_PANELS
    fig, axes = plots.figure(columns, len(names), panel=1.8)
    shown = []
    for c, name in enumerate(names):
        confident_first = np.argsort(-data.probabilities[:, c], kind="stable")
        picks = confident_first[predicted[confident_first] == c][:columns]
        shown += list(picks)
        for j in range(columns):
            ax = axes[c, j]
            if j < len(picks):
                i = picks[j]
                truth = names[int(data.targets[i])]
                plots.show_map(ax, data.images[i], maps[i], f"{plots.short_name(data.keys[i])}\ntrue {truth}")
            else:
                plots.blank(ax, f"no image predicted {name}" if j == 0 else "")
        axes[c, 0].set_ylabel(f"predicted {name}", fontsize=9)
    label = data.map_label(map_name)
    return ReportFigure(f"{task} {label} maps by predicted class · {data.label}", fig,
                        f"{label} over the input image, one row per predicted class, its most confident "
                        f"predictions first: {plots.case_list([data.keys[i] for i in shown])}.")
