"""The paper's ablation grid (Table 2): models x label budgets x seeds, with paired t-tests.

A thin wrapper over ``mtssl bench grid`` that defaults to the grid in
the paper's grid (``mtssl/bench/multimix_grid.toml``, installed with mtssl). Every option of ``mtssl bench grid`` works::

    python benchmarks/grid.py --out grid-out --size 64 --steps 200 --seeds 3 \\
        --seg-labels 10 --cls-labels 100 --models U-Net,Enc,MultiMix

Real data (never copied into the project)::

    python benchmarks/grid.py --out grid-real \\
        --cls-data kermany:../shared/data/chest_xray \\
        --seg-data pairs:../shared/data/lungs/images,../shared/data/lungs/masks

Without ``--cls-test``/``--seg-test`` each task is then scored on its runs' held-out validation split (the
paper grid's synthetic test sets do not apply to a model of other data).
"""
from __future__ import annotations

import sys

from mtssl.cli.app import main

if __name__ == "__main__":
    main(["bench", "grid", *sys.argv[1:]], prog_name="benchmarks/grid.py")
