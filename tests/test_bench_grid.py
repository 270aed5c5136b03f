"""The benchmark grid: cell expansion, statistics, and a tiny real grid with a failing cell and a re-run."""
from __future__ import annotations

import csv
import io
import json
import math

import pytest
from click.testing import CliRunner

from mtssl.bench.grid import GridError, GridSpec, ModelSpec, expand_cells, grid_from_dict, parse_seeds
from mtssl.bench.summary import collect, paired_p, paired_tests, to_csv
from mtssl.cli.app import main


def test_model_spec_reads_flags_and_rejects_the_rest():
    model = ModelSpec.parse("M", "--task cls:fixmatch --task seg:kl --bridge saliency")
    assert model.tasks == ("cls:fixmatch", "seg:kl") and model.bridges == ("saliency",)
    assert model.task_names == ("cls", "seg")
    with pytest.raises(GridError, match="--size"):
        ModelSpec.parse("M", "--task cls --size 3")
    with pytest.raises(GridError, match="no --task"):
        ModelSpec.parse("M", "--bridge saliency")


def test_single_task_models_vary_only_their_own_budget():
    grid = grid_from_dict({
        "models": {"U": "--task seg", "E": "--task cls", "MM": "--task cls:fixmatch --task seg:kl"},
        "budgets": {"seg": [10, "all"], "cls": "100,1000"}, "seeds": 2})
    cells = expand_cells(grid)
    by_model = {}
    for cell in cells:
        by_model.setdefault(cell.model.name, []).append(cell)
    assert len(by_model["U"]) == 4 and len(by_model["E"]) == 4 and len(by_model["MM"]) == 8
    assert len({c.cell_id for c in cells}) == len(cells)
    assert {c.budgets for c in by_model["U"]} == {(("seg", 10),), (("seg", "all"),)}


def test_grid_rejects_unknowns():
    with pytest.raises(GridError, match="no model has"):
        grid_from_dict({"models": {"E": "--task cls"}, "budgets": {"seg": [10]}}).check()
    with pytest.raises(GridError, match="unknown key"):
        grid_from_dict({"models": {}, "modles": {}})
    with pytest.raises(GridError, match="no model named"):
        GridSpec(models=[ModelSpec("E", ("cls",))], reference="X").check()
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("4,7") == [4, 7] and parse_seeds("0,") == [0]
    with pytest.raises(GridError, match="'0,'"):
        parse_seeds("0")


def _record(model, budgets, seed, value, test="val"):
    return {"status": "ok", "model": model, "budgets": budgets, "seed": seed, "cell": f"{model}{seed}",
            "metrics": {"cls": {test: {"n": 10, "aggregate": {"acc": {"mean": value, "std": None}}}}}}


def test_paired_t_test_matches_hand_computation():
    # differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t = 0.2 / (0.1 / sqrt(3)); two-sided p with 2 degrees of
    # freedom in closed form: 1 - t / sqrt(2 + t^2)
    t = 0.2 / (0.1 / math.sqrt(3))
    expected = 1 - t / math.sqrt(2 + t * t)
    records = [_record("R", {"cls": 100}, s, v) for s, v in enumerate([0.6, 0.7, 0.8])]
    records += [_record("B", {"cls": 100}, s, v) for s, v in enumerate([0.5, 0.5, 0.5])]
    records += [_record("B", {"cls": 1000}, s, 0.9) for s in range(3)]  # other budget: not paired with R@100
    tests = paired_tests(collect(records), "R")
    assert len(tests) == 1
    assert tests[0].p_value == pytest.approx(expected, rel=1e-6)
    assert tests[0].mean_difference == pytest.approx(0.2)
    assert paired_p([1.0], [0.0]) is None  # one pair: undefined


def test_mean_and_sample_std_over_seeds_in_csv():
    records = [_record("R", {"cls": 100}, s, v) for s, v in enumerate([0.6, 0.7, 0.8])]
    records.append(_record("R", {"cls": 100}, 3, None))  # undefined on one seed: left out, not a zero
    row = next(csv.DictReader(io.StringIO(to_csv(collect(records)))))
    assert float(row["mean"]) == pytest.approx(0.7)
    assert float(row["std"]) == pytest.approx(0.1)
    assert row["n_seeds"] == "3"


def test_tiny_grid_runs_skips_on_rerun_and_survives_a_failing_cell(tmp_path):
    out = tmp_path / "grid"
    args = ["bench", "grid", "--out", str(out), "--model", "Enc=--task cls", "--model", "Enc-SSL=--task cls:fixmatch",
            "--model", "Broken=--task cls:nosuchstrategy", "--reference", "Enc-SSL", "--seeds", "2",
            "--size", "32", "--steps", "2", "--batch-size", "4", "--cls-data", "synthetic:n=40",
            "--cls-labels", "8", "--cls-test", "synthetic:n=16,domain=2"]
    runner = CliRunner()
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    cells = {p.stem: json.loads(p.read_text()) for p in (out / "cells").glob("*.json")}
    assert len(cells) == 6
    statuses = {k: v["status"] for k, v in cells.items()}
    assert sorted(k for k, s in statuses.items() if s == "failed") == ["Broken__cls-8__s0", "Broken__cls-8__s1"]
    assert "nosuchstrategy" in cells["Broken__cls-8__s0"]["error"]
    ok = cells["Enc__cls-8__s1"]
    assert ok["metrics"]["cls"]["synthetic:n=16,domain=2"]["n"] == 16
    markdown = (out / "results.md").read_text()
    assert "| Enc-SSL | 8 |" in markdown and "Broken__cls-8__s0" in markdown
    pvalues = list(csv.DictReader((out / "pvalues.csv").open()))
    assert {r["baseline"] for r in pvalues} == {"Enc"} and {r["metric"] for r in pvalues} >= {"acc"}

    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("Enc*.json")}
    second = runner.invoke(main, args)
    assert second.exit_code == 0, second.output
    assert second.output.count("done earlier, skipped") == 4
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("Enc*.json")} == stamps
    assert "Broken__cls-8__s0: training" in second.output  # failed cells are retried
