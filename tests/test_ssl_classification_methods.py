"""Pseudo-Label, UDA, FlexMatch, SoftMatch, AdaMatch and SimMatch against their papers' equations on hand-computed
cases; each trains from the CLI and serves class targets only; the stateful ones keep their statistics through a
skipped step and a resume, and agree across processes."""
from __future__ import annotations

import math
import signal

import pytest
import torch
import torch.distributed as dist

from conftest import TINY_DATA, invoke, read_metrics, tiny_config, tiny_trainer, train_run
from mtssl.api import StrategyInputs, gather_rows, pooled_means, softmatch_update, softmatch_weights
from processes import join_group, run_processes

METHODS = ["pseudolabel", "uda", "flexmatch", "softmatch", "adamatch", "simmatch"]
STATEFUL = {"flexmatch": ("learning",), "softmatch": ("mean", "variance", "p_model"),
            "adamatch": ("p_labeled", "p_unlabeled"), "simmatch": ("bank", "labels")}
QUICK = {"flexmatch": {"momentum": 0.5, "threshold": 0.5}, "softmatch": {"momentum": 0.5},
         "adamatch": {"momentum": 0.5}, "simmatch": {"bank": 4}}  # statistics that move visibly in a few steps
LN2 = math.log(2.0)


def all_stateful_spec() -> str:
    """One classification task trained by every stateful strategy at once, each with its :data:`QUICK` options."""
    names = sorted(STATEFUL)
    options = [f"{name}.{key}={value}" for name in names for key, value in QUICK[name].items()]
    return "cls:" + "+".join(names) + ":" + ",".join(options)


def logits_of(*rows: tuple[float, float]) -> torch.Tensor:
    """Two-class logits whose softmax is each row (``log p``)."""
    return torch.tensor([[math.log(a), math.log(b)] for a, b in rows])


def score(host, method: str, views: dict, labeled: torch.Tensor | None = None, step: int = 0, **options):
    strategy = host.create("strategy", method, **options)
    return strategy, strategy.loss(StrategyInputs(host.create("task", "cls"), views, labeled, None, step=step))


# -- the papers' equations, by hand ------------------------------------------------------------------------
def test_pseudo_label_trains_the_weak_view_on_its_own_confident_labels_with_lee_ramp(host):
    weak = logits_of((0.9, 0.1), (0.55, 0.45)).requires_grad_()
    strategy, out = score(host, "pseudolabel", {"weak": weak}, step=6, threshold=0.8, weight=2.0, rampup=10,
                          start=4)
    # only image 1 passes 0.8; CE(label 0) = -ln 0.9, averaged over 2 images; alpha(6) = 2 * (6 - 4) / 10
    assert out.logs["mask_rate"].item() == 0.5
    assert out.loss.item() == pytest.approx(0.4 * -math.log(0.9) / 2, rel=1e-6)
    out.loss.backward()
    assert weak.grad[0].abs().sum() > 0 and weak.grad[1].abs().sum() == 0  # the view itself learns
    assert [strategy.current_weight(s) for s in (0, 4, 9, 14, 99)] == pytest.approx([0, 0, 1.0, 2.0, 2.0])


def test_uda_is_kl_from_the_sharpened_confident_weak_view_to_the_strong_view(host):
    weak = logits_of((0.75, 0.25), (0.5, 0.5))
    strong = torch.tensor([[0.0, 0.0], [5.0, -5.0]], requires_grad=True)
    _, out = score(host, "uda", {"weak": weak, "strong": strong}, T=0.5, threshold=0.7, weight=3.0)
    # image 1: (.75, .25) sharpened at T = 0.5 -> (.5625, .0625) / .625 = (.9, .1); strong (.5, .5)
    kl = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert out.logs["mask_rate"].item() == 0.5  # image 2 (confidence .5) is masked out
    assert out.loss.item() == pytest.approx(3.0 * kl / 2, rel=1e-5)
    out.loss.backward()
    assert strong.grad[1].abs().sum() == 0


# weak probabilities: class 0 confident twice, class 1 once, one image unconfident (threshold 0.8)
FLEX_WEAK = [(0.9, 0.1), (0.85, 0.15), (0.1, 0.9), (0.6, 0.4)]


