"""mtssl: plugin-based multi-task semi-supervised learning for medical images.

Plugins import from :mod:`mtssl.api` only. The core is grouped by what it
does: ``cli`` (the commands), ``run`` (settings, run directory, checkpoint
files, starting a run), ``data`` (sources to batches), ``model`` (the
multi-task network), ``training`` (the loop), ``evaluation`` (scores,
predictions, reports), ``export`` (TorchScript/ONNX) and ``bench`` (ablation
grids). ``mtssl.train``, ``mtssl.open_run``, ``mtssl.Run`` and
``mtssl.TrainingStopped`` are the Python API (:mod:`mtssl.python_api`),
imported on first use: importing this package imports nothing else, so the
command line starts without torch.
"""
from __future__ import annotations

import importlib

__all__ = ["Run", "TrainingStopped", "open_run", "train"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("mtssl.python_api"), name)
    raise AttributeError(f"module 'mtssl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
