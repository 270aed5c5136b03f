"""``--compile`` on or off: wall time of a whole MultiMix run, compilation included.

Two trainers (one compiled, one eager) on the same data alternate step by
step in one process, so load from other processes hits both alike. Reported:
total seconds for all steps (the compiled run's first steps include
compilation), the first step of each, and the median of the last half.

    python benchmarks/compile_speed.py --sizes 64,128 --steps 300
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
from speed import build_trainer  # noqa: E402


def measure(size: int, m: int, steps: int, device: str) -> dict:
    times = {False: [], True: []}
    with tempfile.TemporaryDirectory() as workdir:
        trainers = {flag: build_trainer(size, m, device, workdir, compile=flag) for flag in (False, True)}
        for _ in range(steps):
            for flag, trainer in trainers.items():
                t0 = time.perf_counter()
                trainer.train_step()
                if trainer.device.type == "cuda":
                    torch.cuda.synchronize()
                times[flag].append(time.perf_counter() - t0)
    out = {"size": size, "steps": steps}
    for flag, t in times.items():
        out["compiled" if flag else "eager"] = {"total_s": sum(t), "first_s": t[0],
                                                "steady_s": statistics.median(t[len(t) // 2:])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--m", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print("| size | steps | run | total s | first step s | steady s/step |\n|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        r = measure(size, args.m, args.steps, args.device)
        for name in ("eager", "compiled"):
            x = r[name]
            print(f"| {size} | {r['steps']} | {name} | {x['total_s']:.1f} | {x['first_s']:.2f} | {x['steady_s']:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
