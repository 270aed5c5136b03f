"""Numeric precision of the training step: which autocast dtype, and a gradient scaler for float16.

``auto`` picks bfloat16 autocast only where the device runs it natively
(a CUDA device that reports bf16 support; a CPU whose flags show
``avx512_bf16`` or ``amx_bf16``). Elsewhere bfloat16 is emulated and slower
than float32, so ``auto`` stays in float32. float16 needs a gradient scaler
so that small gradients do not underflow; its state is part of the run state.
Losses always reduce in float32 (the trainer's total is a float32 tensor).
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where the file does not exist)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in {"flags", "Features"}:
            return set(value.split())
    return set()


def native_bf16(device: torch.device, flags: set[str] | None = None) -> bool:
    """Whether ``device`` computes bfloat16 in hardware (so autocast to it pays)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(set(NATIVE_BF16_CPU_FLAGS) & (cpu_flags() if flags is None else flags))
    return False


def resolve_precision(name: str, device: torch.device, flags: set[str] | None = None) -> str:
    """``auto`` -> ``bf16`` where native, else ``fp32``; an explicit choice is checked and kept."""
    if name not in PRECISIONS:
        raise ValueError(f"--precision: unknown precision '{name}'; choose one of {', '.join(PRECISIONS)}")
    if name == "auto":
        return "bf16" if native_bf16(device, flags) else "fp32"
    return name


class Precision:
    """Autocast context and (for fp16) gradient scaler of one run, for a resolved precision."""

    def __init__(self, name: str, device: torch.device):
        if name not in _DTYPES and name != "fp32":
            raise ValueError(f"precision must be resolved to fp32, bf16 or fp16 first, got '{name}'")
        self.name, self.device = name, device
        self.dtype = _DTYPES.get(name, torch.float32)
        self.scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None

    def autocast(self):
        """Autocast to the run's dtype for the forward passes; a no-op in fp32."""
        if self.name == "fp32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` times the fp16 loss scale (``loss`` itself otherwise); :meth:`step` divides it out again."""
        return loss if self.scaler is None else self.scaler.scale(loss)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, of the scaled loss in fp16."""
        self.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; in fp16 unscaled, skipped when a gradient overflowed, and the scale updated."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        self.backward(loss)
        self.step(optimizer)

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
