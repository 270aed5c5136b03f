"""Cardiothoracic ratio (CTR) regression: a per-image number, learned beside classification and segmentation.

The CTR is the widest heart diameter over the widest inner thoracic diameter
on a PA radiograph; above 0.5 suggests cardiomegaly. This package adds

* the task ``ctr``: a pooled linear head with a sigmoid (a ratio lies in
  0..1), trained with ``weight`` * mean squared error, scored by MAE, RMSE
  and Pearson's r;
* the source ``ctr-phantom``: a small chest phantom whose heart and thorax
  widths, hence its CTR, are known exactly, so the task trains with no data.

It declares its own target (``TargetSpec("ctr", "float32")``) and imports
only :mod:`mtssl.api`: the core needed no change to host it.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtssl.api import (Field, HeadInputs, Options, PredictionWriter, Sample, Source, TargetSpec, Task,
                       TaskEvaluation, hookimpl, read_options)

CTR = TargetSpec("ctr", "float32", ())
"""One float per image, required for every labeled image."""


class CtrOptions(Options):
    weight: float = Field(10.0, ge=0)


class PhantomOptions(Options):
    n: int = Field(200, ge=1)


class RatioHead(nn.Module):
    """Global average pool of the deepest features -> linear -> sigmoid logit (one number per image)."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Linear(channels, 1)

    def forward(self, features: list[torch.Tensor], extras: Mapping[int, torch.Tensor]) -> torch.Tensor:
        return self.fc(features[-1].mean(dim=(-2, -1)))


class CardiothoracicRatio(Task):
    """Regress the CTR from the shared encoder."""

    target = CTR
    default_labels = 20

    def __init__(self, name: str, **options):
        settings = read_options(f"task '{name}'", options, CtrOptions)
        super().__init__(name, **options)
        self.weight = settings.weight

    def build_head(self, inputs: HeadInputs) -> nn.Module:
        if inputs.extras:
            raise ValueError(f"task '{self.name}' takes no bridge inputs")
        return RatioHead(inputs.channels[-1])

    def probabilities(self, output: torch.Tensor) -> torch.Tensor:
        """The predicted ratio, ``[B, 1]`` in 0..1."""
        return torch.sigmoid(output.float())

    def supervised_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.weight * F.mse_loss(self.probabilities(output)[:, 0], target.float())

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        error = (self.probabilities(output)[:, 0] - target.float()).abs()
        return {"mae": error.mean().item()}

    def selection_score(self, metrics: Mapping[str, float]) -> float | None:
        return -metrics["mae"] if "mae" in metrics else None

    def evaluate(self, probabilities: np.ndarray, targets: np.ndarray,
                 class_names: Sequence[str] = ()) -> TaskEvaluation:
        predicted = np.asarray(probabilities, np.float64)[:, 0]
        truth = np.asarray(targets, np.float64)
        errors = predicted - truth
        records = [{"ctr": float(t), "predicted": float(p), "abs_error": float(abs(e))}
                   for t, p, e in zip(truth, predicted, errors)]
        aggregate = {"mae": {"mean": float(np.abs(errors).mean()), "std": float(np.abs(errors).std())},
                     "rmse": {"mean": float(np.sqrt((errors ** 2).mean())), "std": None}}
        notes = []
        if len(truth) > 1 and truth.std() > 0 and predicted.std() > 0:
            aggregate["pearson_r"] = {"mean": float(np.corrcoef(predicted, truth)[0, 1]), "std": None}
        else:
            aggregate["pearson_r"] = {"mean": None, "std": None}
            notes.append("Pearson's r undefined: predictions or targets are constant")
        return TaskEvaluation(records, aggregate, notes=notes)

    def prediction_writer(self, out_dir: Path, class_names: Sequence[str] = ()) -> PredictionWriter:
        return RatioCsv(Path(out_dir) / f"{self.name}.csv")


class RatioCsv(PredictionWriter):
    """``image,ctr`` rows."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.handle = open(path, "w", newline="")
        self.writer = csv.writer(self.handle)
        self.writer.writerow(["image", "ctr"])

    def write(self, name: str, probability: np.ndarray, original_size: tuple[int, int]) -> None:
        self.writer.writerow([name, f"{float(np.asarray(probability).reshape(-1)[0]):.4f}"])

    def close(self) -> list[Path]:
        self.handle.close()
        return [self.path]


def draw_phantom(size: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A bright thorax with dark lungs and a bright heart; returns the uint8 image and its exact CTR."""
    lin = np.linspace(-1, 1, size)
    x, y = np.meshgrid(lin, lin)
    thorax_half = rng.uniform(0.65, 0.9)
    heart_half = thorax_half * rng.uniform(0.3, 0.65)
    thorax = (x / thorax_half) ** 2 + (y / 0.95) ** 2 < 1
    lungs = thorax & (np.abs(x) > 0.08) & (y < 0.6)
    heart = ((x - 0.1 * heart_half) / heart_half) ** 2 + ((y - 0.35) / 0.3) ** 2 < 1
    image = np.where(thorax, 0.6, 0.1)
    image = np.where(lungs, 0.25, image)
    image = np.where(heart & thorax, 0.75, image)
    image = np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1)
    return (image * 255).astype(np.uint8), float(heart_half / thorax_half)


class CtrPhantom(Source):
    """``ctr-phantom[:n=200]``: synthetic radiographs with exactly known cardiothoracic ratios."""

    target = CTR

    def __init__(self, n: int = 200, seed: int = 0):
        self.n, self.seed = int(n), int(seed)
        self._keys = [f"ctr-phantom/s{self.seed}/{i:05d}" for i in range(self.n)]

    @property
    def keys(self):
        return self._keys

    def load(self, index: int) -> Sample:
        return self.load_resized(index, 128)

    def load_resized(self, index: int, size: int) -> Sample:
        image, ratio = draw_phantom(size, np.random.default_rng([self.seed, index]))
        return Sample(image, ratio)


def build_source(name: str, path: str | None = None, target: TargetSpec | None = None, seed: int = 0,
                 **options) -> CtrPhantom:
    settings = read_options(f"source '{name}'", options, PhantomOptions)
    if path:
        raise ValueError(f"source '{name}' draws its images and takes no path (got '{path}')")
    return CtrPhantom(settings.n, seed)


@hookimpl
def register_tasks(register):
    register("ctr", CardiothoracicRatio, description="cardiothoracic ratio regression (MSE); option weight")


@hookimpl
def register_sources(register):
    register("ctr-phantom", build_source, description="chest phantoms with known cardiothoracic ratios; option n")