@pytest.mark.parametrize("warmup, mapping, thresholds", [
    # learning status after one batch at momentum .5: .5 * (0, 0, 1) + .5 * (2/4, 1/4, 1/4) = (.25, .125, .625)
    (True, "convex", [0.8 * 0.4 / 1.6, 0.8 * 0.2 / 1.8]),   # beta = sigma / max(max sigma, unused) = (.4, .2)
    (True, "linear", [0.8 * 0.4, 0.8 * 0.2]),
    (False, "convex", [0.8 * 1.0 / 1.0, 0.8 * 0.5 / 1.5]),  # beta = sigma / max sigma = (1, .5)
])
def test_flexmatch_class_thresholds_follow_each_class_learning_status(host, warmup, mapping, thresholds):
    strong = torch.zeros(4, 2, requires_grad=True)
    strategy, out = score(host, "flexmatch", {"weak": logits_of(*FLEX_WEAK), "strong": strong}, threshold=0.8,
                          momentum=0.5, warmup=warmup, mapping=mapping, weight=2.0)
    strategy.commit()
    assert strategy.state["learning"].tolist() == pytest.approx([0.25, 0.125, 0.625])
    assert strategy.thresholds().tolist() == pytest.approx(thresholds, rel=1e-6)
    kept = [max(p) >= thresholds[p.index(max(p))] for p in FLEX_WEAK]
    assert kept == ([True] * 4 if warmup else [True, True, True, False])  # .6 of class 0 misses 0.8
    assert out.logs["mask_rate"].item() == sum(kept) / 4
    assert out.loss.item() == pytest.approx(2.0 * LN2 * sum(kept) / 4, rel=1e-6)  # CE at zero logits: ln 2


def test_softmatch_weighs_each_pseudo_label_by_a_truncated_gaussian_of_its_confidence(host):
    weak = logits_of((0.9, 0.1), (0.6, 0.4), (0.3, 0.7))
    strong = torch.zeros(3, 2, requires_grad=True)
    strategy, out = score(host, "softmatch", {"weak": weak, "strong": strong}, momentum=0.0, align=False,
                          weight=2.0)
    confidence = [0.9, 0.6, 0.7]
    mu = sum(confidence) / 3                                   # .733: .6 and .7 fall below it
    var = sum((c - mu) ** 2 for c in confidence) / 2           # unbiased: .0233
    gaussian = [math.exp(-(c - mu) ** 2 / (2 * var / 2 ** 2)) for c in (0.6, 0.7)]  # n_sigma 2: .218, .909
    weights = [1.0, *gaussian]                                 # at or above mu: 1
    assert out.logs["mu"].item() == pytest.approx(mu, rel=1e-6)
    assert out.logs["variance"].item() == pytest.approx(var, rel=1e-4)
    assert out.logs["mask_rate"].item() == pytest.approx(sum(weights) / 3, rel=1e-4)
    assert out.loss.item() == pytest.approx(2.0 * LN2 * sum(weights) / 3, rel=1e-4)


def test_softmatch_uniform_alignment_divides_by_the_running_class_means(host):
    rows = [(0.9, 0.1), (0.6, 0.4), (0.3, 0.7)]
    strategy, out = score(host, "softmatch", {"weak": logits_of(*rows), "strong": torch.zeros(3, 2)},
                          momentum=0.0)
    p_model = [0.6, 0.4]                                       # the batch's class means
    aligned = [(a * 0.5 / p_model[0], b * 0.5 / p_model[1]) for a, b in rows]
    confidence = [max(a, b) / (a + b) for a, b in aligned]     # .857, .5, .778
    mu = sum(confidence) / 3
    strategy.commit()
    assert strategy.state["p_model"].tolist() == pytest.approx(p_model, rel=1e-6)
    assert strategy.state["mean"].item() == pytest.approx(mu, rel=1e-6)


