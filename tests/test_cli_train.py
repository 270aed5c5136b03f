"""Every paper baseline trains a few steps from the command line and leaves a complete run directory."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import invoke, read_metrics, spaced, tiny_train_args, train_run
from mtssl.run import checkpoint

RUN_KEYS = {"step", "epoch", "lr", "step_time"}

# spec -> (tasks, bridges, the loss terms it must log)
BASELINES = {
    "seg": (("seg",), (), {"seg/sup"}),
    "cls": (("cls",), (), {"cls/sup"}),
    "cls:fixmatch": (("cls:fixmatch",), (), {"cls/sup", "cls/fixmatch", "cls/fixmatch/mask_rate"}),
    "cls+seg": (("cls", "seg"), (), {"cls/sup", "seg/sup"}),
    "cls+seg+saliency": (("cls", "seg"), ("saliency",), {"cls/sup", "seg/sup"}),
    "cls:fixmatch+seg": (("cls:fixmatch", "seg"), (), {"cls/sup", "cls/fixmatch", "cls/fixmatch/mask_rate",
                                                        "seg/sup"}),
    "cls:fixmatch+seg+saliency": (("cls:fixmatch", "seg"), ("saliency",),
                                  {"cls/sup", "cls/fixmatch", "cls/fixmatch/mask_rate", "seg/sup"}),
    "multimix": (("cls:fixmatch", "seg:kl"), ("saliency",),
                 {"cls/sup", "cls/fixmatch", "cls/fixmatch/mask_rate", "seg/sup", "seg/kl", "seg/kl/kl"}),
}


@pytest.mark.parametrize("baseline", list(BASELINES))
def test_baseline_trains_and_leaves_a_complete_run_directory(tmp_path, baseline):
    tasks, bridges, terms = BASELINES[baseline]
    run = train_run(*tasks, bridges=bridges, out=tmp_path)
    names = [t.split(":")[0] for t in tasks]

    config = json.loads((run / "config.json").read_text())
    assert config["tasks"] == list(tasks) and config["bridges"] == list(bridges) and config["size"] == 32

    lines = read_metrics(run)
    assert [line["step"] for line in lines] == [1, 2]
    for line in lines:
        losses = {k for k in line if k not in RUN_KEYS and not k.startswith(("val/", "weight/")) and k != "loss"}
        assert losses == terms
        assert {k: v for k, v in line.items() if k.startswith("weight/")} == {f"weight/{n}": 1.0 for n in names}
        summed = sum(v for k, v in line.items() if k in terms and k.count("/") == 1)
        assert line["loss"] == pytest.approx(summed, rel=1e-5)  # the total is the sum of its terms
        assert all(torch.isfinite(torch.tensor(line[k])) for k in terms)
        assert {f"val/{n}/{'acc' if n == 'cls' else 'dice'}" for n in names} | {"val/score"} <= set(line)

    weights, meta = checkpoint.load(run / "checkpoints" / "last.safetensors")
    assert meta["step"] == 2 and meta["config"] == config
    assert any(k.startswith("backbone.") for k in weights)
    assert {k.split(".")[1] for k in weights if k.startswith("heads.")} == set(names)
    assert meta["resume"] == {"step": 2, "world": 1, "states": ["last-00000002-rank0.safetensors"]}
    assert (run / "checkpoints" / "state" / "last-00000002-rank0.safetensors").is_file()
    assert (run / "checkpoints" / "best.safetensors").is_file()
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
    for name in names:
        split = json.loads((run / "splits" / f"{name}.json").read_text())
        assert len(split["labeled"]) == (8 if name == "cls" else 4)
        assert not set(split["labeled"]) & set(split["val"])


def test_unusable_size_from_the_cli_suggests_one(tmp_path):
    result = invoke(tiny_train_args("cls", out=tmp_path, extra=("--size", "40")))
    assert result.exit_code == 2
    assert "Use --size 32 or 48" in result.stderr and "Traceback" not in result.output


def test_label_budget_larger_than_the_data_is_a_clear_error(tmp_path):
    result = invoke(tiny_train_args("cls", out=tmp_path, extra=("--cls-labels", "500")))
    assert result.exit_code == 2
    assert "label budget 500 is larger than the" in spaced(result.stderr)
