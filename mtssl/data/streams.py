"""Endless shuffled batches from device-resident tensors.

A stream reshuffles with a fresh permutation every pass, so a short stream
(10 labeled masks) cycles while a long one (thousands of unlabeled images)
walks through. It can shard by rank for distributed runs and saves its
generator state so a resumed run continues the same sequence.
"""
from __future__ import annotations

import torch


class BatchStream:
    def __init__(self, images: torch.Tensor, targets: torch.Tensor | None, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1):
        if len(images) == 0:
            raise ValueError("cannot stream an empty set of images")
        self.images, self.targets = images, targets
        self.batch_size = batch_size
        self.rank, self.world = rank, world
        self.generator = torch.Generator().manual_seed(seed)
        self._order = torch.empty(0, dtype=torch.long)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def _refill(self) -> None:
        perm = torch.randperm(len(self.images), generator=self.generator)
        self._order = torch.cat([self._order, perm[self.rank::self.world]])
        self.epoch += 1

    def next(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        while len(self._order) < self.batch_size:
            self._refill()
        index, self._order = self._order[: self.batch_size], self._order[self.batch_size:]
        index = index.to(self.images.device)
        targets = None if self.targets is None else self.targets.index_select(0, index)
        return self.images.index_select(0, index), targets

    def state(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state(), "order": self._order.clone(),
                "epoch": torch.tensor(self.epoch)}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])
        self._order = state["order"].clone()
        self.epoch = int(state["epoch"])