def test_adamatch_aligns_to_the_labeled_distribution_and_thresholds_relative_to_labeled_confidence(host):
    labeled = logits_of((0.9, 0.1), (0.2, 0.8))                # class means (.55, .45), mean confidence .85
    weak = logits_of((0.8, 0.2), (0.4, 0.6))                   # class means (.6, .4)
    strong = torch.zeros(2, 2, requires_grad=True)
    strategy, out = score(host, "adamatch", {"weak": weak, "strong": strong}, labeled, tau=0.8, momentum=0.0,
                          weight=2.0)
    aligned = [(0.8 * 0.55 / 0.6, 0.2 * 0.45 / 0.4), (0.4 * 0.55 / 0.6, 0.6 * 0.45 / 0.4)]
    confidence = [max(a, b) / (a + b) for a, b in aligned]     # .765, .648
    cutoff = 0.8 * 0.85                                        # .68: only image 1 passes
    assert out.logs["cutoff"].item() == pytest.approx(cutoff, rel=1e-6)
    assert [c >= cutoff for c in confidence] == [True, False]
    assert out.logs["mask_rate"].item() == 0.5
    assert out.loss.item() == pytest.approx(2.0 * LN2 / 2, rel=1e-6)
    # without alignment image 2 (.6) would pass too: the labeled distribution matters
    strategy.commit()
    assert strategy.state["p_labeled"].tolist() == pytest.approx([0.55, 0.45], rel=1e-6)
    assert strategy.state["p_unlabeled"].tolist() == pytest.approx([0.6, 0.4], rel=1e-6)



def one_by_one(*rows: tuple[float, float]) -> list[torch.Tensor]:
    """A feature pyramid whose deepest map is 1x1, so each image's embedding is its row, normalised."""
    return [torch.tensor(rows).reshape(len(rows), 2, 1, 1)]


def test_simmatch_refines_pseudo_labels_by_similarity_to_the_labeled_bank_by_hand(host):
    e = math.e
    strategy = host.create("strategy", "simmatch", T=1.0, alpha=0.5, threshold=0.6, weight=2.0, instance_weight=3.0,
                           bank=2)
    strategy.load_state_dict({"bank": torch.eye(2), "labels": torch.tensor([0, 1])})  # one embedding per class
    views = {"weak": logits_of((0.6, 0.4)), "strong": logits_of((0.75, 0.25)).requires_grad_(),
             "labeled": torch.zeros(1, 2)}
    features = {"weak": one_by_one((3.0, 0.0)), "strong": one_by_one((0.0, 2.0)), "labeled": one_by_one((3.0, 4.0))}
    out = strategy.loss(StrategyInputs(host.create("task", "cls"), views, None, None, step=0,
                                       view_targets={"labeled": torch.tensor([1])}, view_features=features))
    q = [e / (e + 1), 1 / (e + 1)]                      # softmax of the weak embedding (1, 0) . bank / T
    refined = [0.5 * 0.6 + 0.5 * q[0], 0.5 * 0.4 + 0.5 * q[1]]  # (.666, .334): passes 0.6
    unfolded = [q[0] * 0.6 / (q[0] * 0.6 + q[1] * 0.4), q[1] * 0.4 / (q[0] * 0.6 + q[1] * 0.4)]
    log_student = [-math.log(1 + e), 1 - math.log(1 + e)]  # log softmax of the strong embedding (0, 1) . bank
    instance = -(unfolded[0] * log_student[0] + unfolded[1] * log_student[1])
    assert out.logs["mask_rate"].item() == 1.0
    assert out.logs["class"].item() == pytest.approx(-(refined[0] * math.log(0.75) + refined[1] * math.log(0.25)),
                                                     rel=1e-6)  # soft CE of the strong view against the refined label
    assert out.logs["instance"].item() == pytest.approx(instance, rel=1e-6)
    assert out.loss.item() == pytest.approx(2.0 * out.logs["class"].item() + 3.0 * instance, rel=1e-6)
    strategy.commit()  # the labeled embedding (.6, .8) enters the front of the queue, the oldest leaves
    assert strategy.state["bank"].flatten().tolist() == pytest.approx([0.6, 0.8, 1.0, 0.0])
    assert strategy.state["labels"].tolist() == [1, 0]

    # raising the threshold above the refined confidence masks the class term, not the instance term
    strict = host.create("strategy", "simmatch", T=1.0, alpha=0.5, threshold=0.7, instance_weight=0.0)
    strict.load_state_dict({"bank": torch.eye(2), "labels": torch.tensor([0, 1])})
    out = strict.loss(StrategyInputs(host.create("task", "cls"), views, None, None, step=0,
                                     view_targets={"labeled": torch.tensor([1])}, view_features=features))
    assert out.logs["mask_rate"].item() == 0.0 and out.loss.item() == 0.0

