"""examples/ctr-plugin, installed through its own pyproject.toml, adds a task and trains it with MultiMix."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from example_packages import EXAMPLES, install_example, mtssl_with as mtssl

PACKAGE = EXAMPLES / "ctr-plugin"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The example installed (with its entry point) into a folder of its own."""
    return install_example(tmp_path_factory, "ctr-plugin", "mtssl-ctr")


def test_plugins_lists_the_third_party_task_and_source(site):
    result = mtssl(site, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    listed = {(c["kind"], c["name"]): c for c in json.loads(result.stdout)["components"]}
    assert listed[("task", "ctr")]["distribution"] == "mtssl-ctr"
    assert listed[("source", "ctr-phantom")]["distribution"] == "mtssl-ctr"


def test_third_party_task_trains_jointly_with_multimix_and_evaluates(site, tmp_path):
    result = mtssl(site, "train", "--quiet", "--size", "32", "--batch-size", "2", "--steps", "3",
                   "--eval-every", "3", "--out", str(tmp_path), "--name", "joint",
                   "--task", "cls:fixmatch", "--task", "seg:kl", "--task", "ctr", "--bridge", "saliency",
                   "--cls-data", "synthetic:n=16", "--cls-labels", "4", "--seg-data", "synthetic:n=12",
                   "--seg-labels", "3", "--ctr-data", "ctr-phantom:n=16", "--ctr-labels", "6")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "joint"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(line["ctr/sup"]) for line in lines)
    assert {"cls/fixmatch", "seg/kl", "val/ctr/mae"} <= set(lines[-1])
    listing = json.loads((run / "splits" / "ctr.json").read_text())
    assert len(listing["labeled"]) == 6
    scored = mtssl(site, "eval", str(run), "--ctr-test", "ctr-phantom:n=8", "--json")
    assert scored.returncode == 0, scored.stderr
    ctr = json.loads(scored.stdout)["ctr"]["ctr-phantom:n=8"]
    assert ctr["n"] == 8 and {"mae", "rmse", "pearson_r"} <= set(ctr["aggregate"])
    errors = [r["abs_error"] for r in ctr["per_image"]]
    assert ctr["aggregate"]["mae"]["mean"] == pytest.approx(np.mean(errors))


def test_the_package_imports_only_the_plugin_api():
    source = (PACKAGE / "mtssl_ctr" / "__init__.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import mtssl", "from mtssl"))]
    assert imports and all(line.startswith("from mtssl.api import") for line in imports)
