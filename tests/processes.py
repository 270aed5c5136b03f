"""Several CPU processes for the tests that need a process group (gloo), set up the way torchrun does it.

A worker is ``worker(rank, world, port, *args, results)``: it calls :func:`join_group` first and leaves what
the test checks in ``results[rank]``.
"""
from __future__ import annotations

import os
import socket
from typing import Any, Callable

import torch
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_group(rank: int, world: int, port: int) -> None:
    """The environment torchrun gives process ``rank`` (mtssl joins the group from it), single-threaded."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)


def run_processes(worker: Callable[..., None], *args: Any, world: int = 2) -> dict[int, Any]:
    """Run ``worker`` in ``world`` spawned processes; return what each left in ``results``."""
    results = mp.Manager().dict()
    mp.spawn(worker, args=(world, free_port(), *args, results), nprocs=world, join=True)
    return dict(results)
