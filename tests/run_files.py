"""Reading what a run committed, for tests that compare two runs bit for bit."""
from __future__ import annotations

from pathlib import Path

import torch

from mtssl.run import checkpoint


def state_tensors(run: Path) -> dict[str, torch.Tensor]:
    """The weights (``w/...``) and every tensor of the committed training state (``s/...``)."""
    folder = run / "checkpoints"
    weights, meta = checkpoint.load(folder / "last.safetensors")
    state, _ = checkpoint.load(folder / "state" / meta["resume"]["states"][0])
    return {**{f"w/{k}": v for k, v in weights.items()}, **{f"s/{k}": v for k, v in state.items()}}
