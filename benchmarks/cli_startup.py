"""Wall time of the commands a user types first: ``mtssl --help``, ``mtssl train --help``, ``mtssl plugins``.

Each command runs as a fresh process (what a shell does), ``--repeat`` times; the median is reported
beside the same-run medians of a bare ``python -c pass`` (the interpreter's own start-up, the floor)
and ``python -c "import torch"`` (what any command that imports torch pays at least)::

    python benchmarks/cli_startup.py --repeat 15
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "mtssl --help": ["mtssl", "--help"],
    "mtssl train --help": ["mtssl", "train", "--help"],
    "mtssl plugins": ["mtssl", "plugins"],
}


def wall_times(argv: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    if shutil.which("mtssl") is None:
        sys.exit("the mtssl command is not on PATH: pip install -e . first")
    results = {}
    for rounds in range(2):  # the first round warms the file cache and is not reported
        results = {name: wall_times(argv, 1 if rounds == 0 else args.repeat) for name, argv in COMMANDS.items()}
    floor = statistics.median(results["python -c pass"])
    print(f"| command | median s | min s | minus bare python s |  (n = {args.repeat})")
    print("|---|---|---|---|")
    for name, times in results.items():
        median = statistics.median(times)
        print(f"| `{name}` | {median:.3f} | {min(times):.3f} | {median - floor:.3f} |")


if __name__ == "__main__":
    main()