# -- the building blocks -----------------------------------------------------------------------------------
def test_softmatch_update_and_weights_by_hand():
    mean, var = softmatch_update(torch.tensor(0.5), torch.tensor(1.0), torch.tensor([0.9, 0.7]), momentum=0.5)
    # batch mean .8, unbiased variance ((.1)^2 + (.1)^2) / 1 = .02
    assert mean.item() == pytest.approx(0.5 * 0.5 + 0.5 * 0.8)
    assert var.item() == pytest.approx(0.5 * 1.0 + 0.5 * 0.02, rel=1e-5)
    weights = softmatch_weights(torch.tensor([0.9, 0.5]), torch.tensor(0.7), torch.tensor(0.08), n_sigma=2.0)
    assert weights.tolist() == pytest.approx([1.0, math.exp(-0.04 / 0.04)], rel=1e-5)  # (.2)^2 / (2 * .08 / 4)


def test_pooled_means_over_processes_equal_the_means_of_the_batches_together():
    mine = [torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0], [5.0]])]
    theirs = [torch.tensor([[3.0, 0.0], [5.0, 4.0]]), torch.tensor([[7.0]])]
    their_sums: list[torch.Tensor] = []
    pooled_means(theirs, reduce=lambda sums: their_sums.append(sums) or sums)
    reduced = pooled_means(mine, reduce=lambda sums: sums + their_sums[0])
    assert [m.tolist() for m, _ in reduced] == [[3.0, 2.0], [5.0]]
    assert [c.item() for _, c in reduced] == [3, 3]
    assert [m.tolist() for m, _ in pooled_means(mine)] == [[1.0, 2.0], [4.0]]  # without reduce: this batch


def test_softmatch_statistics_reduced_over_processes_equal_one_update_on_every_batch():
    mine, theirs = torch.tensor([0.9]), torch.tensor([0.6, 0.7, 0.95])
    state = (torch.tensor(0.5), torch.tensor(1.0))
    their_sums: list[torch.Tensor] = []
    softmatch_update(*state, theirs, 0.9, reduce=lambda sums: their_sums.append(sums) or sums)
    reduced = softmatch_update(*state, mine, 0.9, reduce=lambda sums: sums + their_sums[0])
    together = softmatch_update(*state, torch.cat([mine, theirs]), 0.9)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(reduced, together))



def test_gather_rows_stacks_every_process_rows_in_rank_order():
    rows = {0: torch.tensor([[1.0, 2.0]]), 1: torch.tensor([[3.0, 4.0]])}
    sent = {rank: [] for rank in rows}
    for rank in rows:  # what each rank contributes to the collective sum
        gather_rows(rows[rank], rank, 2, reduce=lambda blocks, rank=rank: sent[rank].append(blocks) or blocks)
    total = sent[0][0] + sent[1][0]
    for rank in rows:
        assert gather_rows(rows[rank], rank, 2, reduce=lambda blocks: total).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert gather_rows(rows[1], 0, 1).tolist() == [[3.0, 4.0]]  # one process: its own rows

# -- state: proposed, committed, resumed -------------------------------------------------------------------
def stateful_inputs(host, classes: int = 2) -> StrategyInputs:
    torch.manual_seed(0)
    views = {"weak": torch.randn(4, classes) * 3, "strong": torch.randn(4, classes), "labeled": torch.randn(3, classes)}
    features = {key: [torch.randn(len(v), 8, 2, 2)] for key, v in views.items()}
    return StrategyInputs(host.create("task", "cls"), views, torch.randn(3, classes) * 3, None, step=0,
                          view_targets={"labeled": torch.tensor([0, 1, 1])}, view_features=features)


