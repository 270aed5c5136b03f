"""An exported folder (``metadata.json`` + TorchScript or ONNX) used like a run by ``mtssl predict``.

The tasks are rebuilt from the recorded config (no weights: only their
prediction writers are needed); the numbers come from the exported file,
TorchScript when present (no extra packages), ONNX through onnxruntime
otherwise.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from mtssl.model.assemble import build_tasks
from mtssl.run.config import RunConfig
from mtssl.export.write import FORMAT, METADATA, RUNNERS, EXTRA_HINT
from mtssl.export.graph import ExportError
from mtssl.evaluation.inference import Predictions
from mtssl.interfaces import Task
from mtssl.plugins import PluginHost


def is_export_dir(path: str | Path) -> bool:
    return (Path(path) / METADATA).is_file()


@dataclass
class _Parts:
    tasks: dict[str, Task]


@dataclass
class ExportedModel:
    """What ``predict_files`` needs from a model: tasks, class names, size, and a ``predict`` method."""

    path: Path
    meta: dict
    parts: _Parts
    runtime: str
    _run: Callable[[np.ndarray], list[np.ndarray]] | None = None

    @property
    def config(self) -> RunConfig:
        return RunConfig.from_dict(self.meta["config"], origin=str(self.path.with_name(METADATA)))

    @property
    def size(self) -> int:
        return int(self.meta["input"]["size"])

    @property
    def step(self) -> int:
        return int(self.meta.get("checkpoint", {}).get("step", 0))

    @property
    def class_names(self) -> dict[str, tuple[str, ...]]:
        return {task: tuple(names) for task, names in self.meta.get("class_names", {}).items()}

    def predict(self, images: np.ndarray, tasks: Iterable[str] | None = None, batch_size: int = 32,
                with_maps: bool = False, tick: Callable[[int], None] | None = None) -> Predictions:
        """Same contract as :func:`mtssl.evaluation.inference.predict`: uint8 ``[N, C, S, S]`` in, probabilities and maps out."""
        names = [o["name"] for o in self.meta["outputs"]]
        maps_named = {o["name"] for o in self.meta["outputs"] if "bridge" in o}
        wanted = set(tasks) if tasks is not None else set(self.parts.tasks)
        probabilities: dict[str, list[np.ndarray]] = {}
        maps: dict[str, list[np.ndarray]] = {}
        if self._run is None:
            self._run = RUNNERS[self.runtime](self.path)
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            for name, value in zip(names, self._run(chunk)):
                if name in maps_named:
                    if with_maps:
                        maps.setdefault(name, []).append(np.asarray(value)[:, 0])
                elif name in wanted:
                    probabilities.setdefault(name, []).append(np.asarray(value))
            if tick:
                tick(len(chunk))
        return Predictions({k: np.concatenate(v) for k, v in probabilities.items()},
                           {k: np.concatenate(v) for k, v in maps.items()})


def load_exported(folder: str | Path, host: PluginHost | None = None) -> ExportedModel:
    """Read ``metadata.json``; choose TorchScript if it was exported, else ONNX."""
    folder = Path(folder)
    file = folder / METADATA
    try:
        meta = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{file}: unreadable export metadata ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise ExportError(f"{file}: not an mtssl export (format {meta.get('format')!r})")
    files = meta.get("files", {})
    runtime = "torchscript" if "torchscript" in files else "onnx" if "onnx" in files else None
    if runtime is None:
        raise ExportError(f"{file}: lists no exported model file")
    path = folder / files[runtime]
    if not path.is_file():
        raise ExportError(f"{path}: exported model file is missing")
    if runtime == "onnx":
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise ExportError(f"{path}: running an ONNX export needs onnxruntime: {EXTRA_HINT}") from exc
    host = host or PluginHost()
    tasks, _ = build_tasks(RunConfig.from_dict(meta["config"], origin=str(file)), host)
    return ExportedModel(path, meta, _Parts(tasks), runtime)
