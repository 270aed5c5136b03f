"""CPU threads for torch's operators, and noticing a machine that other work already keeps busy.

torch starts one intra-op thread per core. When other processes already
occupy those cores, the threads wait on each other at every operator: on two
busy cores one thread ran a MultiMix step 4.3 times faster than two.
"""
from __future__ import annotations

import os

import torch


def apply_threads(threads: int | None) -> None:
    """Set torch's intra-op threads to ``threads`` (None: leave torch's default)."""
    if threads is not None:
        torch.set_num_threads(threads)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def busy_machine_warning(threads: int | None) -> str | None:
    """One line when the 1-minute load average already exceeds the usable cores while torch would run several
    threads of its own choice (``--threads`` not set)."""
    if threads is not None or torch.get_num_threads() == 1:
        return None
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not offered on this system
        return None
    cores = usable_cores()
    if load <= cores:
        return None
    return (f"the machine is busy (1-minute load average {load:.1f} on {cores} core(s)); torch's "
            f"{torch.get_num_threads()} threads will compete with that work: --threads 1 is often much faster")
