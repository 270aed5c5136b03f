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
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from mtssl.errors import CheckpointError
from mtssl.run import checkpoint
from mtssl.run import state as run_state
from mtssl.training.guard import DivergenceError
from mtssl.run.rundir import RunDir

if TYPE_CHECKING:
    from mtssl.training.trainer import Trainer

SHARED_STATE = ("optimizer", "scheduler")  # identical on every rank under DDP: saved once, by rank 0
LOG_COPY = "metrics.jsonl"  # in checkpoints/: the log as it was when ``last`` was committed


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
    for key, module in trainer.strategy_modules.items():  # a strategy's own modules (auxiliary decoders)
        parts[f"modules/{key}"] = module
    parts["weighting"] = trainer.weighting
    return parts


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def checkpoint_bytes(trainer: "Trainer") -> int:
    """About the most disk a run's checkpoints take, at the moment a save commits: ``best``, ``last`` and
    the temporary copy of the weights, plus the old and new state files (Adam's two moments per
    parameter, the EMA teacher's, the second network's and the strategies' own modules' weights)."""
    weights = tensor_bytes(trainer.model.state_dict().values())
    params = tensor_bytes(p for group in trainer.optimizer.param_groups for p in group["params"])
    companions = [m for m in (getattr(trainer.teacher, "module", None), trainer.peer) if m is not None]
    companions += list(trainer.strategy_modules.values())
    state = 2 * params + sum(tensor_bytes(m.state_dict().values()) for m in companions)
    return 3 * weights + 2 * state


def disk_space_warning(trainer: "Trainer") -> str | None:
    """A warning when the run's folder has less free space than its checkpoints will take."""
    need, free = checkpoint_bytes(trainer), shutil.disk_usage(trainer.run.path).free
    if free >= need:
        return None
    return (f"{trainer.run.path}: {free / 2**20:.0f} MB free, but the checkpoints need about {need / 2**20:.0f} MB; "
            "the run will stop at its first save unless space is freed")


class Checkpointer:
    """Writes and reads a run's checkpoints; remembers the step of the committed ``last``."""

    def __init__(self, run: RunDir, rank: int = 0, world: int = 1):
        self.run, self.rank, self.world = run, rank, world
        self.saved_step: int | None = None
        self._log_copied: tuple[int, int] | None = None  # sizes of the log and of its copy at the last save

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
        try:
            self._write(tag, weights, metadata, step, parts)
        except (CheckpointError, OSError) as exc:  # e.g. disk full: one line naming the folder
            reason = (f"{exc.filename or self.run.checkpoints}: {exc.strerror or exc}" if isinstance(exc, OSError)
                      else str(exc))
            resume = f" Free space, then: mtssl train --resume {self.run.path}" if self.saved_step is not None else ""
            raise CheckpointError(f"{reason}. {self.note()}{resume}") from exc
        if parts is not None:
            self.saved_step = step

    def _write(self, tag: str, weights: Mapping[str, torch.Tensor], metadata: Mapping[str, Any], step: int,
               parts: Mapping[str, Any] | None) -> None:
        if parts is None:
            if self.rank == 0:
                checkpoint.atomic_save(weights, self.run.checkpoints / f"{tag}.safetensors", metadata)
            return
        barrier = None
        if self.world > 1:
            import torch.distributed as dist

            barrier = dist.barrier
        if self.rank == 0:
            self.keep_log_copy()
        run_state.save(self.run.checkpoints, tag, weights, metadata, step, parts,
                       self.rank, self.world, SHARED_STATE, barrier)

    def keep_log_copy(self) -> None:
        """Bring the copy of ``metrics.jsonl`` beside the checkpoint up to date (before the commit), so a resume
        can restore a log that was cut short or deleted since.

        The trainer only appends to the log, so a save appends what the log gained since the last one, and
        the cost of a save does not grow with the run. When the log no longer continues what the copy ends
        with (deleted or edited since the last save, or the copy is not this process's), the copy becomes its
        own lines before the log's first step followed by the log: a log deleted mid-run loses no history.
        Lines the copy holds beyond the committed step (a save that failed after the copy) are dropped when a
        resume reads it.
        """
        file = self.run.path / RunDir.METRICS
        if not file.exists():
            return
        copy = self.run.checkpoints / LOG_COPY
        if self._log_copied is not None and self._log_continues(file, copy, *self._log_copied):
            with open(file, "rb") as log, open(copy, "ab") as out:
                log.seek(self._log_copied[0])
                out.write(log.read())
        else:
            lines = file.read_text().splitlines(keepends=True)
            first = _step_of(lines[0]) if lines else None
            kept = copy.read_text().splitlines(keepends=True) if first is not None and copy.exists() else []
            earlier = [line for line in kept if line.endswith("\n") and _before(line, first)]
            self.run.write_text(f"{self.run.checkpoints.name}/{LOG_COPY}", "".join(earlier + lines))
        self._log_copied = (file.stat().st_size, copy.stat().st_size)

    @staticmethod
    def _log_continues(file: Path, copy: Path, log_size: int, copy_size: int, tail: int = 256) -> bool:
        """Whether the log still holds, at ``log_size``, the bytes the copy ends with at ``copy_size``."""
        if not copy.exists() or copy.stat().st_size != copy_size or file.stat().st_size < log_size:
            return False
        n = min(tail, log_size, copy_size)
        with open(file, "rb") as log, open(copy, "rb") as kept:
            log.seek(log_size - n)
            kept.seek(copy_size - n)
            return log.read(n) == kept.read(n)

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
        self._log_copied = None  # the log was rewritten: the next save copies it whole

    def truncate_log(self, step: int) -> None:
        """Make the log read as one run up to ``step``: lines written after it are dropped, and the lines up
        to it come from the copy kept with the checkpoint, so a log cut short or deleted since is whole again.

        Without a copy (a checkpoint written before copies were kept) a line cut short by a crash is dropped.
        """
        copy = self.run.checkpoints / LOG_COPY
        file = copy if copy.exists() else self.run.path / RunDir.METRICS
        if self.rank or not file.exists():
            return
        kept = [line for line in file.read_text().splitlines() if _before(line, step + 1)]
        self.run.write_text(RunDir.METRICS, "".join(line + "\n" for line in kept))


def _step_of(line: str) -> int | None:
    """The ``step`` of one log line (0 for a record without one), None for a line that is not a JSON record."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record.get("step", 0) if isinstance(record, dict) else None


def _before(line: str, step: int) -> bool:
    """Whether ``line`` is a whole log record of a step before ``step``."""
    found = _step_of(line)
    return found is not None and found < step
