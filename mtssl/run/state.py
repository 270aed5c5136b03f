"""A run's resumable state, written so that a crash at any moment leaves a usable pair.

What is saved
-------------
:func:`save` writes the model's weights and a mapping ``name -> component``
of everything else a run needs to continue bit for bit: optimizer,
scheduler, random generators (:class:`RngState`), stream positions, the
trainer's counters, and any stateful plugin (an EMA teacher, an adaptive
threshold). :func:`load` puts it all back. Nothing is special-cased: a
component is any object with

* ``state_dict()`` returning a tree of dicts, lists, tuples, tensors and
  JSON-able scalars (str, int, float -- ``nan``/``inf`` included --, bool,
  ``None``); dict keys may be any of those scalars, and
* ``load_state_dict(tree)`` taking the same tree back.

Tensors go into a safetensors file (no pickle, ever); the rest of the tree
goes into that file's metadata as JSON, with markers for tensors, tuples and
non-string dict keys so that it comes back exactly as it was given. A plugin
with state only needs those two methods; the trainer collects it by name.

Layout and commit
-----------------
::

    checkpoints/last.safetensors                    weights + config + the manifest (written last)
    checkpoints/state/last-00000040-rank0.safetensors   every component of rank 0 at step 40
    checkpoints/state/last-00000040-rank1.safetensors   rank 1's own components (torchrun)

Every process first writes its own state file under a step-stamped name
(temporary file, fsync, rename); after all have finished (a barrier under
torchrun), rank 0 writes the weights file, whose metadata names the step,
the world size and the state files. That single atomic rename is the
commit: a crash before it leaves the previous weights file pointing at the
previous state files (deleted only after the commit), a crash after it
leaves the new pair. A manifest inside the weights file was chosen over one
big file because ``eval``, ``predict`` and ``report`` read
``last.safetensors`` as a plain weights file and should not load optimizer
moments, and because every torchrun process must save its own generators
and stream positions without gathering them on one rank. :func:`load`
checks that each state file exists, is intact, and holds the step and rank
the manifest names; a mismatch is a :class:`~mtssl.run.checkpoint.CheckpointError`
naming the file.

Components listed in ``shared`` (optimizer and scheduler: identical on every
rank under DistributedDataParallel) are written by rank 0 only and read
from rank 0's file by every rank.
"""
from __future__ import annotations

import os
import random
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol

import numpy as np
import torch

from mtssl.run import checkpoint
from mtssl.run.checkpoint import CheckpointError

STATE_DIR = "state"
RESUME_KEY = "resume"
_STATE_NAME = re.compile(r"^\.?(?P<tag>[A-Za-z0-9_]+)-(?P<step>\d{8})-rank(?P<rank>\d+)\.safetensors")

# Test hook, "STEP:SECONDS": sleep that long after writing the state files of STEP and before committing
# them, so that tests can kill a process inside a save deterministically. Unset in normal use.
PAUSE_ENV = "MTSSL_TEST_SAVE_PAUSE"


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


# -- tree <-> (JSON, tensors) ------------------------------------------------
_MARKERS = ("__tensor__", "__tuple__", "__items__")