def quick(host, method: str):
    return host.create("strategy", method, **QUICK[method])


@pytest.mark.parametrize("method", sorted(STATEFUL))
def test_a_step_that_is_not_committed_leaves_the_statistics_as_they_were(host, method):
    strategy = quick(host, method)
    inputs = stateful_inputs(host)
    first = strategy.loss(inputs)
    assert strategy.state_dict() == {}  # proposed, not kept
    again = strategy.loss(inputs)  # the skipped step's proposal is forgotten: the same proposal from the same state
    assert torch.equal(first.loss, again.loss)
    strategy.commit()
    kept = strategy.state_dict()
    assert set(kept) == set(STATEFUL[method])
    strategy.loss(inputs)  # proposed from the committed state, never committed
    assert all(torch.equal(kept[k], v) for k, v in strategy.state_dict().items())
    strategy.commit()
    assert any(not torch.equal(kept[k], v) for k, v in strategy.state_dict().items())

    fresh = quick(host, method)
    fresh.load_state_dict(kept)
    assert all(torch.equal(kept[k], v) for k, v in fresh.state_dict().items())
    with pytest.raises(ValueError, match=f"strategy '{method}' keeps .*, but the checkpoint holds \\['other'\\]"):
        fresh.load_state_dict({"other": torch.zeros(1)})


@pytest.mark.parametrize("method", sorted(STATEFUL))
def test_a_stopped_run_resumes_its_statistics_bit_exactly(host, tmp_path, method):
    from mtssl.run.rundir import RunDir
    from mtssl.training.stopping import TrainingStopped
    from mtssl.training.trainer import Trainer

    options = ",".join(f"{key}={value}" for key, value in QUICK[method].items())
    spec, settings = f"cls:{method}:{options}", dict(steps=3, eval_every=2, save_every=100)
    straight = tiny_trainer(host, tmp_path / "straight", [spec], **settings)
    straight.fit()
    stopped = tiny_trainer(host, tmp_path / "stopped", [spec], **settings)
    with pytest.raises(TrainingStopped):
        stopped.fit(on_step=lambda step, logs: stopped.stop.request(signal.SIGTERM) if step == 1 else None)
    run = RunDir(stopped.run.path)
    resumed = Trainer(run.config(), host, run)
    resumed.resume()
    assert resumed.parts.strategies["cls"][0].state_dict().keys() == set(STATEFUL[method])  # restored, not fresh
    resumed.fit()
    states = [t.parts.strategies["cls"][0].state_dict() for t in (straight, resumed)]
    assert all(torch.equal(states[0][k], states[1][k]) for k in STATEFUL[method])
    weights = [torch.cat([p.detach().flatten() for p in t.model.parameters()]) for t in (straight, resumed)]
    assert torch.equal(*weights)
    logs = [[{k: v for k, v in line.items() if k not in ("step_time", "time")} for line in read_metrics(t.run.path)]
            for t in (straight, resumed)]
    assert logs[0] == logs[1]



def test_a_skipped_step_in_training_moves_no_statistics(host, tmp_path):
    trainer = tiny_trainer(host, tmp_path, [all_stateful_spec()], steps=3, eval_every=100, skip_nonfinite=1)
    strategies = trainer.parts.strategies["cls"]
    original = strategies[0].loss

    def nan_at_step_1(inputs):
        out = original(inputs)
        if inputs.step == 1:
            out.loss = out.loss * math.nan
        return out

    strategies[0].loss = nan_at_step_1
    states = []
    trainer.fit(on_step=lambda step, logs: states.append([s.state_dict() for s in strategies]))
    assert trainer.guard.skipped == 1
    for i, strategy in enumerate(strategies):
        before, skipped, applied = (states[step][i] for step in range(3))
        assert set(before) == set(STATEFUL[strategy.name])
        assert all(torch.equal(before[k], skipped[k]) for k in before), strategy.name  # skipped: unchanged
        assert any(not torch.equal(skipped[k], applied[k]) for k in before), strategy.name  # applied: moved



