"""The speed benchmark's paper-faithful step reads the same images the trainer trains on."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import speed  # noqa: E402
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
