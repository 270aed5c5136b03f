"""The divergence guard: a step whose loss is not finite (or too large) never updates the weights.

A diverged run used to train on, exit 0 and leave nan weights as ``best``
and ``last``. The guard reads every loss term once per step -- in the same
host fetch that brings them to the log, so checking adds no host sync --
and on a bad term either stops the run (:class:`DivergenceError`, naming
the term and the step) or, with ``--skip-nonfinite N``, skips that step's
update at most ``N`` times. Under torchrun the verdict (and a pending stop
request, see :mod:`mtssl.training.stopping`) is agreed by all ranks in one small
all-reduce, so every process takes the same branch.

A finite loss can still produce a non-finite update (an infinite learning
rate, an overflowing gradient): such weights make the next loss nan, and
:func:`mtssl.run.state.all_finite` keeps them out of every checkpoint. When
skipping is allowed, the gradients are checked too (one more sync per step),
so that a skipped step really leaves the weights as they were.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.distributed as dist

DIVERGED_EXIT = 3


class DivergenceError(RuntimeError):
    """Training stopped on a non-finite or out-of-bound loss, or non-finite weights."""

    exit_code = DIVERGED_EXIT


@dataclass
class Fetched:
    """One step's loss terms on the host, and what all ranks agreed on."""

    values: list[float]
    bad: bool
    stop: bool


class DivergenceGuard:
    def __init__(self, max_loss: float | None = None, skip_budget: int = 0, world: int = 1):
        self.max_loss, self.skip_budget, self.world = max_loss, skip_budget, world
        self.skipped = 0

    def fetch(self, terms: Sequence[torch.Tensor], stop_requested: bool = False) -> Fetched:
        """Bring every term to the host in one transfer (plus one all-reduce of two flags under torchrun)."""
        values = torch.stack([t.detach().float().reshape(()) for t in terms])
        if self.world == 1:
            host = values.tolist()
            return Fetched(host, self.problem(["?"] * len(host), host) is not None, stop_requested)
        bad = ~torch.isfinite(values).all()
        if self.max_loss is not None:
            bad = bad | (values.abs() > self.max_loss).any()
        flags = torch.stack([bad.float(), torch.tensor(float(stop_requested), device=values.device)])
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        host = torch.cat([values, flags]).tolist()
        return Fetched(host[:-2], host[-2] > 0, host[-1] > 0)

    def problem(self, names: Sequence[str], values: Sequence[float]) -> str | None:
        """What is wrong with this process's terms, or None."""
        for name, value in zip(names, values):
            if not math.isfinite(value):
                return f"loss term '{name}' is {value}"
            if self.max_loss is not None and abs(value) > self.max_loss:
                return f"loss term '{name}' = {value:.4g} exceeds --max-loss {self.max_loss:g}"
        return None

    def bad_step(self, step: int, problem: str, where: str) -> None:
        """Count a skipped step, or raise once the budget is spent."""
        if self.skipped < self.skip_budget:
            self.skipped += 1
            return
        budget = (f"; {self.skip_budget} bad step(s) already skipped (--skip-nonfinite {self.skip_budget})"
                  if self.skip_budget else "")
        raise DivergenceError(f"training diverged: {problem} at step {step}{budget}. {where}")

    @staticmethod
    def gradients_finite(parameters: Iterable[torch.nn.Parameter]) -> bool:
        grads = [p.grad for p in parameters if p.grad is not None]
        return not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))

    # the count of skipped steps survives a resume
    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.skipped = int(state["skipped"])
