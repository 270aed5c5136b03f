"""What mtssl report tells its reader: the run's facts and data, the files behind the best/worst and misclassified
cases, calibration with ECE, losses apart from other logs, and bridge maps named by the task they feed."""
from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from mtssl.cli.app import main
from mtssl.evaluation.report import curve_panels
from mtssl_plugins.metrics.calibration import expected_calibration_error, reliability_bins
from tiny_run import tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def page(run):
    result = CliRunner().invoke(main, ["report", str(run)])
    assert result.exit_code == 0, result.output
    text = (run / "report" / "index.html").read_text()
    return html.unescape(re.sub(r'src="data:image/png;base64,[^"]+"', "", text))


def captions(page: str) -> dict[str, str]:
    return dict(re.findall(r"<h3>([^<]*)</h3><img alt=\"[^\"]*\" ><figcaption>([^<]*)</figcaption>", page))


def test_ece_by_hand():
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    targets = np.array([0, 1, 1, 0])
    found = reliability_bins(probabilities, targets, bins=5)
    # confidences 0.9 (right), 0.8 (wrong), 0.7 (right), 0.55 (wrong); bins (0.4,0.6], (0.6,0.8], (0.8,1]
    assert found.counts.tolist() == [0, 0, 1, 2, 1]
    np.testing.assert_allclose(found.accuracy[2:], [0, 0.5, 1])
    np.testing.assert_allclose(found.confidence[2:], [0.55, 0.75, 0.9])
    # 1/4 * |0 - 0.55| + 2/4 * |0.5 - 0.75| + 1/4 * |1 - 0.9| = 0.1375 + 0.125 + 0.025
    assert found.ece == pytest.approx(0.2875)
    assert expected_calibration_error(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1])) == 0
    assert expected_calibration_error(np.array([[0.6, 0.4]] * 4), np.array([0, 0, 1, 1])) == pytest.approx(0.1)


def test_weights_and_strategy_statistics_stay_out_of_the_loss_panel():
    keys = ["cls/sup", "cls/fixmatch", "cls/fixmatch/mask_rate", "cls/freematch/threshold", "seg/sup", "seg/kl",
            "seg/kl/kl", "weight/cls", "weight/seg", "loss", "step", "lr", "step_time", "epoch", "val/cls/acc"]
    panels = dict(curve_panels(keys, ["cls", "seg"]))
    assert panels["loss terms"] == ["cls/sup", "cls/fixmatch", "seg/sup", "seg/kl", "loss"]
    assert panels["task weights"] == ["weight/cls", "weight/seg"]
    assert panels["pseudo-label mask rate"] == ["cls/fixmatch/mask_rate"]
    assert panels["strategy statistics"] == ["cls/freematch/threshold", "seg/kl/kl"]
    assert panels["validation"] == ["val/cls/acc"]


def test_report_heads_with_the_run_and_its_data(page, run):
    config = json.loads((run / "config.json").read_text())
    splits = json.loads((run / "splits" / "cls.json").read_text())
    header = page[:page.index("<h2>Evaluation</h2>")]
    for fact, value in [("seed", "0"), ("precision", config["precision"]), ("mtssl version", "0.1.0"),
                        ("training", "3 steps"), ("checkpoint", "best (step")]:
        assert re.search(rf"<th>{fact}</th><td>{re.escape(value)}", header), fact
    for source in ("synthetic:n=40", "synthetic:n=24", "synthetic:n=12,domain=2"):
        assert source in header
    labeled = len(splits["labeled"])
    counts = re.search(rf"{labeled} labeled \((\d+) normal, (\d+) pneumonia\)", header)
    assert counts and int(counts[1]) + int(counts[2]) == labeled
    assert f"{len(splits['val'])} validation" in header


def test_report_names_the_cases_it_shows(page, run):
    found = captions(page)
    misclassified = next(c for t, c in found.items() if t.startswith("cls misclassified cases · val"))
    evaluation = json.loads((run / "splits" / "cls.json").read_text())
    wrong = int(re.match(r"(\d+) of (\d+) misclassified", misclassified)[1])
    named = [key for key in evaluation["val"] if key in misclassified]
    assert len(named) == min(wrong, 20) and wrong > 0
    best_worst = next(c for t, c in found.items() if t.startswith("seg best and worst cases by Dice · val"))
    seg_val = json.loads((run / "splits" / "seg.json").read_text())["val"]
    assert re.search(r"best \S+ \(Dice [0-9.]+\)", best_worst) and re.search(r"worst \S+ \(Dice", best_worst)
    assert sum(key in best_worst for key in seg_val) >= 2


def test_report_has_a_reliability_diagram_with_ece(page):
    calibration = next(c for t, c in captions(page).items() if t.startswith("cls calibration (reliability diagram)"))
    assert re.match(r"ECE = 0\.\d{3} over 10 equal-width confidence bins", calibration)


def test_bridge_maps_are_named_by_the_task_they_feed(page):
    titles = list(captions(page))
    assert any(t.startswith("cls saliency (cls→seg, fed to seg) maps by predicted class") for t in titles), titles
    best_worst = next(c for t, c in captions(page).items() if t.startswith("seg best and worst"))
    assert "right: saliency (cls→seg, fed to seg)" in best_worst


def test_training_curves_caption_lists_the_panels(page):
    curves = captions(page)["Training curves"]
    losses = re.search(r"loss terms: ([^;]*);", curves)[1]
    assert "weight/" not in losses and "mask_rate" not in losses and "seg/kl/kl" not in losses
    assert "task weights: weight/cls, weight/seg" in curves and "strategy statistics: seg/kl/kl" in curves
