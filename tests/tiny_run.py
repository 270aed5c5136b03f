"""One tiny trained run shared by the evaluation, prediction and report tests (trained once per test process)."""
from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from mtssl.cli.app import main

_RUNS: dict[str, Path] = {}

TRAIN_ARGS = ["train", "--task", "cls:fixmatch", "--task", "seg:kl", "--bridge", "saliency", "--size", "32",
              "--steps", "3", "--eval-every", "1", "--batch-size", "4",
              "--cls-data", "synthetic:n=40", "--cls-labels", "10", "--cls-test", "synthetic:n=12,domain=2",
              "--seg-data", "synthetic:n=24", "--seg-labels", "5", "--quiet"]


def tiny_run(tmp_path_factory) -> Path:
    """Train (once) a 3-step cls+seg run with the saliency bridge on synthetic data; return its directory."""
    if "run" not in _RUNS:
        out = tmp_path_factory.mktemp("tiny-run")
        result = CliRunner().invoke(main, TRAIN_ARGS + ["--out", str(out), "--name", "run"])
        assert result.exit_code == 0, result.output
        _RUNS["run"] = out / "run"
    return _RUNS["run"]
