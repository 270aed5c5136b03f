"""Endless shuffled batches: from device-resident tensors, or streamed from host arrays one step ahead.

A stream reshuffles with a fresh permutation every pass, so a short stream
(10 labeled masks) cycles while a long one (thousands of unlabeled images)
walks through. It can shard by rank for distributed runs and saves its
generator state so a resumed run continues the same sequence.

:class:`BatchStream` holds its images on the device. :class:`HostBatchStream`
walks the same index sequence but gathers each batch from host arrays (the
memory-mapped decode cache), pins it on CUDA and copies it with
``non_blocking=True`` in a background thread while the previous step runs, for
data sets larger than the device's memory budget. For one seed both give the
same batches.

Given ``weights`` (one per row, e.g. a class-balanced labeled stream), each
pass instead draws as many rows with replacement, in proportion to them.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch

Batch = tuple[torch.Tensor, "torch.Tensor | None"]


class BatchStream:
    def __init__(self, images: torch.Tensor, targets: torch.Tensor | None, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1, weights: torch.Tensor | None = None):
        self.images, self.targets = images, targets
        self._init_order(len(images), batch_size, seed, rank, world, weights)

    def _init_order(self, count: int, batch_size: int, seed: int, rank: int, world: int,
                    weights: torch.Tensor | None = None) -> None:
        if count == 0:
            raise ValueError("cannot stream an empty set of images")
        if weights is not None and len(weights) != count:
            raise ValueError(f"{len(weights)} draw weights for a stream of {count} images")
        self.weights = weights
        self.count = count
        self.batch_size = batch_size
        self.rank, self.world = rank, world
        self.generator = torch.Generator().manual_seed(seed)
        self._order = torch.empty(0, dtype=torch.long)
        self.epoch = 0

    def __len__(self) -> int:
        return self.count

    def _refill(self) -> None:
        if self.weights is None:
            perm = torch.randperm(self.count, generator=self.generator)
        else:
            perm = torch.multinomial(self.weights, self.count, replacement=True, generator=self.generator)
        self._order = torch.cat([self._order, perm[self.rank::self.world]])
        self.epoch += 1

    def take_index(self) -> torch.Tensor:
        """The next batch's row indices (host tensor); advances the stream."""
        while len(self._order) < self.batch_size:
            self._refill()
        index, self._order = self._order[: self.batch_size], self._order[self.batch_size:]
        return index

    def next(self) -> Batch:
        index = self.take_index().to(self.images.device)
        targets = None if self.targets is None else self.targets.index_select(0, index)
        return self.images.index_select(0, index), targets

    def state(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state(), "order": self._order.clone(),
                "epoch": torch.tensor(self.epoch)}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])
        self._order = state["order"].clone()
        self.epoch = int(state["epoch"])


class HostBatchStream(BatchStream):
    """The same batches as :class:`BatchStream`, gathered on the host and copied to the device one step ahead.

    ``gather(rows)`` returns the uint8 images (and targets, or None) of the
    given row indices as CPU tensors. The next batch's indices are drawn as
    soon as a batch is handed out, and its gather and copy run in a
    background thread; :meth:`state` reports the stream as it was before
    that look-ahead draw, so a checkpoint resumes exactly where training was.
    """

    def __init__(self, count: int, gather: Callable[[np.ndarray], Batch], batch_size: int, seed: int,
                 device: torch.device, rank: int = 0, world: int = 1, weights: torch.Tensor | None = None):
        self._init_order(count, batch_size, seed, rank, world, weights)
        self.gather, self.device = gather, torch.device(device)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtssl-stream")
        self._pending: Future | None = None
        self._before_pending: dict[str, torch.Tensor] | None = None
        self._copy_stream = None

    def _fetch(self, index: torch.Tensor) -> Batch:
        images, targets = self.gather(index.numpy())
        if self.device.type == "cuda":
            if self._copy_stream is None:
                self._copy_stream = torch.cuda.Stream(self.device)
            with torch.cuda.stream(self._copy_stream):  # copies overlap the step running on the main stream
                images = images.pin_memory().to(self.device, non_blocking=True)
                targets = None if targets is None else targets.pin_memory().to(self.device, non_blocking=True)
            self._copy_stream.synchronize()  # waits in this thread, so the step that uses the batch never does
        elif self.device.type != "cpu":
            images = images.to(self.device)
            targets = None if targets is None else targets.to(self.device)
        return images, targets

    def _prefetch(self) -> None:
        self._before_pending = super().state()
        self._pending = self._pool.submit(self._fetch, self.take_index())

    def next(self) -> Batch:
        if self._pending is None:
            self._prefetch()
        batch = self._pending.result()
        if self.device.type == "cuda":  # made on the copy stream, used on the main one
            for tensor in batch:
                if tensor is not None:
                    tensor.record_stream(torch.cuda.current_stream(self.device))
        self._prefetch()
        return batch

    def _drop_pending(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def state(self) -> dict[str, torch.Tensor]:
        if self._pending is not None:
            return {k: v.clone() for k, v in self._before_pending.items()}
        return super().state()

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self._drop_pending()
        super().load_state(state)

    def close(self) -> None:
        self._drop_pending()
        self._pool.shutdown(wait=True)

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)
