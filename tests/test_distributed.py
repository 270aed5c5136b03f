"""Two CPU processes (gloo) train one model: same weights after every step, different data shards."""
from __future__ import annotations


import pytest
import torch
import torch.distributed as dist

from mtssl.plugins import PluginHost
from mtssl.run.rundir import RunDir
from conftest import tiny_config
from processes import join_group, run_processes



def _worker(rank: int, world: int, port: int, out: str, results) -> None:
    join_group(rank, world, port)
    from mtssl.training.distributed import from_environment
    from mtssl.training.trainer import Trainer

    cluster = from_environment()
    config = tiny_config(out, ["cls:fixmatch", "seg:kl"], ["saliency"], steps=2, name="ddp")
    run = RunDir(cluster.share(str(RunDir.create(config).path) if cluster.is_main else None))
    trainer = Trainer(config, PluginHost(), run, rank=cluster.rank, world=cluster.world)
    first_batch = trainer.labeled["cls"].next()[0].float().sum().item()
    trainer.fit()
    flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    results[rank] = {"same_weights": all(torch.equal(gathered[0], g) for g in gathered),
                     "first_batch": first_batch, "run": str(run.path)}
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_two_processes_keep_identical_weights_and_shard_the_data(tmp_path):
    results = run_processes(_worker, str(tmp_path))
    assert results[0]["same_weights"] and results[1]["same_weights"]
    assert results[0]["first_batch"] != results[1]["first_batch"]  # each rank draws its own shard
    assert results[0]["run"] == results[1]["run"]  # one run directory, chosen by rank 0
    assert (tmp_path / "ddp" / "checkpoints" / "last.safetensors").exists()


def _flat_weights(trainer) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])


def _resume_worker(rank: int, world: int, port: int, out: str, results) -> None:
    """Uninterrupted run; a run that rank 1 alone asks to stop; its resume: all three in both processes."""
    import signal

    join_group(rank, world, port)
    from mtssl.training.distributed import from_environment
    from mtssl.training.stopping import TrainingStopped
    from mtssl.training.trainer import Trainer

    cluster = from_environment()

    def trainer_for(name: str) -> Trainer:
        config = tiny_config(out, ["cls:fixmatch", "seg"], steps=4, save_every=100, eval_every=3, name=name)
        run = RunDir(cluster.share(str(RunDir.create(config).path) if cluster.is_main else None))
        return Trainer(config, PluginHost(), run, rank=cluster.rank, world=cluster.world)

    straight = trainer_for("straight")
    straight.fit()
    stopped = trainer_for("stopped")
    try:  # only rank 1 gets the signal; both ranks agree to stop after the next step
        stopped.fit(on_step=lambda step, logs: stopped.stop.request(signal.SIGTERM) if rank == 1 and step == 1 else None)
        stopped_at = None
    except TrainingStopped as exc:
        stopped_at = exc.step
    run = RunDir(stopped.run.path)
    resumed = Trainer(run.config(), PluginHost(), run, rank=cluster.rank, world=cluster.world)
    resumed.resume()
    resumed_at = resumed.step
    resumed.fit()
    streams = all(torch.equal(a, b) for name in straight.labeled
                  for a, b in zip(straight.labeled[name].state().values(), resumed.labeled[name].state().values()))
    results[rank] = {"stopped_at": stopped_at, "resumed_at": resumed_at, "streams": streams,
                     "same": torch.equal(_flat_weights(straight), _flat_weights(resumed)),
                     "paths": (str(straight.run.path), str(run.path))}
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_two_processes_stop_together_and_resume_each_rank_bit_exactly(tmp_path):
    import json

    from mtssl.run import checkpoint

    results = run_processes(_resume_worker, str(tmp_path))
    for rank in (0, 1):
        assert results[rank]["stopped_at"] == 2 and results[rank]["resumed_at"] == 2
        assert results[rank]["same"] and results[rank]["streams"], rank  # each rank's own shard and generators
    straight, resumed = (tmp_path / n for n in ("straight", "stopped"))
    state = resumed / "checkpoints" / "state"
    assert sorted(p.name for p in state.iterdir()) == ["last-00000004-rank0.safetensors",
                                                       "last-00000004-rank1.safetensors"]
    rank1 = checkpoint.load(state / "last-00000004-rank1.safetensors")[1]["components"]
    assert "optimizer" not in rank1 and "stream/labeled/cls" in rank1  # shared parts once, on rank 0
    weights = [checkpoint.load(r / "checkpoints" / "last.safetensors")[0] for r in (straight, resumed)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

    def log(run):
        return [{k: v for k, v in json.loads(line).items() if k != "step_time"}
                for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert log(resumed) == log(straight) and len(log(straight)) == 4


def _diverge_worker(rank: int, world: int, port: int, out: str, results) -> None:
    """A loss that is nan on rank 1 only: both ranks skip the step (no update anywhere), then both stop."""
    import math

    join_group(rank, world, port)
    from mtssl.training.distributed import from_environment
    from mtssl.training.guard import DivergenceError
    from mtssl.training.trainer import Trainer

    cluster = from_environment()
    config = tiny_config(out, ["cls:fixmatch"], steps=4, save_every=100, eval_every=100, skip_nonfinite=1,
                         name="diverge")
    run = RunDir(cluster.share(str(RunDir.create(config).path) if cluster.is_main else None))
    trainer = Trainer(config, PluginHost(), run, rank=cluster.rank, world=cluster.world)
    strategy = trainer.parts.strategies["cls"][0]
    original = strategy.loss

    def nan_on_rank_one(inputs):
        out = original(inputs)
        if rank == 1 and inputs.step in (1, 2):
            out.loss = out.loss * math.nan
        return out

    strategy.loss = nan_on_rank_one
    snapshots = []
    try:
        trainer.fit(on_step=lambda step, logs: snapshots.append(_flat_weights(trainer).clone()))
        error = None
    except DivergenceError as exc:
        error = str(exc)
    results[rank] = {"error": error, "steps": len(snapshots), "skip_kept": torch.equal(snapshots[0], snapshots[1])}
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_a_nan_on_one_rank_makes_every_rank_skip_then_stop(tmp_path):
    results = run_processes(_diverge_worker, str(tmp_path))
    for rank in (0, 1):
        assert results[rank]["steps"] == 2 and results[rank]["skip_kept"], results[rank]
        assert "at step 3" in results[rank]["error"]
    assert "loss term 'cls/fixmatch' is nan at step 3" in results[1]["error"]
    assert "a loss term on another process" in results[0]["error"]
