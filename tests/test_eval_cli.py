"""mtssl eval and evaluate_run on a tiny run: val split, in-domain and cross-domain test sources."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mtssl.cli.app import main
from mtssl.evaluation.evaluate import evaluate_run
from conftest import flat
from tiny_run import tiny_run

SEG_METRICS = {"dice", "jaccard", "ssim", "hd_avg", "precision", "recall"}
CLS_METRICS = {"acc", "f1_normal", "f1_pneumonia", "auc", "sensitivity", "specificity"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def test_eval_cli_scores_in_domain_and_cross_domain_sources(run):
    args = ["eval", str(run), "--seg-test", "synthetic:n=6", "--seg-test", "synthetic:n=6,domain=2",
            "--cls-test", "synthetic:n=10,domain=2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    output = flat(result.output)  # tables wrap at the terminal width
    assert "dice" in output and "f1_pneumonia" in output and "hd_avginpixels" in output
    saved = json.loads((run / "eval-seg-synthetic_n=6+seg-synthetic_n=6_domain=2+cls-synthetic_n=10_domain=2.json")
                       .read_text())
    assert saved["checkpoint"] == "best"
    seg = saved["results"]["seg"]
    assert set(seg) == {"synthetic:n=6", "synthetic:n=6,domain=2"}
    for entry in seg.values():
        assert entry["n"] == 6 == len(entry["per_image"])
        assert set(entry["aggregate"]) == SEG_METRICS
        dices = [r["dice"] for r in entry["per_image"]]
        assert entry["aggregate"]["dice"]["mean"] == pytest.approx(np.mean(dices))
        assert all(r["key"].startswith("synthetic/") for r in entry["per_image"])
    # the two domains are different images
    keys = [r["key"] for e in seg.values() for r in e["per_image"]]
    assert len(set(keys)) == 12
    cls = saved["results"]["cls"]["synthetic:n=10,domain=2"]
    assert set(cls["aggregate"]) == CLS_METRICS and cls["n"] == 10


def test_evaluate_run_defaults_to_val_and_config_tests(run):
    results = evaluate_run(run)
    splits = json.loads((run / "splits" / "seg.json").read_text())
    assert set(results) == {"cls", "seg"}
    assert set(results["cls"]) == {"val", "synthetic:n=12,domain=2"}  # the test stored in the run's config
    assert [r["key"] for r in results["seg"]["val"]["per_image"]] == splits["val"]
    # the best checkpoint's validation Dice is what training logged for it
    logged = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    best = max(logged, key=lambda r: r["val/score"])
    assert results["seg"]["val"]["aggregate"]["dice"]["mean"] == pytest.approx(best["val/seg/dice"], abs=1e-5)
    assert results["cls"]["val"]["aggregate"]["acc"]["mean"] == pytest.approx(best["val/cls/acc"], abs=1e-6)
    json.dumps(results, allow_nan=False)  # strict JSON: no NaN anywhere


def test_single_class_test_set_gives_null_auc_with_a_note(run):
    result = CliRunner().invoke(main, ["eval", str(run), "--cls-test", "synthetic:n=6:prevalence=0", "--json"])
    assert result.exit_code == 0, result.output
    entry = json.loads(result.output)["cls"]["synthetic:n=6:prevalence=0"]
    assert entry["aggregate"]["auc"] == {"mean": None, "std": None}
    assert any("one class" in n for n in entry["notes"])


@pytest.mark.parametrize("args, message", [
    (["--det-test", "synthetic"], "not in this run"),
    (["--seg-data", "synthetic"], "only --TASK-test"),
    (["--checkpoint", "middle"], "best, last"),
    (["--seg-test", "nosuchsource"], "nosuchsource"),
])
def test_eval_errors_are_one_line(run, args, message):
    result = CliRunner().invoke(main, ["eval", str(run), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_eval_of_a_missing_run_names_it(tmp_path):
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "ghost")])
    assert result.exit_code == 2 and "ghost" in result.output
