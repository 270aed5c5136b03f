"""eval, predict and report run where --device says (default auto), not where the run trained:
a run trained with --device cuda evaluates on a CPU-only machine."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import invoke, spaced
from mtssl.run import checkpoint
from mtssl.evaluation.inference import load_model
from tiny_run import tiny_run


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory) -> Path:
    """A copy of the tiny run whose config.json and checkpoints say it trained on CUDA."""
    run = Path(shutil.copytree(tiny_run(tmp_path_factory), tmp_path_factory.mktemp("cuda") / "run"))
    config = json.loads((run / "config.json").read_text())
    config["device"] = "cuda"
    (run / "config.json").write_text(json.dumps(config))
    for file in (run / "checkpoints").glob("*.safetensors"):
        tensors, meta = checkpoint.load(file)
        if "config" in meta:
            meta["config"]["device"] = "cuda"
            checkpoint.atomic_save(tensors, file, meta)
    return run


def test_checkpoint_says_cuda(cuda_run):
    _, meta = checkpoint.load(cuda_run / "checkpoints" / "best.safetensors")
    assert meta["config"]["device"] == "cuda"


def test_load_model_auto_picks_this_machines_device(cuda_run):
    loaded = load_model(cuda_run)
    assert loaded.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert loaded.config.device == "cuda"  # the record of how it trained is kept
    assert next(loaded.model.parameters()).device.type == loaded.device.type


def test_eval_of_a_cuda_run_on_cpu(cuda_run):
    result = invoke(["eval", str(cuda_run), "--seg-test", "synthetic:n=4", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["seg"]["synthetic:n=4"]["n"] == 4
    auto = invoke(["eval", str(cuda_run), "--cls-test", "synthetic:n=4", "--json"])  # default: auto
    assert auto.exit_code == 0, auto.output


def test_predict_of_a_cuda_run_on_cpu(cuda_run, tmp_path):
    Image.fromarray(np.full((20, 24), 90, np.uint8)).save(tmp_path / "x.png")
    result = invoke(["predict", str(cuda_run), str(tmp_path / "x.png"), "--out", str(tmp_path / "out"),
                     "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "cls.csv").is_file()


def test_report_of_a_cuda_run_on_cpu(cuda_run):
    result = invoke(["report", str(cuda_run), "--device", "cpu", "--cls-test", "synthetic:n=4",
                     "--seg-test", "synthetic:n=4"])
    assert result.exit_code == 0, result.output
    assert (cuda_run / "report" / "index.html").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_one_is_a_one_line_error(cuda_run):
    result = invoke(["eval", str(cuda_run), "--device", "cuda"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--device cuda was asked for, but torch sees no CUDA device" in spaced(result.stderr)


def test_a_bad_device_name_names_the_option(cuda_run):
    result = invoke(["predict", str(cuda_run), "x.png", "--out", "o", "--device", "tpu"])
    assert result.exit_code == 2 and "Invalid value for '--device'" in result.output