def encode(tree: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """A JSON-able copy of ``tree``; its tensors move to ``tensors`` under ``prefix/N``."""
    if torch.is_tensor(tree):
        key = f"{prefix}/{len(tensors)}"
        tensors[key] = tree
        return {"__tensor__": key}
    if isinstance(tree, dict):
        if all(isinstance(k, str) and k not in _MARKERS for k in tree):
            return {k: encode(v, tensors, prefix) for k, v in tree.items()}
        return {"__items__": [[encode(k, tensors, prefix), encode(v, tensors, prefix)] for k, v in tree.items()]}
    if isinstance(tree, tuple):
        return {"__tuple__": [encode(v, tensors, prefix) for v in tree]}
    if isinstance(tree, list):
        return [encode(v, tensors, prefix) for v in tree]
    if tree is None or isinstance(tree, (str, bool, int, float)):
        return tree
    if isinstance(tree, (np.integer, np.floating, np.bool_)):
        return tree.item()
    raise TypeError(f"{prefix}: cannot save a {type(tree).__name__} in a state_dict (use tensors and "
                    "JSON-able scalars)")


def decode(tree: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Invert :func:`encode`."""
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return tensors[tree["__tensor__"]]
        if "__tuple__" in tree:
            return tuple(decode(v, tensors) for v in tree["__tuple__"])
        if "__items__" in tree:
            return {decode(k, tensors): decode(v, tensors) for k, v in tree["__items__"]}
        return {k: decode(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [decode(v, tensors) for v in tree]
    return tree


# -- components the trainer always has ---------------------------------------
class RngState:
    """The process's generators: torch (CPU), the CUDA device in use, NumPy's and Python's global ones."""

    def __init__(self, device: torch.device):
        self.device = device

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {"torch": torch.get_rng_state(), "python": random.getstate(),
                 "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                           "has_gauss": int(has_gauss), "gauss": float(gauss)}}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        if self.device.type == "cuda" and "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], self.device)


class Adapter:
    """A component from a pair of functions (e.g. a stream's ``state``/``load_state``)."""

    def __init__(self, get: Callable[[], Any], put: Callable[[Any], Any]):
        self.state_dict, self.load_state_dict = get, put


# -- files ---------------------------------------------------------------------
def state_file(folder: Path, tag: str, step: int, rank: int) -> Path:
    return folder / STATE_DIR / f"{tag}-{step:08d}-rank{rank}.safetensors"


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every floating-point tensor is free of nan/inf (one host sync for all of them)."""
    flags = [torch.isfinite(t).all() for t in tensors if torch.is_floating_point(t)]
    return bool(torch.stack(flags).all()) if flags else True


def save(folder: str | Path, tag: str, weights: Mapping[str, torch.Tensor], weights_meta: Mapping[str, Any],
         step: int, components: Mapping[str, Stateful], rank: int = 0, world: int = 1,
         shared: Iterable[str] = (), barrier: Callable[[], None] | None = None) -> None:
    """Write this rank's state file, wait for every rank, then (rank 0) commit the weights + manifest."""
    folder = Path(folder)
    shared = set(shared)
    tensors: dict[str, torch.Tensor] = {}
    tree = {name: encode(part.state_dict(), tensors, name) for name, part in components.items()
            if rank == 0 or name not in shared}
    own = state_file(folder, tag, step, rank)
    checkpoint.atomic_save(tensors, own, {"step": step, "rank": rank, "world": world, "components": tree})
    if world > 1 and barrier is not None:
        barrier()  # every rank's file is on disk before rank 0 makes the checkpoint current
    pause_step, _, seconds = os.environ.get(PAUSE_ENV, "").partition(":")
    if pause_step and int(pause_step) == step:
        time.sleep(float(seconds))
    if rank:
        return
    files = [state_file(folder, tag, step, r).name for r in range(world)]
    manifest = {"step": step, "world": world, "states": files}
    checkpoint.atomic_save(weights, folder / f"{tag}.safetensors", {**weights_meta, RESUME_KEY: manifest})
    _remove_older(folder, tag, step)


def _remove_older(folder: Path, tag: str, step: int) -> None:
    """Delete state files (and temporary leftovers) of this tag from steps before the committed one."""
    for path in (folder / STATE_DIR).iterdir():
        match = _STATE_NAME.match(path.name)
        if match and match["tag"] == tag and int(match["step"]) < step:
            path.unlink(missing_ok=True)


def load(folder: str | Path, tag: str, components: Mapping[str, Stateful], rank: int = 0, world: int = 1,
         shared: Iterable[str] = ()) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Check the manifest and this rank's state file, restore every component; return (weights, metadata)."""
    folder = Path(folder)
    shared = set(shared)
    weights_path = folder / f"{tag}.safetensors"
    weights, meta = checkpoint.load(weights_path)
    manifest = meta.get(RESUME_KEY)
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{weights_path}: carries no training state to resume from")
    if manifest["world"] != world:
        raise CheckpointError(f"{weights_path}: saved by {manifest['world']} process(es), resumed with {world}; "
                              "resume with the same number of processes")
    step = int(manifest["step"])
    trees: dict[int, tuple[dict, dict]] = {}
    for r in sorted({rank, 0}):
        path = folder / STATE_DIR / state_name(manifest["states"][r], weights_path)
        tensors, state_meta = checkpoint.load(path)
        if state_meta.get("step") != step or state_meta.get("rank") != r:
            raise CheckpointError(f"{path}: holds step {state_meta.get('step')} of rank {state_meta.get('rank')}, "
                                  f"but {weights_path.name} is step {step} of rank {r}: mismatched checkpoint pair")
        trees[r] = (state_meta["components"], tensors)
    for name, part in components.items():
        source = 0 if name in shared else rank
        tree, tensors = trees[source]
        if name not in tree:
            path = folder / STATE_DIR / manifest["states"][source]
            raise CheckpointError(f"{path}: has no state for '{name}' (saved: {', '.join(sorted(tree)) or 'none'})")
        part.load_state_dict(decode(tree[name], tensors))
    return weights, meta


def state_name(name: Any, weights_path: Path) -> str:
    """A state file named by a manifest: a plain name of this folder's pattern, never a path out of it."""
    if not isinstance(name, str) or name != Path(name).name or not _STATE_NAME.fullmatch(name):
        raise CheckpointError(f"{weights_path}: names the state file {name!r}, which is not a file of "
                              f"{weights_path.parent / STATE_DIR}; the checkpoint is damaged or was edited")
    return name


def remove_leftovers(folder: str | Path) -> None:
    """Temporary files of writes a crash cut short (call while no process is saving)."""
    folder = Path(folder)
    for sub in (folder, folder / STATE_DIR):
        if sub.is_dir():
            for path in sub.glob(".*.tmp"):
                path.unlink(missing_ok=True)
