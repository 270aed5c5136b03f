"""Loggers chosen by name (``--log tensorboard,mlflow``), fed from the trainer's per-step callback.

The metrics JSONL file is the built-in record and is written by the trainer
regardless; the loggers here are extra destinations. :class:`LoggerHub` is the
``on_step`` callback: it splits each step's record into training scalars and
validation metrics and, for loggers that want them, runs a few validation
images through the model (eval mode, no randomness, so training is unchanged).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from mtssl.interfaces import Logger, ValidationImages
from mtssl.model.network import to_float
from mtssl.plugins import PluginHost
from mtssl.spec import parse_source

VALIDATION_PREFIX = "val/"
IMAGES_PER_TASK = 4
NOT_SCALARS = {"step"}


def logger_names(values: Iterable[str]) -> list[str]:
    """``["tensorboard,mlflow", "x"]`` -> ``["tensorboard", "mlflow", "x"]`` (order kept, repeats dropped)."""
    names = [part.strip() for value in values for part in str(value).split(",")]
    return list(dict.fromkeys(name for name in names if name))


def create_loggers(host: PluginHost, values: Iterable[str]) -> list[Logger]:
    """Instantiate each named logger (``NAME[:key=value]``); an unknown name lists the available ones."""
    loggers = []
    for text in logger_names(values):
        spec = parse_source(text)
        if spec.path:
            raise ValueError(f"--log {text}: expected NAME[:key=value,...]")
        loggers.append(host.create("logger", spec.name, **spec.options))
    return loggers


def validation_images(trainer, count: int = IMAGES_PER_TASK) -> list[ValidationImages]:
    """The first ``count`` validation images of each task, its probabilities and the bridge maps on them."""
    found = []
    model = trainer.model
    was_training = model.training
    model.eval()
    try:
        for name, task in trainer.parts.tasks.items():
            val = trainer.data[name].val
            if len(val) == 0:
                continue
            images = np.ascontiguousarray(val.images[:count])
            x = to_float(torch.from_numpy(images).to(trainer.device))
            maps: dict[str, torch.Tensor] = {}
            with torch.no_grad():
                out = model(x, {name: slice(0, len(x))}, maps=maps)
                probabilities = task.probabilities(out[name]).float().cpu().numpy()
            found.append(ValidationImages(name, images, probabilities,
                                          {k: v.float().cpu().numpy()[:, 0] for k, v in maps.items()}))
    finally:
        model.train(was_training)
    return found


class LoggerHub:
    """Fans one step record out to every logger; call :meth:`close` when training ends, however it ends."""

    def __init__(self, loggers: Sequence[Logger], trainer):
        self.loggers: list[Logger] = []
        self.trainer = trainer
        for logger in loggers:
            try:
                logger.start(trainer.run.path, trainer.config.to_dict())
            except BaseException:
                self.close()  # the ones already started
                raise
            self.loggers.append(logger)

    def __call__(self, step: int, logs: dict[str, float]) -> None:
        scalars = {k: float(v) for k, v in logs.items()
                   if k not in NOT_SCALARS and not k.startswith(VALIDATION_PREFIX) and _is_number(v)}
        metrics = {k[len(VALIDATION_PREFIX):]: float(v) for k, v in logs.items()
                   if k.startswith(VALIDATION_PREFIX) and _is_number(v)}
        for logger in self.loggers:
            logger.log_step(step, scalars)
        if metrics:
            images = validation_images(self.trainer) if any(l.wants_images for l in self.loggers) else []
            for logger in self.loggers:
                logger.log_validation(step, metrics, images if logger.wants_images else [])

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
