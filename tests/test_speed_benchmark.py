"""The speed benchmarks: the paper-faithful step on the trainer's own images, the FLOP counts, the prepared GPU call."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import speed  # noqa: E402
from data_trees import class_tree, pairs_tree  # noqa: E402
from reference_step import ReferenceStep  # noqa: E402


def test_reference_step_runs_on_the_trainers_streams(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = speed.build_trainer(32, 4, "cpu", str(tmp_path / "runs"))
    streams = speed.shared_streams(trainer)
    cls = trainer.data["cls"]
    assert streams.labeled_cls.shape == (len(cls.split.labeled), 32, 32)
    assert np.array_equal(streams.labeled_cls, cls.train.images[cls.split.labeled, 0])
    assert streams.labeled_seg_masks.shape == streams.labeled_seg.shape
    seconds = ReferenceStep(streams, m=4)()
    assert math.isfinite(seconds) and seconds > 0
    assert math.isfinite(speed.mtssl_step(trainer))


def test_mtssl_step_does_about_half_the_reference_steps_work(tmp_path, monkeypatch):
    """Pass planning (no decoder on classification rows, no second saliency forward) halves the FLOPs."""
    monkeypatch.chdir(tmp_path)
    trainer = speed.build_trainer(32, 4, "cpu", str(tmp_path / "runs"))
    reference = ReferenceStep(speed.shared_streams(trainer), m=4)
    ours, theirs = speed.step_flops(trainer.train_step), speed.step_flops(reference)
    assert ours > 0
    assert 1.8 < theirs / ours < 2.4


def test_gpu_session_script_runs_end_to_end_on_a_cpu(tmp_path):
    """The prepared GPU call, dry-run at 32 px: the speed table, the real-data run, its evaluation."""
    data = tmp_path / "data"
    class_tree(data / "chest_xray" / "train", {"NORMAL": 60, "PNEUMONIA": 60})
    pairs_tree(data / "lungs", 16)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, DEVICE="cpu", SIZE="32", PRECISIONS="fp32", SPEED_STEPS="1",
               SPEED_FLAGS="--no-memory", EVAL_EVERY="2")  # bf16 is emulated on CPUs without it: minutes even at 32 px
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_session.sh"
    done = subprocess.run(["bash", str(script), str(data), str(out), "2"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = json.loads((out / "speed-fp32.json").read_text())
    assert result["size"] == 32 and result["precision"] == "fp32"
    assert result["reference_step_tflop"] > result["step_tflop"] > 0
    scores = json.loads((out / "eval.json").read_text())
    assert set(scores["results"]) == {"cls", "seg"}
