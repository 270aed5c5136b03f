"""Saving and resuming a run: one save, one load, for everything a bit-exact resume needs.

``best`` holds weights only. ``last`` holds the weights and the run state:
progress (step, best score), optimizer, scheduler, RNG, every stream's
position, the guard, the precision's scaler, and whatever strategies,
bridges, the teacher, the second network and the task weighting keep
(:func:`resumable_parts`). :mod:`mtssl.run.state` writes them so that a
crash at any moment leaves a usable pair.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping

import torch

from mtssl.run import checkpoint
from mtssl.run import state as run_state
from mtssl.training.guard import DivergenceError
from mtssl.run.rundir import RunDir

if TYPE_CHECKING:
    from mtssl.training.trainer import Trainer

SHARED_STATE = ("optimizer", "scheduler")  # identical on every rank under DDP: saved once, by rank 0


def resumable_parts(trainer: "Trainer") -> dict[str, Any]:
    """Everything besides the weights that a resume restores, by name.

    Strategies and bridges that keep state (an EMA teacher, an adaptive
    threshold) take part by defining ``state_dict``/``load_state_dict``.
    """
    parts: dict[str, Any] = {
        "trainer": run_state.Adapter(lambda: {"step": trainer.step, "best_score": trainer.best_score},
                                     trainer.load_progress),
        "optimizer": trainer.optimizer, "scheduler": trainer.scheduler, "guard": trainer.guard,
        "precision": trainer.precision, "rng": run_state.RngState(trainer.device)}
    for kind, streams in (("labeled", trainer.labeled), ("unlabeled", trainer.unlabeled)):
        for name, stream in streams.items():
            parts[f"stream/{kind}/{name}"] = run_state.Adapter(stream.state, stream.load_state)
    plugins = [(f"strategy/{task}/{s.name}", s) for task, group in trainer.parts.strategies.items() for s in group]
    plugins += [(f"bridge/{b.name}", b) for b in trainer.parts.bridges]
    for key, plugin in plugins:
        if callable(getattr(plugin, "state_dict", None)) and callable(getattr(plugin, "load_state_dict", None)):
            parts[key] = plugin
    if trainer.teacher is not None:  # what strategies asked the core for
        parts["teacher"] = trainer.teacher
    if trainer.peer is not None:
        parts["peer"] = trainer.peer
    parts["weighting"] = trainer.weighting
    return parts


class Checkpointer:
    """Writes and reads a run's checkpoints; remembers the step of the committed ``last``."""

    def __init__(self, run: RunDir, rank: int = 0, world: int = 1):
        self.run, self.rank, self.world = run, rank, world
        self.saved_step: int | None = None

    def note(self) -> str:
        """Where the last good checkpoint is, for messages about a run that stops."""
        if self.saved_step is None:
            return "No resumable checkpoint was written."
        return (f"The last finite checkpoint is kept: {self.run.checkpoints / 'last.safetensors'} "
                f"(step {self.saved_step}).")

    def save(self, tag: str, weights: Mapping[str, torch.Tensor], metadata: Mapping[str, Any], step: int,
             parts: Mapping[str, Any] | None = None) -> None:
        """Write ``tag``: the weights, and the run state when ``parts`` is given; never non-finite weights."""
        if not run_state.all_finite(weights.values()):
            raise DivergenceError(f"training diverged: the weights are not finite after step {step} (its loss "
                                  f"was finite, so the update overflowed: is the learning rate too large?); "
                                  f"'{tag}' was not written. {self.note()}")
        if parts is None:
            if self.rank == 0:
                checkpoint.atomic_save(weights, self.run.checkpoints / f"{tag}.safetensors", metadata)
            return
        barrier = None
        if self.world > 1:
            import torch.distributed as dist

            barrier = dist.barrier
        run_state.save(self.run.checkpoints, tag, weights, metadata, step, parts,
                       self.rank, self.world, SHARED_STATE, barrier)
        self.saved_step = step

    def load(self, tag: str, parts: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Restore every part of this rank from the committed ``tag``; returns the weights to load."""
        if self.rank == 0:
            run_state.remove_leftovers(self.run.checkpoints)
        weights, _ = run_state.load(self.run.checkpoints, tag, parts, self.rank, self.world, SHARED_STATE)
        return weights

    def resumed_at(self, step: int) -> None:
        """After a load: the run continues from ``step``, so the log is cut back to it."""
        self.saved_step = step
        self.truncate_log(step)

    def truncate_log(self, step: int) -> None:
        """Drop log lines written after ``step``, so a resumed run's log reads as one run.

        A line cut short by a crash (it can only be the last one) is dropped too.
        """
        file = self.run.path / RunDir.METRICS
        if self.rank or not file.exists():
            return
        kept = []
        for line in file.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue
        file.write_text("".join(line + "\n" for line in kept))
