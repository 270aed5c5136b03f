"""Decoded-image cache and data-time numbers on real folders (never copied into the project).

    python benchmarks/data_cache.py --cls-data kermany:../shared/data/chest_xray \\
        --seg-data pairs:../shared/data/lungs/images,../shared/data/lungs/masks --size 64 --steps 20

Reports: cache build throughput (images/s) into a fresh cache folder, the
time to open the same data again from the cache, Trainer start-up cold and
warm, and per step the time spent drawing and augmenting batches
(``Trainer.gather_views``) against the whole ``Trainer.train_step``.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from mtssl.run.config import RunConfig, TaskData
from mtssl.data.prepare import load_arrays, open_source
from mtssl.plugins import PluginHost
from mtssl.run.rundir import RunDir
from mtssl.training.trainer import Trainer
from mtssl_plugins.targets import CLASS_LABEL, binary_masks


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cls-data", required=True)
    parser.add_argument("--seg-data", required=True)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    host = PluginHost()
    cache = tempfile.mkdtemp(prefix="mtssl-cache-bench-")
    for spec, target in ((args.cls_data, CLASS_LABEL), (args.seg_data, binary_masks())):
        source, t_open = timed(lambda: open_source(host, spec, target, 0))
        arrays, t_build = timed(lambda: load_arrays(source, args.size, cache_dir=cache))
        _, t_again = timed(lambda: load_arrays(open_source(host, spec, target, 0), args.size, cache_dir=cache))
        print(f"{spec}: {len(arrays)} images · listing {t_open:.2f}s · cache build {t_build:.1f}s "
              f"({len(arrays) / t_build:.0f} images/s) · reopen from cache {t_again:.2f}s")

    config = RunConfig(tasks=["cls:fixmatch", "seg:kl"], bridges=["saliency"], size=args.size, steps=args.steps,
                       out=tempfile.mkdtemp(), cache_dir=tempfile.mkdtemp(prefix="mtssl-cache-bench-"),
                       data={"cls": TaskData(args.cls_data, labels=100), "seg": TaskData(args.seg_data, labels=10)})
    _, t_cold = timed(lambda: Trainer(config, host, RunDir.create(config)))
    trainer, t_warm = timed(lambda: Trainer(config, host, RunDir.create(config)))
    print(f"Trainer start-up: cold cache {t_cold:.1f}s · warm cache {t_warm:.1f}s")

    trainer.train_step()  # warm-up
    data_time = step_time = 0.0
    for _ in range(args.steps):
        _, dt = timed(trainer.gather_views)
        _, st = timed(trainer.train_step)
        data_time, step_time = data_time + dt, step_time + st
    print(f"per step ({trainer.device}, {torch.get_num_threads()} threads): drawing + augmenting "
          f"{1000 * data_time / args.steps:.0f} ms of {1000 * step_time / args.steps:.0f} ms "
          f"({data_time / step_time:.0%})")


if __name__ == "__main__":
    main()
