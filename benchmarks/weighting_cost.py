"""What each task weighting costs per MultiMix step, as a ratio to the plain sum (``equal``).

One trainer per weighting, all on the same synthetic data and settings, stepped in turn (one step of
each, then again), so that other load on the machine hits every weighting alike. The ratio of medians is
what to read; seconds depend on the machine.

    python benchmarks/weighting_cost.py --size 64 --steps 8
    python benchmarks/weighting_cost.py --device cuda --size 256 --weightings equal,pcgrad,mgda,mgda:ub=true
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import build_trainer, sync  # noqa: E402

WEIGHTINGS = ("equal,uncertainty,dwa,rlw,gradnorm,pcgrad,mgda,mgda:ub=true,cagrad,imtl,nash-mtl,aligned-mtl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--m", type=int, default=10)
    parser.add_argument("--steps", type=int, default=8, help="timed steps of each weighting")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--weightings", default=WEIGHTINGS, help="comma-separated specs; the first is the baseline")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    specs = args.weightings.split(",")
    times: dict[str, list[float]] = {spec: [] for spec in specs}
    with tempfile.TemporaryDirectory() as workdir:
        trainers = {spec: build_trainer(args.size, args.m, args.device, workdir, weighting=spec,
                                        name=f"w{i}") for i, spec in enumerate(specs)}
        for trainer in trainers.values():  # warm-up: first-step allocations and lazy imports
            trainer.train_step()
        for _ in range(args.steps):
            for spec, trainer in trainers.items():
                t0 = time.perf_counter()
                trainer.train_step()
                sync(trainer.device)
                times[spec].append(time.perf_counter() - t0)
    base = statistics.median(times[specs[0]])
    print(f"MultiMix step, {args.size} px, m = {args.m}, {args.device}, torch threads {torch.get_num_threads()}, "
          f"median of {args.steps} steps each")
    print(f"| weighting | s/step | x {specs[0]} |\n|---|---|---|")
    for spec, values in times.items():
        median = statistics.median(values)
        print(f"| `{spec}` | {median:.3f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
