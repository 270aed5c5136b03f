"""mtssl's instance norm and dropout against torch's, inside one MultiMix trainer, step by step.

The trainer's blocks are switched between ``torch.nn.InstanceNorm2d`` /
``torch.nn.Dropout`` and mtssl's own layers (``mtssl_plugins.layers``: group
norm with one group per channel, a dropout mask from 16-bit draws) before
every step, so both see the same machine load; neither layer holds weights.

    python benchmarks/layers_speed.py --size 128 --steps 6
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import build_trainer  # noqa: E402

from mtssl_plugins import layers  # noqa: E402

TORCH_LAYER = {layers.InstanceNorm2d: nn.InstanceNorm2d, layers.Dropout: nn.Dropout}
MTSSL_LAYER = {torch_class: ours for ours, torch_class in TORCH_LAYER.items()}


def switch(model: nn.Module, table: dict[type, type]) -> None:
    """Give every layer whose exact class is a key of ``table`` the class it maps to.

    mtssl's layers subclass torch's and add no state, so changing the class
    keeps every setting (p, eps, affine) and swaps only ``forward``.
    """
    for layer in model.modules():
        if type(layer) in table:
            layer.__class__ = table[type(layer)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6, help="timed steps of each")
    parser.add_argument("--m", type=int, default=10)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    times: dict[str, list[float]] = {"torch layers": [], "mtssl layers": []}
    with tempfile.TemporaryDirectory() as workdir:
        trainer = build_trainer(args.size, args.m, "cpu", workdir)
        trainer.train_step()
        for _ in range(args.steps):
            for label, table in (("torch layers", TORCH_LAYER), ("mtssl layers", MTSSL_LAYER)):
                switch(trainer.model, table)
                t0 = time.perf_counter()
                trainer.train_step()
                times[label].append(time.perf_counter() - t0)
    print(f"{args.size} px, m = {args.m}, torch threads {torch.get_num_threads()}, median of {args.steps} steps each")
    print("| layers | s/step |\n|---|---|")
    for label, values in times.items():
        print(f"| {label} | {statistics.median(values):.3f} |")
    speedup = statistics.median(times["torch layers"]) / statistics.median(times["mtssl layers"])
    print(f"\nmtssl layers: {speedup:.2f}x")


if __name__ == "__main__":
    main()
