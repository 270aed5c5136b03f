"""How much of the shared encoder's gradient each loss term supplies (``--log-grad-shares N``).

A term whose share is ~0 trains nothing the other tasks see; e.g. a consistency
term weighted so lightly that its gradient vanishes beside the supervised ones.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch


def gradient_shares(terms: Mapping[str, torch.Tensor], params: Sequence[torch.Tensor]) -> dict[str, float]:
    """``grad_norm/TERM`` = ||d TERM / d params|| and ``grad_share/TERM`` = that norm over the sum of all terms' norms.

    Each term is differentiated on its own (``torch.autograd.grad`` with the
    graph kept), so parameter ``.grad`` fields are not touched.
    """
    params = [p for p in params if p.requires_grad]
    norms: dict[str, float] = {}
    for name, term in terms.items():
        if not term.requires_grad:
            norms[name] = 0.0
            continue
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        squared = sum((g.float().pow(2).sum() for g in grads if g is not None), torch.zeros((), device=term.device))
        norms[name] = float(squared.sqrt())
    total = sum(norms.values())
    logs = {f"grad_norm/{k}": v for k, v in norms.items()}
    logs.update({f"grad_share/{k}": (v / total if total > 0 else 0.0) for k, v in norms.items()})
    return logs
