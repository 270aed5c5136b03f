"""The paper's ablation grid (Table 2): models x label budgets x seeds, with paired t-tests.

A thin wrapper over ``mtssl bench grid`` that defaults to the grid in
``benchmarks/multimix_grid.toml``. Every option of ``mtssl bench grid`` works::

    python benchmarks/grid.py --out grid-out --size 64 --steps 200 --seeds 3 \\
        --seg-labels 10 --cls-labels 100 --models U-Net,Enc,MultiMix

Real data (never copied into the project)::

    python benchmarks/grid.py --out grid-real \\
        --cls-data kermany:/work/shared/data/chest_xray \\
        --seg-data pairs:/work/shared/data/lungs/images,/work/shared/data/lungs/masks
"""
from __future__ import annotations

import sys
from pathlib import Path

from mtssl.cli import main

DEFAULT_GRID = Path(__file__).with_name("multimix_grid.toml")

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--grid" not in args and not any(a.startswith("--grid=") for a in args):
        args = ["--grid", str(DEFAULT_GRID), *args]
    main(["bench", "grid", *args], prog_name="benchmarks/grid.py")
