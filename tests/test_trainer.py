"""Reproducible seeded runs, and resuming an interrupted run to the same weights and log."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from conftest import invoke, read_metrics, spaced, tiny_trainer, train_run
from mtssl.run import checkpoint

MULTIMIX = dict(tasks=["cls:fixmatch", "seg:kl"], bridges=["saliency"])


def weights(run):
    return checkpoint.load(run / "checkpoints" / "last.safetensors")[0]


def losses(run):
    """Every logged number except wall-clock time."""
    return [{k: v for k, v in line.items() if k != "step_time"} for line in read_metrics(run)]


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_run_other_seed_other_run(tmp_path):
    args = dict(bridges=("saliency",), out=tmp_path)
    first = train_run("cls:fixmatch", "seg:kl", name="a", seed=3, **args)
    second = train_run("cls:fixmatch", "seg:kl", name="b", seed=3, **args)
    other = train_run("cls:fixmatch", "seg:kl", name="c", seed=4, **args)
    assert losses(first) == losses(second)
    assert same_weights(weights(first), weights(second))
    assert losses(first) != losses(other)
    assert not same_weights(weights(first), weights(other))


def straight_and_stopped_at_two(host, tmp_path, **settings):
    """The same tiny run twice: once to the end, once interrupted (Ctrl-C) after step 2."""
    straight = tiny_trainer(host, tmp_path / "straight", **settings)
    straight.fit()
    interrupted = tiny_trainer(host, tmp_path / "interrupted", **settings)

    def stop_at_two(step, logs):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(on_step=stop_at_two)
    return straight, interrupted


def test_interrupted_run_resumes_to_the_same_weights_and_log(host, tmp_path, monkeypatch):
    settings = dict(steps=4, eval_every=2, save_every=100, seed=1)
    straight, interrupted = straight_and_stopped_at_two(host, tmp_path, **MULTIMIX, **settings)
    run = interrupted.run.path
    assert [line["step"] for line in read_metrics(run)] == [1, 2]
    assert checkpoint.load(run / "checkpoints" / "last.safetensors")[1]["step"] == 2  # saved on interrupt

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while resuming")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    result = invoke(["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert "at step 2/4" in spaced(result.stderr)

    assert losses(run) == losses(straight.run.path)
    assert [line["step"] for line in read_metrics(run)] == [1, 2, 3, 4]
    assert same_weights(weights(run), weights(straight.run.path))
    state = checkpoint.load(run / "checkpoints" / "state" / "last-00000004-rank0.safetensors")[1]
    assert state["step"] == 4


def test_resume_drops_log_lines_written_after_the_checkpoint(host, tmp_path):
    trainer = tiny_trainer(host, tmp_path, ["cls"], steps=4, save_every=2, eval_every=100)

    def crash_at_three(step, logs):
        if step == 3:
            raise RuntimeError("power cut")  # not an interrupt: the last checkpoint stays at step 2

    with pytest.raises(RuntimeError):
        trainer.fit(on_step=crash_at_three)
    run = trainer.run.path
    assert [line["step"] for line in read_metrics(run)] == [1, 2, 3]
    result = invoke(["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert "at step 2/4" in spaced(result.stderr)
    assert [line["step"] for line in read_metrics(run)] == [1, 2, 3, 4]  # step 3 once, from the resumed run


def test_resume_from_a_truncated_checkpoint_names_the_file(tmp_path):
    run = train_run("cls", out=tmp_path)
    state = run / "checkpoints" / "state" / "last-00000002-rank0.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    (run / "summary.json").unlink()  # as if it crashed after its last save: not finished
    result = invoke(["train", "--resume", str(run)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = "".join(result.stderr.split())
    assert "last-00000002-rank0.safetensors" in message and "truncated" in message


def test_resume_of_a_folder_that_is_not_a_run(tmp_path):
    result = invoke(["train", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "not a run directory (no config.json)" in result.stderr


def test_pseudo_label_view_gets_no_gradient_in_a_training_step(host, tmp_path):
    trainer = tiny_trainer(host, tmp_path, ["cls:fixmatch:threshold=0"])
    views = trainer.gather_views()
    assert [(v.key, v.grad, len(v.images)) for v in views] == [
        ("labeled", True, 2), ("fixmatch/weak", False, 2), ("fixmatch/strong", True, 2)]
    captured = {}
    strategy = trainer.parts.strategies["cls"][0]
    original = strategy.loss

    def spy(inputs):
        captured.update(inputs.views)
        return original(inputs)

    strategy.loss = spy
    result = trainer.compute_loss(views)
    assert not captured["weak"].requires_grad and captured["strong"].requires_grad
    assert result.logs["cls/fixmatch/mask_rate"] == 1.0  # threshold 0 keeps every pseudo-label
    assert result.logs["cls/fixmatch"] > 0


def test_a_task_gets_the_same_split_alone_and_in_a_multi_task_run(host, tmp_path):
    alone = tiny_trainer(host, tmp_path / "a", ["seg"])
    together = tiny_trainer(host, tmp_path / "b", ["cls:fixmatch", "seg:kl"], ["saliency"])
    for part in ("labeled", "unlabeled", "val"):
        assert np.array_equal(getattr(alone.data["seg"].split, part), getattr(together.data["seg"].split, part))
    assert torch.equal(alone.labeled["seg"].next()[0], together.labeled["seg"].next()[0])


def test_teacher_peer_adaptive_thresholds_and_learned_weights_resume_bit_exactly(host, tmp_path):
    """EMA teacher, CPS peer, FreeMatch statistics and uncertainty log-variances survive --resume."""
    settings = dict(tasks=["cls:freematch:momentum=0.5", "seg:meanteacher+cps:meanteacher.rampup=0"], steps=4, eval_every=4,
                    save_every=100, seed=2, weighting="uncertainty:lr=0.05")
    straight, interrupted = straight_and_stopped_at_two(host, tmp_path, **settings)
    run = interrupted.run.path
    result = invoke(["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output

    assert losses(run) == losses(straight.run.path)
    assert same_weights(weights(run), weights(straight.run.path))
    name = "state/last-00000004-rank0.safetensors"
    resumed = checkpoint.load(run / "checkpoints" / name)[0]
    reference = checkpoint.load(straight.run.path / "checkpoints" / name)[0]
    assert resumed.keys() == reference.keys()
    for part in ("teacher", "peer", "freematch", "weighting"):
        assert any(part in k for k in reference), f"no {part} state in the checkpoint"
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
    assert straight.parts.strategies["cls"][0].time_p.item() > 0.5  # the threshold moved from 1/C
