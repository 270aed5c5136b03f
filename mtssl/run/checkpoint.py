"""Checkpoints as safetensors files, written atomically and loaded without pickle.

``model.safetensors`` files carry the run's resolved config in their
metadata, so a checkpoint alone rebuilds its model (predict, eval). Training
state (optimizer moments, schedule, random generators, stream positions)
lives in separate state files that :mod:`mtssl.run.state` commits together
with the weights.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mtssl.errors import CheckpointError  # raised here; defined where the CLI can catch it cheaply

FORMAT = "mtssl-checkpoint-1"


def atomic_save(tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, Any] | None = None) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, **{k: json.dumps(v) for k, v in (metadata or {}).items()}}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=meta)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except (OSError, SafetensorError) as exc:  # e.g. disk full: one line naming the folder, the old file stays
        Path(tmp).unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CheckpointError(f"{path.parent}: could not write {path.name} ({reason}); "
                              "the previous checkpoint there is unchanged") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: str | Path, device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return ``(tensors, metadata)``; any damage is a :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            raw_meta = handle.metadata() or {}
        tensors = load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({exc})") from exc
    if raw_meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mtssl checkpoint (format {raw_meta.get('format')!r})")
    try:
        metadata = {k: json.loads(v) for k, v in raw_meta.items() if k != "format"}
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: damaged checkpoint metadata ({exc})") from exc
    return tensors, metadata


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors and a JSON-able remainder."""
    tensors, scalars = {}, {}
    for pid, slots in state["state"].items():
        for slot, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optim/{pid}/{slot}"] = value
            else:
                scalars[f"{pid}/{slot}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, pid, slot = key.split("/", 2)
            state.setdefault(int(pid), {})[slot] = value
    for key, value in meta["scalars"].items():
        pid, slot = key.split("/", 1)
        state.setdefault(int(pid), {})[slot] = value
    return {"state": state, "param_groups": meta["param_groups"]}
