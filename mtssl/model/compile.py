"""``--compile``: torch.compile the backbone and every head, in place.

``nn.Module.compile`` keeps the module objects and their parameter names,
so checkpoints of a compiled run load into an uncompiled model and back.
Compilation is lazy (the first step pays for it); on a CPU, Inductor needs a
C++ compiler, which is checked here so a missing one is a one-line error
instead of a traceback in the middle of the first step. Buffer donation in
compiled backward graphs is switched off for the process: the saliency
bridge's input gradient keeps the graph for the loss's backward.
"""
from __future__ import annotations

import os
import shutil

import torch
from torch import nn


def compile_model(model: nn.Module, device: torch.device) -> None:
    """Compile ``model.backbone`` and each of ``model.heads`` in place."""
    if device.type == "cpu":
        compiler = os.environ.get("CXX", "g++")
        if shutil.which(compiler) is None:
            raise ValueError(f"--compile on the CPU needs a C++ compiler for torch.compile; '{compiler}' was not "
                             "found (install one, set CXX, or leave --compile off)")
    # The saliency bridge differentiates the backbone with retain_graph=True before the loss's backward;
    # compiled backward graphs that donate their buffers refuse a retained graph.
    torch._functorch.config.donated_buffer = False
    model.backbone.compile()
    for head in model.heads.values():
        head.compile()
