"""Streaming a data set larger than the device-memory budget vs keeping it on the device.

A memory-mapped uint8 file of ``--n`` images (written directly, in chunks:
rendering 100,000 phantoms would take far longer than the benchmark) is the
unlabeled classification set of a MultiMix trainer. The placement rule
(``mtssl.data.placement``) decides against the ``--budget-mb`` cap; the
streamed stream gathers each batch from the memory map one step ahead, the
resident one indexes a tensor holding every image. Both streams take turns
in the same trainer, step by step, so other load hits both alike; reported
are images/s (median step) and the time the step waited for its batch.

    python benchmarks/streaming.py --n 100000 --size 128 --budget-mb 512 --steps 8
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import build_trainer, sync  # noqa: E402

from mtssl.data.placement import make_stream, streamed_tasks  # noqa: E402
from mtssl.data.prepare import task_seed  # noqa: E402


def write_memmap(path: Path, n: int, size: int, chunk: int = 4096) -> np.memmap:
    """``n`` uint8 noise images, written chunk by chunk (the step's cost does not depend on their content)."""
    images = np.lib.format.open_memmap(path, "w+", np.uint8, (n, size, size))
    rng = np.random.default_rng(0)
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        images[start:start + count] = rng.integers(0, 256, (count, size, size), dtype=np.uint8)
    images.flush()
    return np.load(path, mmap_mode="r")


class Waited:
    """Wraps a stream and adds up how long ``next()`` kept the step waiting."""

    def __init__(self, stream):
        self.stream, self.seconds = stream, 0.0

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def next(self):
        t0 = time.perf_counter()
        batch = self.stream.next()
        self.seconds += time.perf_counter() - t0
        return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--budget-mb", type=float, default=512)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--m", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as workdir:
        t0 = time.perf_counter()
        images = write_memmap(Path(workdir) / "images.npy", args.n, args.size)
        print(f"wrote {images.nbytes / 2**20:.0f} MB memory map in {time.perf_counter() - t0:.1f}s", flush=True)
        streamed_names = streamed_tasks({"cls": images.nbytes}, args.budget_mb * 2**20)
        assert streamed_names == {"cls"}, "the set must exceed the budget for this benchmark"
        trainer = build_trainer(args.size, args.m, args.device, workdir)
        rows = np.arange(args.n)
        seed = task_seed(trainer.config.seed, "cls") + 1
        t0 = time.perf_counter()
        streams = {
            "resident": Waited(make_stream(images, rows, None, args.m, seed, trainer.device, streamed=False)),
            "streamed": Waited(make_stream(images, rows, None, args.m, seed, trainer.device, streamed=True)),
        }
        print(f"device-resident copy of the set: {time.perf_counter() - t0:.1f}s", flush=True)
        times = {name: [] for name in streams}
        for step in range(args.steps + 1):  # the first round warms up
            for name, stream in streams.items():
                trainer.unlabeled["cls"] = stream
                stream.seconds = 0.0
                t0 = time.perf_counter()
                trainer.train_step()
                sync(trainer.device)
                if step:
                    times[name].append((time.perf_counter() - t0, stream.seconds))
        streams["streamed"].stream.close()
    per_step = 5 * args.m
    print(f"\n{args.n} images at {args.size} px ({images.nbytes / 2**20:.0f} MB), budget {args.budget_mb:.0f} MB, "
          f"device {trainer.device}, {args.steps} steps each (median), torch threads {torch.get_num_threads()}")
    print("| data | s/step | images/s | waited for the unlabeled batch, ms |\n|---|---|---|---|")
    rate = {}
    for name, t in times.items():
        s = statistics.median(x for x, _ in t)
        rate[name] = per_step / s
        print(f"| {name} | {s:.3f} | {rate[name]:.1f} | {1000 * statistics.median(w for _, w in t):.2f} |")
    print(f"\nstreamed / resident images/s: {rate['streamed'] / rate['resident']:.1%}")


if __name__ == "__main__":
    main()
