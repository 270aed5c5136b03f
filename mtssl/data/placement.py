"""Where a task's training arrays live during a run: on the device, or streamed from the host.

Keeping every image on the device makes drawing a batch an index on the
device; that stops working when the arrays outgrow the device. Tasks whose
arrays do not fit the device-memory budget (largest first) stream their
batches from the host arrays (the memory-mapped decode cache) instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from mtssl.data.streams import BatchStream, HostBatchStream

AUTO_FRACTION = 0.5  # of free device memory (CUDA) or available RAM (CPU) that arrays may take


def _available_ram_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def budget_bytes(device: torch.device, budget_mb: float | None) -> float:
    """The byte budget for device-resident arrays: ``budget_mb`` if given, else a fraction of what is free."""
    if budget_mb is not None:
        if budget_mb < 0:
            raise ValueError(f"--device-memory-budget must be >= 0 MB, got {budget_mb}")
        return budget_mb * 2**20
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return AUTO_FRACTION * free
    available = _available_ram_bytes()
    return float("inf") if available is None else AUTO_FRACTION * available


def streamed_tasks(sizes: Mapping[str, int], budget: float) -> set[str]:
    """Tasks to stream so that the rest fit ``budget`` bytes: the largest ones go first."""
    streamed: set[str] = set()
    remaining = sum(sizes.values())
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        if remaining <= budget:
            break
        streamed.add(name)
        remaining -= sizes[name]
    return streamed


def _model_layout(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, S, S]`` -> ``[N, 1, S, S]``; arrays that already have channels stay."""
    return images.unsqueeze(1) if images.dim() == 3 else images


def make_stream(images: np.ndarray, rows: np.ndarray, targets: Callable[[np.ndarray], torch.Tensor] | None,
                batch_size: int, seed: int, device: torch.device, streamed: bool,
                rank: int = 0, world: int = 1, weights: np.ndarray | None = None) -> BatchStream:
    """A stream over ``images[rows]`` (and ``targets(rows)``): device-resident, or gathered from the host.

    Both kinds draw the same row sequence for a seed, so they give the same batches. ``weights`` (one per
    row) makes each pass a weighted draw with replacement instead of a shuffle.
    """
    rows = np.asarray(rows, dtype=np.int64)
    draw = None if weights is None else torch.as_tensor(np.asarray(weights, np.float64))
    if not streamed:
        target_tensor = None if targets is None else targets(rows).to(device)
        return BatchStream(_model_layout(torch.from_numpy(np.ascontiguousarray(images[rows]))).to(device),
                           target_tensor, batch_size, seed, rank, world, draw)

    def gather(index: np.ndarray):
        picked = rows[index]
        batch = _model_layout(torch.from_numpy(np.ascontiguousarray(images[picked])))
        return batch, None if targets is None else targets(picked)

    return HostBatchStream(len(rows), gather, batch_size, seed, device, rank, world, draw)