def _two_process_worker(rank: int, world: int, port: int, spec: str, out: str, results) -> None:
    join_group(rank, world, port)
    from mtssl.plugins import PluginHost
    from mtssl.run.rundir import RunDir
    from mtssl.training.distributed import from_environment
    from mtssl.training.trainer import Trainer

    cluster = from_environment()
    config = tiny_config(out, [spec], steps=2, eval_every=100, name="stats")
    run = RunDir(cluster.share(str(RunDir.create(config).path) if cluster.is_main else None))
    trainer = Trainer(config, PluginHost(), run, rank=cluster.rank, world=cluster.world)
    first_batch = trainer.unlabeled["cls"].next()[0].float().sum()  # a stream draw: shards differ by rank
    trainer.fit()
    state = torch.cat([v.float().reshape(-1) for s in trainer.parts.strategies["cls"]
                       for _, v in sorted(s.state_dict().items())])
    gathered = [torch.zeros_like(state) for _ in range(world)]
    dist.all_gather(gathered, state)
    batches = [torch.zeros_like(first_batch) for _ in range(world)]
    dist.all_gather(batches, first_batch)
    results[rank] = {"states": [g.tolist() for g in gathered], "batches": [b.item() for b in batches]}
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_statistics_are_reduced_over_processes_and_identical_on_every_rank(tmp_path):
    results = run_processes(_two_process_worker, all_stateful_spec(), str(tmp_path))
    mine = results[0]
    assert mine["batches"][0] != mine["batches"][1]  # each rank scores its own images...
    assert mine["states"][0] == mine["states"][1]  # ...and yet all keep the same statistics and bank, bit for bit

# -- from the command line ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_a_step_from_the_cli_and_logs_its_mask_rate(tmp_path, method):
    line = read_metrics(train_run(f"cls:{method}", out=tmp_path, steps=1))[0]
    assert math.isfinite(line[f"cls/{method}"]) and 0.0 <= line[f"cls/{method}/mask_rate"] <= 1.0


@pytest.mark.parametrize("method", METHODS)
def test_each_method_refuses_mask_targets_at_check(method):
    result = invoke(["train", "--check", "--size", "32", "--task", f"seg:{method}", *TINY_DATA["seg"]])
    assert result.exit_code != 0
    assert f"strategy '{method}' cannot train task 'seg': it does not serve mask targets" in result.output


@pytest.mark.parametrize("method", METHODS)
def test_each_listing_names_the_options_and_their_defaults(host, method):
    """What ``mtssl plugins`` says a method's defaults are is what its Options model declares."""
    import importlib

    from mtssl.spec import parse_value

    entry = host.registry("strategy").get(method)
    listed = dict(item.split("=", 1) for item in entry.description.split("options ", 1)[1].split(", "))
    module, strategy = entry.factory.split(":")  # each declares its options as STRATEGYOptions beside it
    options = getattr(importlib.import_module(module), f"{strategy}Options")
    defaults = {name: info.default for name, info in options.model_fields.items()}
    assert set(listed) == set(defaults)
    assert {name: parse_value(value.split("|")[0]) for name, value in listed.items()} == defaults

@pytest.mark.parametrize("spec, message", [
    ("flexmatch:mapping=concave", "option mapping: input should be 'convex' or 'linear'"),
    ("softmatch:n_sigma=0", "option n_sigma: must satisfy x > 0.0, got 0"),
    ("uda:T=0", "option T: must satisfy 0.0 < x <= 1.0, got 0"),
    ("adamatch:tau=1.5", "option tau: must satisfy 0.0 <= x <= 1.0, got 1.5"),
    ("pseudolabel:rampup=-1", "option rampup: must satisfy x >= 0, got -1"),
    ("simmatch:bank=0", "option bank: must satisfy x >= 1, got 0"),
])
def test_options_are_range_checked_in_one_line(host, spec, message):
    name, option = spec.split(":")
    key, value = option.split("=")
    with pytest.raises(ValueError, match=f"strategy '{name}': {message}"):
        host.create("strategy", name, **{key: value if key == "mapping" else float(value)})
