"""The EMA teacher: an exponential-moving-average copy of the model (Tarvainen & Valpola 2017).

Strategies ask for it by returning a decay from ``SSLStrategy.teacher_decay``
and planning views with ``model="teacher"``. The trainer updates it after
every optimizer step and runs it without autograd; its weights go into the
run-state checkpoint, so ``--resume`` continues bit-for-bit.
"""
from __future__ import annotations

import copy
from typing import Mapping

import torch
from torch import nn


class EMATeacher:
    """``teacher = a * teacher + (1 - a) * student`` with ``a = min(decay, 1 - 1 / (updates + 1))``.

    The warm-up ``1 - 1/(updates + 1)`` (Mean Teacher's reference code) keeps
    the teacher close to the freshly initialised student in the first steps
    instead of averaging it with random weights for ~1/(1-decay) steps.
    Buffers (e.g. normalisation statistics) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA teacher: decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.updates = torch.zeros((), dtype=torch.int64)

    def rate(self) -> float:
        """The averaging weight ``a`` the next update will use."""
        return min(self.decay, 1.0 - 1.0 / (int(self.updates) + 1))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        a = self.rate()
        for t, s in zip(self.module.parameters(), model.parameters()):
            t.mul_(a).add_(s.detach(), alpha=1.0 - a)
        for t, s in zip(self.module.buffers(), model.buffers()):
            t.copy_(s)
        self.updates += 1

    def __call__(self, *args, **kwargs):
        with torch.no_grad():
            return self.module(*args, **kwargs)

    def train(self, mode: bool = True) -> "EMATeacher":
        self.module.train(mode)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"updates": self.updates.clone(), **{f"model.{k}": v for k, v in self.module.state_dict().items()}}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.updates = state["updates"].clone().to(torch.int64)
        self.module.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})


def requested_decay(strategies) -> float | None:
    """The one EMA decay the run's strategies ask for (None: no teacher); different decays are an error."""
    asked = [(s.name, s.teacher_decay()) for s in strategies if s.teacher_decay() is not None]
    if len({decay for _, decay in asked}) > 1:
        listing = ", ".join(f"{name} {decay}" for name, decay in asked)
        raise ValueError(f"strategies ask for EMA teachers with different decays ({listing}); "
                         "give them the same ema=... option")
    return asked[0][1] if asked else None
