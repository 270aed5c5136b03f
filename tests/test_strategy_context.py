"""What the core gives strategies beyond views: the process context, a commit point for state, backbone features."""
from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist

from mtssl.api import SSLStrategy, StrategyContext, StrategyLoss, ViewRequest
from mtssl.plugins import PluginHost
from mtssl.run.rundir import RunDir
from conftest import tiny_config, tiny_trainer
from processes import join_group, run_processes

FREEMATCH_STATE = ("time_p", "p_model", "label_hist")



# -- the context -----------------------------------------------------------------------------------------
def test_single_process_context_returns_copies_and_the_trainer_binds_its_own(host, tmp_path):
    context = StrategyContext()
    value = torch.tensor([1.0, 3.0])
    for reduced in (context.all_reduce_sum(value), context.all_reduce_mean(value)):
        assert torch.equal(reduced, value) and reduced.data_ptr() != value.data_ptr()
    trainer = tiny_trainer(host, tmp_path, ["cls:freematch"], weighting="uncertainty")
    bound = trainer.parts.strategies["cls"][0].context
    assert (bound.rank, bound.world_size, bound.device) == (0, 1, trainer.device)
    assert trainer.weighting.context is bound


def _freematch_worker(rank: int, world: int, port: int, out: str, results) -> None:
    join_group(rank, world, port)
    from mtssl.training.distributed import from_environment
    from mtssl.training.trainer import Trainer

    cluster = from_environment()
    config = tiny_config(out, ["cls:freematch:momentum=0.5"], steps=2, eval_every=100, name="fm")
    run = RunDir(cluster.share(str(RunDir.create(config).path) if cluster.is_main else None))
    trainer = Trainer(config, PluginHost(), run, rank=cluster.rank, world=cluster.world)
    strategy = trainer.parts.strategies["cls"][0]
    first_batch = trainer.unlabeled["cls"].next()[0].float().sum()  # (a stream draw: shards differ by rank)
    trainer.fit()
    state = torch.cat([strategy.state_dict()[k].reshape(-1) for k in FREEMATCH_STATE])
    gathered = [torch.zeros_like(state) for _ in range(world)]
    dist.all_gather(gathered, state)
    batches = [torch.zeros_like(first_batch) for _ in range(world)]
    dist.all_gather(batches, first_batch)
    results[rank] = {"states": [g.tolist() for g in gathered], "batches": [b.item() for b in batches],
                     "world": strategy.context.world_size}
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_freematch_statistics_are_reduced_over_processes_and_identical_on_every_rank(tmp_path):
    results = run_processes(_freematch_worker, str(tmp_path))
    mine = results[0]
    assert mine["world"] == 2
    assert mine["batches"][0] != mine["batches"][1]  # each rank scores its own unlabeled images...
    assert mine["states"][0] == mine["states"][1]  # ...and yet both keep the very same thresholds, bit for bit
    assert results[1]["states"] == mine["states"]
    uniform_start = [0.5, 0.5, 0.5, 0.5, 0.5]  # tau, p~ (2 classes), histogram (2 classes) all start at 1/C
    assert mine["states"][0] != uniform_start  # two momentum-0.5 updates moved them


# -- the commit point ----------------------------------------------------------------------------------
def test_a_skipped_step_moves_no_strategy_or_weighting_state(host, tmp_path):
    trainer = tiny_trainer(host, tmp_path, ["cls:freematch:momentum=0.5"], steps=3, eval_every=100,
                           skip_nonfinite=1)
    strategy = trainer.parts.strategies["cls"][0]
    original = strategy.loss

    def nan_at_step_1(inputs):
        out = original(inputs)  # proposes an update of the statistics from this step's batch
        if inputs.step == 1:
            out.loss = out.loss * math.nan
        return out

    strategy.loss = nan_at_step_1
    commits = []
    trainer.weighting.commit = lambda: commits.append(trainer.step)
    states = []
    trainer.fit(on_step=lambda step, logs: states.append(
        {k: v.clone() for k, v in strategy.state_dict().items()}))
    assert trainer.guard.skipped == 1
    assert set(states[0]) == set(FREEMATCH_STATE)
    assert all(torch.equal(states[0][k], states[1][k]) for k in FREEMATCH_STATE)  # skipped: unchanged
    assert not torch.equal(states[1]["p_model"], states[2]["p_model"])  # applied: moved
    assert commits == [0, 2]  # the weighting commits on the applied steps only


# -- backbone features of a view -------------------------------------------------------------------------
class FeatureConsistency(SSLStrategy):
    """A feature-level term: the deepest features of a weak and a strong view of the same images agree."""

    def plan(self):
        return [ViewRequest("weak", "unlabeled", "weak", grad=False, features=True),
                ViewRequest("strong", "unlabeled", "strong_photometric", of="weak", features=True),
                ViewRequest("plain", "unlabeled", "none")]

    def loss(self, inputs):
        self.seen = inputs
        weak, strong = inputs.view_features["weak"][-1], inputs.view_features["strong"][-1]
        return StrategyLoss((strong.float() - weak.float()).pow(2).mean())


def test_a_view_asking_for_features_gets_the_backbone_features_of_its_own_images(host, tmp_path):
    trainer = tiny_trainer(host, tmp_path, ["cls:fixmatch"])
    probe = FeatureConsistency("probe")
    trainer.parts.strategies["cls"].append(probe)  # its views join the fixmatch ones on the unlabeled stream
    trainer.model.eval()  # dropout off, so the features can be recomputed exactly
    result = trainer.compute_loss(trainer.gather_views())
    inputs = probe.seen
    assert set(inputs.view_features) == {"weak", "strong"}  # only the views that asked
    backbone = trainer.model.backbone
    for key in ("weak", "strong"):
        images = inputs.view_images[key]
        with torch.no_grad():
            expected = backbone(images)
        got = inputs.view_features[key]
        assert [f.shape for f in got] == [e.shape for e in expected]
        assert len(got) == len(backbone.channels) and got[0].shape[0] == len(images)
        assert all(torch.allclose(g, e, atol=1e-5) for g, e in zip(got, expected))
    assert not inputs.view_features["weak"][-1].requires_grad  # a target view's features are detached
    assert inputs.view_features["strong"][-1].requires_grad  # a trained view's carry the gradient
    result.terms["cls/probe"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.parameters())
