"""Training-step speed: mtssl's MultiMix step against a paper-faithful reference step.

Both run in one process on the same decoded synthetic images (the arrays of
the mtssl trainer feed the reference's streams), alternating step by step so
that other load on the machine hits both alike. Reported per image size:
seconds per step, images per step / second (5 streams x m images), the
split of a step into drawing batches, augmenting and the rest (forward,
saliency, backward, Adam), and peak memory.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` around the timed steps.
On CPU, tracemalloc cannot see torch's allocations, so each implementation
runs alone in a fresh subprocess and we report how far the peak resident set
(``VmHWM``, reset after setup through ``/proc/self/clear_refs``; ``ru_maxrss``
where that is not possible) grew over three steps beyond the resident set after setup. That
includes optimizer state and autograd buffers, and it is coarse (page
granularity, allocator caching), but it is what the process really took.

Throughput: the FLOPs of one step of each (``torch.utils.flop_counter``) over
its median time, against a large matrix product in the step's precision on the
same device (bf16 for ``--precision bf16``). The ratio of the two steps' FLOPs
is the work mtssl saves; divided by the reference's fraction of the matrix
product's rate it gives the largest speed-up this design can reach there.

    python benchmarks/speed.py --sizes 64,128,256 --m 10
    python benchmarks/speed.py --device cuda --sizes 256 --precision bf16
    python benchmarks/speed.py --sizes 128 --profile   # where mtssl's step spends its time
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_step import ReferenceStep, Streams  # noqa: E402

from mtssl.run.config import RunConfig, TaskData  # noqa: E402
from mtssl.plugins import PluginHost  # noqa: E402
from mtssl.run.rundir import RunDir  # noqa: E402
from mtssl.model.network import to_float  # noqa: E402
from mtssl.training.trainer import Trainer  # noqa: E402

MULTIMIX = {"tasks": ["cls:fixmatch", "seg:kl"], "bridges": ["saliency"]}


def build_trainer(size: int, m: int, device: str, workdir: str, precision: str = "fp32",
                  compile: bool = False, weighting: str = "equal", name: str | None = None) -> Trainer:
    config = RunConfig(**MULTIMIX, size=size, batch_size=m, steps=10**6, eval_every=10**6, save_every=10**6,
                       device=device, out=workdir, name=name or f"speed-{size}", precision=precision,
                       compile=compile, weighting=weighting,
                       data={"cls": TaskData(train="synthetic:n=160", labels=50),
                             "seg": TaskData(train="synthetic:n=60,domain=1", labels=10)})
    return Trainer(config, PluginHost(), RunDir.create(config))


def shared_streams(trainer: Trainer) -> Streams:
    """The reference draws from exactly the images and splits the mtssl trainer uses."""
    cls, seg = trainer.data["cls"], trainer.data["seg"]
    cls_unlabeled = cls.split.unlabeled if len(cls.split.unlabeled) else cls.split.labeled
    seg_unlabeled = seg.split.unlabeled if len(seg.split.unlabeled) else seg.split.labeled
    grey = 0  # the trainer keeps [N, C, S, S] arrays; the paper's step reads one grey channel, [N, S, S]
    return Streams(cls.train.images[cls.split.labeled][:, grey], cls.train.targets[cls.split.labeled],
                   seg.train.images[seg.split.labeled][:, grey], seg.train.targets[seg.split.labeled][:, grey],
                   cls.train.images[cls_unlabeled][:, grey], seg.train.images[seg_unlabeled][:, grey])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def mtssl_step(trainer: Trainer) -> float:
    trainer.train_step()  # the trainer's own precision decides autocast
    sync(trainer.device)
    return 0.0


def mtssl_phases(trainer: Trainer, repeats: int = 5) -> dict[str, float]:
    """Seconds per step spent drawing the five batches and augmenting them, measured on their own."""
    streams = [*trainer.labeled.values(), *trainer.unlabeled.values()]
    t0 = time.perf_counter()
    for _ in range(repeats):
        batches = [s.next() for s in streams]
    sync(trainer.device)
    draw = (time.perf_counter() - t0) / repeats
    images = {name: to_float(trainer.labeled[name].next()[0]) for name in trainer.labeled}
    masks = trainer.labeled["seg"].next()[1].float()
    unlabeled = to_float(trainer.unlabeled["cls"].next()[0])
    aug = trainer.augmenter
    t0 = time.perf_counter()
    for _ in range(repeats):
        aug(images["cls"], "weak")
        aug(images["seg"], "weak", masks)
        aug(unlabeled, "weak")
        aug(unlabeled, "strong")
    sync(trainer.device)
    del batches
    return {"draw": draw, "augment": (time.perf_counter() - t0) / repeats}


def step_flops(step: Callable[[], object]) -> int:
    """FLOPs of one call of a training step (forward, saliency, backward), by torch's FLOP formulas.

    A dispatch mode of our own rather than ``FlopCounterMode``: the latter's
    module hooks refuse ``autograd.grad`` with respect to the input, which the
    saliency bridge needs.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                Count.total += formula(*args, **kwargs, out_val=out)
            return out

    with Count():
        step()
    return Count.total


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 5) -> float:
    """TFLOP/s of a large square matrix product: the device's practical peak for this precision."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e12


def time_pair(size: int, m: int, steps: int, warmup: int, device: str, precision: str) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        trainer = build_trainer(size, m, device, workdir, precision)
        reference = ReferenceStep(shared_streams(trainer), m=m, device=str(trainer.device))
        for _ in range(warmup):
            reference()
            mtssl_step(trainer)
        flops, reference_flops = step_flops(trainer.train_step), step_flops(reference)
        reference.times.__init__()
        ours, theirs = [], []
        if trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(steps):
            t0 = time.perf_counter()
            reference()
            theirs.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            mtssl_step(trainer)
            ours.append(time.perf_counter() - t0)
        phases = mtssl_phases(trainer)
        peak = matmul_tflops(trainer.device, trainer.precision.dtype)
    rt = reference.times
    per_step = len(theirs)
    return {
        "size": size, "m": m, "images_per_step": 5 * m, "device": str(trainer.device),
        "precision": trainer.precision.name, "step_tflop": flops / 1e12,
        "achieved_tflops": flops / 1e12 / statistics.median(ours), "matmul_tflops": peak,
        "reference_step_tflop": reference_flops / 1e12,
        "reference_achieved_tflops": reference_flops / 1e12 / statistics.median(theirs),
        "reference": {"s_per_step": statistics.median(theirs), "draw": rt.draw / per_step,
                      "augment": rt.augment / per_step, "compute": rt.compute / per_step},
        "mtssl": {"s_per_step": statistics.median(ours), "draw": phases["draw"], "augment": phases["augment"],
                  "compute": statistics.median(ours) - phases["draw"] - phases["augment"]},
    }


def peak_memory_mb(which: str, size: int, m: int, device: str, precision: str) -> float:
    """Run one implementation alone (fresh process on CPU) and report its peak memory growth in MB."""
    if torch.device(device if device != "auto" else "cpu").type == "cuda":
        with tempfile.TemporaryDirectory() as workdir:
            trainer = build_trainer(size, m, device, workdir, precision)
            step = ReferenceStep(shared_streams(trainer), m=m, device=str(trainer.device)) \
                if which == "reference" else (lambda: mtssl_step(trainer))
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            for _ in range(3):
                step()
            return (torch.cuda.max_memory_allocated() - base) / 2**20
    out = subprocess.run([sys.executable, __file__, "--memory-of", which, "--sizes", str(size), "--m", str(m),
                          "--device", device, "--threads", str(torch.get_num_threads()), "--precision", precision],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def _status_kib(key: str) -> int:
    match = re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match.group(1)) if match else 0


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0), so setup's own peak does not hide the steps'."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_child(which: str, size: int, m: int, device: str, precision: str) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        trainer = build_trainer(size, m, device, workdir, precision)
        step = ReferenceStep(shared_streams(trainer), m=m, device=str(trainer.device)) \
            if which == "reference" else (lambda: mtssl_step(trainer))
        if reset_peak_rss():
            base = _status_kib("VmRSS")
            for _ in range(3):
                step()
            peak = _status_kib("VmHWM")
        else:  # ru_maxrss cannot be reset: the growth shows only where the steps exceed setup's peak
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            for _ in range(3):
                step()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mb": (peak - base) / 1024}))  # both are in KiB on Linux


def profile_mtssl(size: int, m: int, device: str, precision: str, rows: int = 20) -> str:
    from torch.profiler import ProfilerActivity, profile

    with tempfile.TemporaryDirectory() as workdir:
        trainer = build_trainer(size, m, device, workdir, precision)
        mtssl_step(trainer)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(2):
                mtssl_step(trainer)
    key = "self_cuda_time_total" if trainer.device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def markdown(results: list[dict]) -> str:
    lines = ["| size | step | s/step | images/s | draw ms | augment ms | model+optimizer ms | peak MB | "
             "mtssl speed-up |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ratio = r["reference"]["s_per_step"] / r["mtssl"]["s_per_step"]
        for name in ("reference", "mtssl"):
            x = r[name]
            mem = r.get("memory", {}).get(name)
            lines.append(f"| {r['size']} | {name} | {x['s_per_step']:.3f} | {r['images_per_step'] / x['s_per_step']:.1f} "
                         f"| {1000 * x['draw']:.1f} | {1000 * x['augment']:.1f} | {1000 * x['compute']:.1f} | "
                         f"{'—' if mem is None else f'{mem:.0f}'} | {f'{ratio:.2f}x' if name == 'mtssl' else ''} |")
    return "\n".join(lines)


def throughput_markdown(results: list[dict]) -> str:
    """FLOPs per step of both, and how fast each runs against a large matrix product on the device.

    The work ratio (reference FLOPs over mtssl FLOPs) divided by the reference's
    fraction of the matrix-product rate is the speed-up mtssl would reach if its
    whole step ran at that rate: the ceiling for this design on this device.
    """
    lines = ["| size | reference TFLOP per step | mtssl TFLOP per step | work ratio | reference TFLOP/s | "
             "mtssl TFLOP/s | large-matmul TFLOP/s | reference fraction | mtssl fraction | speed-up ceiling |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        work = r["reference_step_tflop"] / r["step_tflop"]
        ref_fraction = r["reference_achieved_tflops"] / r["matmul_tflops"]
        lines.append(f"| {r['size']} | {r['reference_step_tflop']:.3f} | {r['step_tflop']:.3f} | {work:.2f}x | "
                     f"{r['reference_achieved_tflops']:.3f} | {r['achieved_tflops']:.3f} | {r['matmul_tflops']:.2f} | "
                     f"{ref_fraction:.1%} | {r['achieved_tflops'] / r['matmul_tflops']:.1%} | "
                     f"{work / ref_fraction:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64,128,256")
    parser.add_argument("--m", type=int, default=10, help="images per stream (paper: 10)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per implementation")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16", "fp16"],
                        help="mtssl's --precision for its step (default fp32); the reference stays in float32 "
                        "as in the paper")
    parser.add_argument("--amp", action="store_true", help="same as --precision bf16")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of mtssl's step")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice). On a "
                        "shared CPU, 1 avoids thread barriers stalling behind other processes")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--memory-of", choices=["reference", "mtssl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    precision = "bf16" if args.amp else args.precision
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_of:
        memory_child(args.memory_of, sizes[0], args.m, args.device, precision)
        return
    results = []
    for size in sizes:
        result = time_pair(size, args.m, args.steps, args.warmup, args.device, precision)
        if not args.no_memory:
            result["memory"] = {w: peak_memory_mb(w, size, args.m, args.device, precision)
                                for w in ("reference", "mtssl")}
        results.append(result)
        print(f"{size}px: reference {result['reference']['s_per_step']:.3f}s, "
              f"mtssl {result['mtssl']['s_per_step']:.3f}s, "
              f"ratio {result['reference']['s_per_step'] / result['mtssl']['s_per_step']:.2f}x", flush=True)
    print()
    print(f"device {results[0]['device']}, m = {args.m}, {args.steps} timed steps (median), "
          f"torch threads {torch.get_num_threads()}, mtssl precision {results[0]['precision']}")
    print(markdown(results))
    print()
    print(throughput_markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.profile:
        print()
        print(profile_mtssl(sizes[-1], args.m, args.device, precision))


if __name__ == "__main__":
    main()
