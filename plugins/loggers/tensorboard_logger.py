"""TensorBoard: every step's scalars, validation metrics, and a few validation images at every evaluation.

Event files go to ``RUN/tensorboard`` (``tensorboard:dir=PATH`` elsewhere);
open them with ``tensorboard --logdir RUN/tensorboard``. Each evaluation adds
one image per task: a row per validation image showing the image, the task's
output when it is a map the size of the image (e.g. the predicted mask
probability), and every bridge map (e.g. saliency).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from pydantic import ConfigDict, Field

from mtssl.api import Logger, Options, ValidationImages, read_options, require


def _unit(panel: np.ndarray) -> np.ndarray:
    """Scale a map to [0, 1] for display (images by 255, other maps by their own range)."""
    panel = np.asarray(panel, np.float32)
    if panel.dtype == np.uint8:
        return panel / 255.0
    low, high = float(panel.min()), float(panel.max())
    if low >= 0.0 and high <= 1.0:
        return panel
    return (panel - low) / (high - low) if high > low else np.zeros_like(panel)


def _rgb(plane: np.ndarray) -> np.ndarray:
    """``[H, W]`` grey or ``[C, H, W]`` image -> ``[H, W, 3]`` (a colour image keeps its colours)."""
    plane = np.asarray(plane)
    if plane.ndim == 3:
        plane = plane.transpose(1, 2, 0) if plane.shape[0] == 3 else plane.mean(0)
    return plane if plane.ndim == 3 else np.repeat(plane[..., None], 3, axis=2)


def sample_grid(sample: ValidationImages) -> np.ndarray:
    """One ``[H, W, 3]`` float image: a row per validation image, its panels side by side."""
    rows = []
    size = sample.images.shape[-2:]
    for i in range(len(sample.images)):
        panels = [_rgb(sample.images[i].astype(np.float32) / 255.0)]
        output = np.asarray(sample.probabilities[i])
        if output.shape[-2:] == size:  # a dense output: show each channel next to the image
            panels += [_rgb(_unit(channel)) for channel in output.reshape(-1, *size)]
        panels += [_rgb(_unit(maps[i])) for maps in sample.maps.values()]
        rows.append(np.concatenate(panels, axis=1))
    return np.concatenate(rows, axis=0)


class TensorBoardOptions(Options):
    model_config = ConfigDict(coerce_numbers_to_str=True)  # dir=2024 is a folder name

    dir: Optional[str] = Field(None, min_length=1, description="event folder (default RUN/tensorboard)")


class TensorBoardLogger(Logger):
    """Writes TensorBoard event files with ``torch.utils.tensorboard``."""

    wants_images = True

    def __init__(self, name: str, **options: Any):
        self.settings = read_options(f"logger '{name}'", options, TensorBoardOptions)
        super().__init__(name, **options)
        require("tensorboard", "tensorboard", f"logger '{name}'")
        self.writer = None

    def start(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.settings.dir or Path(run_dir) / "tensorboard"))

    def log_step(self, step: int, scalars: Mapping[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(f"train/{key}", value, step)

    def log_validation(self, step: int, metrics: Mapping[str, float],
                       images: Sequence[ValidationImages] = ()) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(f"val/{key}", value, step)
        for sample in images:
            self.writer.add_image(f"val/{sample.task}", sample_grid(sample), step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
