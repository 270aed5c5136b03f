"""mtssl.run.state: the tree codec, the generic name -> state_dict mechanism, and the commit rule."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from conftest import tiny_trainer
from mtssl.run import checkpoint
from mtssl.run import state as run_state
from mtssl.run.checkpoint import CheckpointError
from mtssl.training.distributed import Distributed
from mtssl.run.rundir import RunDir
from mtssl.training.stopping import TrainingStopped
from mtssl.training.trainer import Trainer


def same(a, b) -> bool:
    """Structural equality that also compares tensors exactly and treats nan as equal to nan."""
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_tree_round_trips_through_a_safetensors_file_exactly(tmp_path):
    tree = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 3)}, 1: {"m": torch.arange(4)}},
            "groups": [{"betas": (0.9, 0.999), "lr": 1e-4, "params": [0, 1]}], "best": -math.inf,
            "nan": math.nan, "flag": True, "none": None, "name": "ema", "__tensor__": 1,
            "rng": random.getstate(), "u8": torch.tensor([1, 255], dtype=torch.uint8), 2.5: "float key"}
    tensors: dict[str, torch.Tensor] = {}
    encoded = run_state.encode(tree, tensors, "part")
    checkpoint.atomic_save(tensors, tmp_path / "s.safetensors", {"tree": encoded})
    loaded, meta = checkpoint.load(tmp_path / "s.safetensors")
    assert same(run_state.decode(meta["tree"], loaded), tree)


def test_unsupported_value_names_where_it_is():
    with pytest.raises(TypeError, match="ema: cannot save a set"):
        run_state.encode({"x": {1, 2}}, {}, "ema")


def test_rng_state_restores_every_generator():
    rng = run_state.RngState(torch.device("cpu"))
    saved = rng.state_dict()
    first = (torch.rand(3), np.random.rand(3), random.random())
    rng.load_state_dict(saved)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]


class Counter:
    """A stateful plugin part: a running mean of the strategy loss (a tensor) and a call count (JSON)."""

    def __init__(self):
        self.mean, self.calls = torch.zeros(()), 0

    def update(self, loss: torch.Tensor) -> None:
        self.calls += 1
        self.mean = self.mean + (loss.detach().float() - self.mean) / self.calls

    def state_dict(self):
        return {"mean": self.mean, "calls": self.calls}

    def load_state_dict(self, state):
        self.mean, self.calls = state["mean"].clone(), int(state["calls"])


def with_state(trainer: Trainer) -> Counter:
    """Give the trainer's fixmatch strategy state, exactly as a plugin author would (two methods)."""
    strategy, counter = trainer.parts.strategies["cls"][0], Counter()
    original = type(strategy).loss

    def loss(inputs):
        out = original(strategy, inputs)
        counter.update(out.loss)
        return out

    strategy.loss, strategy.state_dict, strategy.load_state_dict = loss, counter.state_dict, counter.load_state_dict
    return counter


def test_a_plugins_state_is_saved_under_its_name_and_resumes_bit_exactly(host, tmp_path):
    settings = dict(steps=4, save_every=100, eval_every=100, seed=5)
    straight = tiny_trainer(host, tmp_path / "a", ["cls:fixmatch"], **settings)
    expected = with_state(straight)
    straight.fit()

    stopped = tiny_trainer(host, tmp_path / "b", ["cls:fixmatch"], **settings)
    with_state(stopped)
    assert "strategy/cls/fixmatch" in stopped.stateful()
    with pytest.raises(TrainingStopped):
        stopped.fit(on_step=lambda step, logs: stopped.stop.request() if step == 2 else None)
    run = RunDir(stopped.run.path)
    resumed = Trainer(run.config(), host, run)
    counter = with_state(resumed)
    resumed.resume()
    assert counter.calls == 2
    resumed.fit()
    assert counter.calls == expected.calls == 4 and torch.equal(counter.mean, expected.mean)


def test_crash_before_the_commit_keeps_the_previous_pair(host, tmp_path, monkeypatch):
    trainer = tiny_trainer(host, tmp_path, ["cls"], steps=2, save_every=1, eval_every=100)
    trainer.train_step()
    trainer.save("last", with_state=True)
    original = checkpoint.atomic_save

    def crash_on_commit(tensors, path, metadata=None):
        if path.name == "last.safetensors":
            raise OSError("power cut")
        return original(tensors, path, metadata)

    monkeypatch.setattr(checkpoint, "atomic_save", crash_on_commit)
    trainer.train_step()
    with pytest.raises(CheckpointError, match="checkpoints: power cut"):
        trainer.save("last", with_state=True)
    monkeypatch.undo()
    folder = trainer.run.checkpoints
    assert sorted(p.name for p in (folder / "state").iterdir()) == [
        "last-00000001-rank0.safetensors", "last-00000002-rank0.safetensors"]
    fresh = Trainer(trainer.config, host, trainer.run)
    fresh.resume()
    assert fresh.step == 1  # the committed pair, not the orphaned newer state


def test_resume_checks_world_size_and_components(host, tmp_path):
    trainer = tiny_trainer(host, tmp_path, ["cls"], steps=1, save_every=1, eval_every=100)
    trainer.fit()
    folder = trainer.run.checkpoints
    with pytest.raises(CheckpointError, match="saved by 1 process\\(es\\), resumed with 2"):
        run_state.load(folder, "last", {}, rank=0, world=2)
    with pytest.raises(CheckpointError, match="last-00000001-rank0.safetensors: has no state for 'ema'"):
        run_state.load(folder, "last", {"ema": run_state.Adapter(dict, lambda s: None)})


def test_torchrun_processes_take_their_own_gpu_even_over_a_saved_cuda_0(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    second = Distributed(rank=1, world=2, local_rank=1)
    assert [second.device_name(d) for d in ("auto", "cuda", "cuda:0", "cpu")] == ["cuda:1"] * 3 + ["cpu"]
    assert Distributed().device_name("cuda:0") == "cuda:0"


def test_config_json_keeps_the_asked_device_not_the_one_this_process_resolved(tmp_path, monkeypatch):
    import json

    from conftest import invoke, tiny_train_args

    class Resolving(Distributed):
        def device_name(self, requested: str) -> str:  # stands in for rank 0 taking cuda:0
            return "cpu"

    monkeypatch.setattr("mtssl.training.distributed.from_environment", lambda: Resolving())
    result = invoke(tiny_train_args("cls", out=tmp_path, name="r", steps=1, extra=("--device", "auto")))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "config.json").read_text())["device"] == "auto"
    # the checkpoint's config too, so eval on another machine does not ask for this process's GPU
    assert checkpoint.load(tmp_path / "r" / "checkpoints" / "last.safetensors")[1]["config"]["device"] == "auto"
