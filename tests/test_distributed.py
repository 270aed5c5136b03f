"""Two CPU processes (gloo) train one model: same weights after every step, different data shards."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mtssl.plugins import PluginHost
from mtssl.rundir import RunDir
from conftest import tiny_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from mtssl.distributed import from_environment
    from mtssl.trainer import Trainer

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
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), results), nprocs=2, join=True)
    assert results[0]["same_weights"] and results[1]["same_weights"]
    assert results[0]["first_batch"] != results[1]["first_batch"]  # each rank draws its own shard
    assert results[0]["run"] == results[1]["run"]  # one run directory, chosen by rank 0
    assert (tmp_path / "ddp" / "checkpoints" / "last.safetensors").exists()
