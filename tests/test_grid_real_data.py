"""A grid over the user's own data: without --TASK-test each task is scored on its run's held-out validation
split (not on the paper grid's synthetic test sets), and the console and results.md say so."""
from __future__ import annotations

import json

from conftest import flat, invoke
from data_trees import class_tree, pairs_tree
from mtssl.bench.grid import paper_grid
from mtssl.cli.bench import apply_options


def grid_data(*data_args: str) -> dict:
    grid = apply_options(paper_grid(), (), None, None, None, data_args, {})
    return {task: data.test for task, data in grid.data.items()}


def test_own_training_data_drops_only_the_paper_grids_synthetic_test_sets():
    paper = grid_data()
    assert paper["cls"] == ["synthetic:n=300", "synthetic:n=300,domain=2"]
    assert grid_data("--cls-data", "folders:scans")["cls"] == []  # no test set left: the held-out split
    assert grid_data("--cls-data", "folders:scans", "--cls-test", "folders:held")["cls"] == ["folders:held"]
    assert grid_data("--cls-data", "synthetic:n=500")["cls"] == paper["cls"]  # synthetic tests fit synthetic data
    assert grid_data("--cls-data", "folders:scans")["seg"] == paper["seg"]  # only the task whose data changed


def test_paper_grid_on_class_folders_and_mask_pairs_is_scored_on_the_validation_split(tmp_path):
    folders = class_tree(tmp_path / "xray", {"NORMAL": 6, "PNEUMONIA": 6})
    images, masks = pairs_tree(tmp_path / "lungs", 10)
    out = tmp_path / "grid"
    result = invoke(["bench", "grid", "--out", str(out), "--models", "Enc,U-Net", "--seeds", "0,", "--size", "32",
                     "--steps", "1", "--batch-size", "2", "--precision", "fp32",
                     "--cls-data", f"folders:{folders}", "--cls-labels", "4",
                     "--seg-data", f"pairs:{images},{masks}", "--seg-labels", "4"])
    assert result.exit_code == 0, result.output
    for cell, task in (("Enc__cls-4__s0", "cls"), ("U-Net__seg-4__s0", "seg")):
        record = json.loads((out / "cells" / f"{cell}.json").read_text())
        assert record["status"] == "ok", record.get("error")
        assert list(record["metrics"]) == [task]
        assert list(record["metrics"][task]) == ["val"]  # not synthetic:n=300
        held_out = json.loads((out / "runs" / cell / "splits" / f"{task}.json").read_text())["val"]
        assert record["metrics"][task]["val"]["n"] == len(held_out) > 0
    console = flat(result.stderr)
    assert flat(f"cls is tested on val (val: each run's held-out validation split, 10% of 'folders:{folders}'") \
        in console
    assert flat("seg is tested on val") in console
    markdown = (out / "results.md").read_text()
    assert "Test sets: cls on `val`, seg on `val`" in markdown
    assert "`val` is each run's held-out validation split: images from its own training data" in markdown
    assert "synthetic" not in markdown
