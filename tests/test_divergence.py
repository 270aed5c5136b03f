"""The divergence guard: a nan/inf (or too large) loss stops the run, names the term and the step, and never
reaches a checkpoint; --skip-nonfinite skips a bounded number of bad steps; eval refuses non-finite weights."""
from __future__ import annotations

import math
import re

import pytest
import torch

from conftest import invoke, spaced, read_metrics, tiny_train_args, tiny_trainer
from mtssl.run import checkpoint
from mtssl.training.guard import DIVERGED_EXIT, DivergenceError, DivergenceGuard



def finite_weights(path) -> bool:
    return all(torch.isfinite(t).all() for t in checkpoint.load(path)[0].values() if t.is_floating_point())


def test_nan_weight_is_refused_before_training_starts(tmp_path):
    result = invoke(tiny_train_args("cls:fixmatch:weight=nan", out=tmp_path, name="r", steps=3))
    assert result.exit_code == 2
    assert "strategy 'fixmatch': option weight: input should be a finite number, got nan" in spaced(result.stderr)
    assert not (tmp_path / "r").exists()


def test_huge_learning_rate_stops_naming_the_term_and_keeps_only_finite_weights(tmp_path):
    result = invoke(tiny_train_args("cls", out=tmp_path, name="r", steps=4, extra=("--lr", "1e30")))
    assert result.exit_code == DIVERGED_EXIT
    assert re.search(r"loss term 'cls/sup' is (nan|inf) at step \d", spaced(result.stderr))
    written = list((tmp_path / "r" / "checkpoints").glob("*.safetensors"))
    assert written and all(finite_weights(file) for file in written)


def test_divergence_after_a_save_keeps_the_last_finite_checkpoint(host, tmp_path):
    trainer = tiny_trainer(host, tmp_path, ["cls:fixmatch"], steps=4, save_every=2, eval_every=1)
    strategy = trainer.parts.strategies["cls"][0]
    original = strategy.loss

    def nan_from_step_three(inputs):
        out = original(inputs)
        if inputs.step >= 2:  # the strategy sees the step count before the update: step 3 is the 3rd update
            out.loss = out.loss * math.nan
        return out

    strategy.loss = nan_from_step_three
    with pytest.raises(DivergenceError) as info:
        trainer.fit()
    message = str(info.value)
    assert "loss term 'cls/fixmatch' is nan at step 3" in message
    assert "last.safetensors (step 2)" in message
    folder = trainer.run.checkpoints
    _, meta = checkpoint.load(folder / "last.safetensors")
    assert meta["step"] == 2 and finite_weights(folder / "last.safetensors") and finite_weights(folder / "best.safetensors")
    assert [line["step"] for line in read_metrics(trainer.run.path)] == [1, 2]


def test_max_loss_bound_stops_a_finite_but_exploding_run(tmp_path):
    result = invoke(tiny_train_args("cls", out=tmp_path, name="r", steps=3, extra=("--max-loss", "1e-3")))
    assert result.exit_code == DIVERGED_EXIT
    assert "loss term 'cls/sup' =" in spaced(result.stderr) and "exceeds --max-loss 0.001 at step 1" in spaced(result.stderr)


def test_skip_nonfinite_skips_bad_steps_without_updating_then_stops_when_the_budget_is_spent(host, tmp_path):
    trainer = tiny_trainer(host, tmp_path, ["cls:fixmatch"], steps=5, save_every=1, eval_every=100,
                           skip_nonfinite=2)
    strategy = trainer.parts.strategies["cls"][0]
    original = strategy.loss
    bad_steps = {1, 3, 4}  # 0-based step counts seen by the strategy: updates 2, 4 and 5

    def sometimes_nan(inputs):
        out = original(inputs)
        if inputs.step in bad_steps:
            out.loss = out.loss * math.nan
        return out

    strategy.loss = sometimes_nan
    snapshots = []
    with pytest.raises(DivergenceError) as info:
        trainer.fit(on_step=lambda step, logs: snapshots.append(
            {k: v.clone() for k, v in trainer.model.state_dict().items()}))
    assert "at step 5" in str(info.value) and "2 bad step(s) already skipped (--skip-nonfinite 2)" in str(info.value)
    lines = read_metrics(trainer.run.path)
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    assert [line.get("skipped", 0) for line in lines] == [0, 1, 0, 1]
    # a skipped step leaves every weight exactly as it was; a normal one changes them
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert same(snapshots[0], snapshots[1]) and same(snapshots[2], snapshots[3])
    assert not same(snapshots[1], snapshots[2])
    assert checkpoint.load(trainer.run.checkpoints / "last.safetensors")[1]["step"] == 4


def test_guard_fetches_all_terms_in_one_transfer_and_names_the_first_bad_one():
    guard = DivergenceGuard(max_loss=10.0)
    fetched = guard.fetch([torch.tensor(1.0), torch.tensor(2.5)])
    assert fetched.values == [1.0, 2.5] and not fetched.bad and not fetched.stop
    fetched = guard.fetch([torch.tensor(1.0), torch.tensor(math.inf), torch.tensor(math.nan)], stop_requested=True)
    assert fetched.bad and fetched.stop
    assert guard.problem(["a", "b", "c"], fetched.values) == "loss term 'b' is inf"
    assert guard.problem(["a", "b"], [1.0, -11.0]) == "loss term 'b' = -11 exceeds --max-loss 10"
    assert guard.problem(["a"], [9.0]) is None


def test_eval_predict_and_report_refuse_non_finite_weights_naming_the_file(tmp_path):
    from tiny_run import TRAIN_ARGS

    result = invoke(TRAIN_ARGS[:TRAIN_ARGS.index("--steps") + 1] + ["1"] + TRAIN_ARGS[TRAIN_ARGS.index("--steps") + 2:]
                    + ["--out", str(tmp_path), "--name", "run"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    weights, meta = checkpoint.load(run / "checkpoints" / "best.safetensors")
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = torch.full_like(weights[name], math.nan)
    broken = tmp_path / "broken.safetensors"
    checkpoint.atomic_save(weights, broken, meta)
    for args in (["eval", str(run)], ["predict", str(run), str(tmp_path), "--out", str(tmp_path / "p")],
                 ["report", str(run)]):
        result = invoke(args + ["--checkpoint", str(broken)])
        assert result.exit_code == 2, args
        assert "broken.safetensors: non-finite weights" in spaced(result.stderr) and f"'{name}'" in result.stderr


def test_all_loss_terms_reach_the_host_in_one_transfer(host, tmp_path, monkeypatch):
    """The guard adds no host sync: every term is checked from the single fetch that also logs it."""
    trainer = tiny_trainer(host, tmp_path, ["cls", "seg"])
    views = trainer.gather_views()
    calls = []
    for name in ("item", "tolist", "cpu", "numpy", "__float__", "__bool__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _n=name, _o=original, **k: (calls.append(_n), _o(self, *a, **k))[1])
    result = trainer.compute_loss(views)
    monkeypatch.undo()
    assert calls == ["tolist"]
    assert set(result.logs) == {"cls/sup", "seg/sup", "loss", "weight/cls", "weight/seg"} and result.problem is None
    assert result.logs["weight/cls"] == result.logs["weight/seg"] == 1.0  # the default weighting is a plain sum
    assert result.logs["loss"] == pytest.approx(result.logs["cls/sup"] + result.logs["seg/sup"], rel=1e-6)
