"""How hard is the built-in synthetic data? Baselines at the paper's smallest budgets.

Trains a supervised U-Net on 10 masks, a supervised classifier (Enc) on 100
labels and the same classifier with FixMatch (Enc-SSL), then scores each on
300 fresh synthetic images in the training domain and in a shifted domain,
through the same evaluation as ``mtssl eval``.
Run:

    python benchmarks/synthetic_baselines.py --size 64 --steps 300 --seeds 3
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np

from mtssl.run.config import RunConfig, TaskData
from mtssl.evaluation.evaluate import evaluate_run
from mtssl.plugins import PluginHost
from mtssl.run.rundir import RunDir
from mtssl.training.trainer import Trainer


def score(run: RunDir, host: PluginHost, task: str, metric: str, spec: str) -> float:
    """Mean ``metric`` of the run's last checkpoint on test source ``spec`` (the ``mtssl eval`` path)."""
    result = evaluate_run(run.path, tests={task: [spec]}, checkpoint="last", host=host)
    return float(result[task][spec]["aggregate"][metric]["mean"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    host = PluginHost()
    rows = []
    models = (("U-Net", "seg", "seg", 10), ("Enc", "cls", "cls", 100), ("Enc-SSL", "cls:fixmatch", "cls", 100))
    for model, task_spec, task_name, labels in models:
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as out:
                config = RunConfig(tasks=[task_spec], size=args.size, steps=args.steps, seed=seed, out=out,
                                   eval_every=args.steps, save_every=args.steps,
                                   data={task_name: TaskData(labels=labels)})
                trainer = Trainer(config, host, RunDir.create(config))
                started = time.perf_counter()
                trainer.fit()
                elapsed = time.perf_counter() - started
                metric = "dice" if task_name == "seg" else "acc"
                in_domain = score(trainer.run, host, task_name, metric, "synthetic:n=300,domain=0")
                cross = score(trainer.run, host, task_name, metric, "synthetic:n=300,domain=1")
                rows.append({"model": model, "labels": labels, "seed": seed, "metric": metric, "in_domain": in_domain,
                             "cross_domain": cross, "train_s": elapsed})
                print(json.dumps(rows[-1]))
    for model, *_ in models:
        picked = [r for r in rows if r["model"] == model]
        ins = np.array([r["in_domain"] for r in picked])
        cross = np.array([r["cross_domain"] for r in picked])
        print(f"{model} ({picked[0]['labels']} labels, {args.size}px, {args.steps} steps): "
              f"{picked[0]['metric']} in-domain {ins.mean():.3f} ± {ins.std():.3f}, "
              f"cross-domain {cross.mean():.3f} ± {cross.std():.3f}")


if __name__ == "__main__":
    main()
