"""A weighting's own random stream: seeded from the run, saved with it, advanced only by applied steps.

Drawing from torch's global generator would shift every other random stream of the run (augmentations,
dropout) by however many numbers the weighting took. A private generator leaves them alone; it is seeded
from the run's ``--seed`` and the weighting's name, and its state is part of the weighting's
``state_dict``, so ``--resume`` continues the same sequence. As for any weighting state, a step's draws
are proposed and count only once the step is committed: a step the divergence guard rejects draws again
from where the last applied step left off.
"""
from __future__ import annotations

import hashlib

import torch


def stream_seed(seed: int, name: str) -> int:
    """A 63-bit seed for the stream called ``name`` of the run seeded ``seed`` (stable across processes)."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class CommittedGenerator:
    """A CPU ``torch.Generator`` whose state moves on only at :meth:`commit`."""

    def __init__(self, seed: int, name: str):
        self.generator = torch.Generator().manual_seed(stream_seed(seed, name))
        self.committed = self.generator.get_state()
        self.drawn = False

    def draw(self) -> torch.Generator:
        """The generator, rewound to the committed state, for this step's draws."""
        self.generator.set_state(self.committed)
        self.drawn = True
        return self.generator

    def commit(self) -> None:
        if self.drawn:
            self.committed, self.drawn = self.generator.get_state(), False

    def state(self) -> torch.Tensor:
        return self.committed.clone()

    def load_state(self, state: torch.Tensor) -> None:
        self.committed = state.detach().to("cpu", torch.uint8).clone()
        self.generator.set_state(self.committed)
        self.drawn = False
