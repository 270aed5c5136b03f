"""State a strategy proposes in ``loss`` and keeps only when the trainer commits the step."""
from __future__ import annotations

from abc import abstractmethod

import torch

from mtssl.api import SSLStrategy

State = dict[str, torch.Tensor]


class StatefulStrategy(SSLStrategy):
    """An SSL strategy whose statistics persist across steps and ``--resume``.

    Subclasses name their tensors in :attr:`STATE`, give their starting values
    in :meth:`initial_state`, read :meth:`committed` in ``loss`` and hand the
    step's update to :meth:`propose`; :meth:`commit` keeps it, so a skipped
    step (never committed) leaves the statistics as they were.
    """

    STATE: tuple[str, ...] = ()

    def __init__(self, name: str, **options):
        super().__init__(name, **options)
        self.state: State | None = None
        self.proposed: State | None = None

    @abstractmethod
    def initial_state(self, classes: int, device: torch.device) -> State:
        """The statistics before the first applied step."""

    def committed(self, classes: int, device: torch.device) -> State:
        """The statistics as of the last applied step, on ``device``."""
        if self.state is None:
            return self.initial_state(classes, device)
        return {key: value.to(device) for key, value in self.state.items()}

    def propose(self, state: State) -> None:
        """This step's update of the statistics, kept by :meth:`commit` if the step is applied."""
        self.proposed = {key: value.detach() for key, value in state.items()}

    def commit(self):
        if self.proposed is not None:
            self.state, self.proposed = self.proposed, None

    def state_dict(self):
        if self.state is None:
            return {}
        return {key: value.clone() for key, value in self.state.items()}

    def load_state_dict(self, state):
        self.proposed = None
        if not state:
            self.state = None
            return
        if set(state) != set(self.STATE):
            raise ValueError(f"strategy '{self.name}' keeps {sorted(self.STATE)}, but the checkpoint holds "
                             f"{sorted(state)}")
        self.state = {key: state[key].clone() for key in self.STATE}
