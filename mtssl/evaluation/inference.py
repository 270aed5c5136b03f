"""A trained model back from its checkpoint alone, and batched predictions from it.

The weights file carries the run's resolved config and class names, so
evaluation and prediction need neither the optimizer state nor the
training data. Everything runs in eval mode (no dropout): the same inputs
give the same outputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from mtssl.run import checkpoint as checkpoints
from mtssl.model.assemble import Components, build_components
from mtssl.run.config import RunConfig
from mtssl.model.network import to_float
from mtssl.plugins import PluginHost
from mtssl.run.seeding import pick_device

CHECKPOINT_TAGS = ("best", "last")


@dataclass
class LoadedModel:
    """A rebuilt model with what its checkpoint said about the run."""

    path: Path
    config: RunConfig
    parts: Components
    class_names: dict[str, tuple[str, ...]]
    step: int
    device: torch.device

    @property
    def model(self):
        return self.parts.model

    @property
    def size(self) -> int:
        return self.config.size


def checkpoint_file(run_dir: str | Path, checkpoint: str = "best") -> Path:
    """``best``/``last`` inside ``RUN/checkpoints``, or a path to a ``.safetensors`` file."""
    if checkpoint in CHECKPOINT_TAGS:
        path = Path(run_dir) / "checkpoints" / f"{checkpoint}.safetensors"
        if not path.is_file() and not Path(run_dir).is_dir():
            raise FileNotFoundError(f"{run_dir}: no such run directory")
        return path
    path = Path(checkpoint)
    if path.suffix != ".safetensors":
        raise ValueError(f"--checkpoint {checkpoint}: expected best, last or a .safetensors file")
    return path


def load_model(run_dir: str | Path, checkpoint: str = "best", host: PluginHost | None = None,
               device: str = "auto") -> LoadedModel:
    """Rebuild the run's components from the checkpoint's config and load its weights."""
    path = checkpoint_file(run_dir, checkpoint)
    weights, meta = checkpoints.load(path)
    if "config" not in meta:
        raise checkpoints.CheckpointError(f"{path}: carries no run config; it cannot rebuild its model")
    bad = [k for k, v in weights.items() if torch.is_floating_point(v) and not bool(torch.isfinite(v).all())]
    if bad:
        raise checkpoints.CheckpointError(f"{path}: non-finite weights (nan/inf in {len(bad)} tensor(s), e.g. "
                                          f"'{bad[0]}'): the run diverged; it cannot be evaluated")
    config = RunConfig.from_dict(meta["config"], origin=f"{path} metadata")
    parts = build_components(config, host or PluginHost())
    try:
        parts.model.load_state_dict(weights)
    except RuntimeError as exc:
        raise checkpoints.CheckpointError(f"{path}: weights do not fit the model its config describes ({exc})") from exc
    target = pick_device(device)  # "auto": this machine's best device, whatever the run trained on
    parts.model.to(target).eval()
    names = {task: tuple(meta.get("class_names", {}).get(task, ())) for task in parts.tasks}
    return LoadedModel(path, config, parts, names, int(meta.get("step", 0)), target)


@dataclass
class Predictions:
    """Per-task probabilities (numpy, first axis = image) and bridge maps ``[N, S, S]``."""

    probabilities: dict[str, np.ndarray]
    maps: dict[str, np.ndarray]


def tasks_to_run(loaded: LoadedModel, tasks: Iterable[str], with_maps: bool) -> list[str]:
    """The asked tasks, plus every bridge target when maps are wanted (bridges run for their target's rows)."""
    wanted = list(dict.fromkeys(tasks))
    if with_maps:
        wanted += [b.target for b in loaded.parts.bridges if b.target not in wanted]
    return wanted


def predict(loaded: LoadedModel, images: np.ndarray, tasks: Iterable[str] | None = None,
            batch_size: int = 32, with_maps: bool = False,
            tick: Callable[[int], None] | None = None) -> Predictions:
    """Run uint8 images ``[N, S, S]`` (at the model's size) through the model, batch by batch."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    names = tasks_to_run(loaded, tasks if tasks is not None else loaded.parts.tasks, with_maps)
    probabilities: dict[str, list[np.ndarray]] = {name: [] for name in names}
    maps: dict[str, list[np.ndarray]] = {}
    loaded.model.eval()
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
        x = to_float(chunk.to(loaded.device))
        found: dict[str, torch.Tensor] | None = {} if with_maps else None
        with torch.no_grad():
            outputs = loaded.model(x, {name: slice(0, len(x)) for name in names}, maps=found)
            for name in names:
                probs = loaded.parts.tasks[name].probabilities(outputs[name].detach())
                probabilities[name].append(probs.float().cpu().numpy())
        for key, value in (found or {}).items():
            maps.setdefault(key, []).append(value.detach().float().cpu().numpy()[:, 0])
        if tick:
            tick(len(x))
    return Predictions({k: np.concatenate(v) for k, v in probabilities.items() if v},
                       {k: np.concatenate(v) for k, v in maps.items()})
