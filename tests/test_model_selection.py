"""The trainer keeps `best` by the validation score (not the training loss) and always writes best and last."""
from __future__ import annotations

import itertools
import math

from mtssl.run import checkpoint
from mtssl.run.config import RunConfig, TaskData
from mtssl.plugins import PluginHost
from mtssl.run.rundir import RunDir
from mtssl.training.trainer import Trainer


def make_trainer(tmp_path, steps=5):
    config = RunConfig(tasks=["seg"], size=32, batch_size=2, steps=steps, eval_every=1, save_every=100,
                       out=str(tmp_path), name="sel", data={"seg": TaskData(train="synthetic:n=8", labels=3)})
    return Trainer(config, PluginHost(), RunDir.create(config))


def test_best_follows_the_validation_score(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path)
    scores = iter([0.2, 0.9, 0.5, 0.95, 0.1])
    monkeypatch.setattr(trainer, "validate", lambda: {"score": next(scores)})
    summary = trainer.fit()
    _, best = checkpoint.load(trainer.run.checkpoints / "best.safetensors")
    _, last = checkpoint.load(trainer.run.checkpoints / "last.safetensors")
    assert best["step"] == 4 and last["step"] == 5
    assert summary["best_score"] == 0.95
    # the training loss played no part: best is not the step with the lowest loss unless scores say so
    assert [p.name for p in (trainer.run.checkpoints / "state").iterdir()] == ["last-00000005-rank0.safetensors"]


def test_best_exists_even_when_no_task_reports_a_score(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, steps=3)
    monkeypatch.setattr(trainer, "validate", lambda: {"score": math.nan})
    summary = trainer.fit()
    _, best = checkpoint.load(trainer.run.checkpoints / "best.safetensors")
    assert best["step"] == 1 and summary["best_score"] is None


def test_a_real_score_after_nan_still_counts(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, steps=3)
    scores = itertools.chain([math.nan, 0.3, 0.1])
    monkeypatch.setattr(trainer, "validate", lambda: {"score": next(scores)})
    trainer.fit()
    _, best = checkpoint.load(trainer.run.checkpoints / "best.safetensors")
    assert best["step"] == 2
