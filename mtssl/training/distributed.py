"""Scale-out with ``torchrun``: one process per device, gradients averaged by DistributedDataParallel.

Every process builds the same model from the same seed (DDP also broadcasts
rank 0's weights), draws its own shard of every stream, and augments with
its own random stream. Only rank 0 writes files and prints. A resume
restores every process's own device (from LOCAL_RANK, never from the saved
config), generators and stream positions (:mod:`mtssl.run.state`).
Strategies and weightings reduce their statistics over the processes
through the :class:`~mtssl.interfaces.StrategyContext` made here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from typing import Sequence

from mtssl.interfaces import SSLStrategy, StrategyContext, Weighting


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device_name(self, requested: str) -> str:
        """Each process takes its own GPU (by LOCAL_RANK, also over a saved ``cuda:N``); CPU stays CPU."""
        if self.world > 1 and (requested == "auto" or requested.startswith("cuda")) and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return requested

    def share(self, value):
        """Rank 0's value, on every rank (e.g. the run directory's name)."""
        if self.world == 1:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over the process group, as a new tensor (every rank gets the same bits)."""
    total = tensor.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def strategy_context(rank: int, world: int, device: torch.device, seed: int = 0) -> StrategyContext:
    """What strategies and weightings learn about the run's processes (a copy instead of a collective alone)
    and the run's seed."""
    if world == 1:
        return StrategyContext(rank, world, device, seed=seed)
    return StrategyContext(rank, world, device, all_reduce_sum, seed)


def check_processes(strategies: Sequence[SSLStrategy], weighting: Weighting, world: int) -> None:
    """Refuse, in one line naming them, the components that cannot share their work between processes.

    A second network (cross pseudo supervision) and a strategy's own modules (:meth:`SSLStrategy.modules`,
    overridden) live beside the DistributedDataParallel model, and a gradient-based weighting differentiates
    each task itself, which DDP's single backward does not allow.
    """
    if world <= 1:
        return
    pieces = [f"strategy '{s.name}' (a second network)" for s in strategies if s.needs_peer()]
    pieces += [f"strategy '{s.name}' (modules of its own)" for s in strategies
               if type(s).modules is not SSLStrategy.modules]
    if weighting.needs_task_gradients:
        pieces.append(f"weighting '{weighting.name}' (a backward per task)")
    if pieces:
        raise ValueError(f"{' and '.join(pieces)} can run in one process only, not {world}; "
                         "run without torchrun or choose another")


def from_environment() -> Distributed:
    """Join the process group that ``torchrun`` describes in the environment (or run alone)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank)
