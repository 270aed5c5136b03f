"""examples/findings-plugin, installed through its own pyproject.toml: multi-label findings with unread labels
and unlabeled items, fed by a mask bridge chained after saliency, trained with a strategy whose state is
reduced over processes and committed only by applied steps."""
from __future__ import annotations

import json
import math
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from conftest import TINY_TASK_DATA, invoke, read_metrics
from example_packages import EXAMPLES, install_example
from run_files import state_tensors
from mtssl.plugins import PluginHost
from mtssl.run.config import RunConfig, TaskData
from mtssl.run.rundir import RunDir
from mtssl.training.stopping import TrainingStopped
from mtssl.training.trainer import Trainer
from processes import join_group, run_processes

PACKAGE = EXAMPLES / "findings-plugin"
FINDINGS_DATA = TaskData(train="findings-phantom:n=24", labels=6)
CHAIN = dict(tasks=["cls:fixmatch", "seg:kl", "findings:softmatch-ml"], bridges=["saliency", "mask:seg->findings"])
STRATEGY_STATE = "s/strategy/findings/softmatch-ml"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return install_example(tmp_path_factory, "findings-plugin", "mtssl-findings")


@pytest.fixture
def installed(site, monkeypatch):
    """The installed package on sys.path for this test: its entry point is found by every PluginHost."""
    monkeypatch.syspath_prepend(str(site))
    yield site
    for module in [m for m in sys.modules if m == "mtssl_findings" or m.startswith("mtssl_findings.")]:
        del sys.modules[module]


def config(out: Path, tasks: list[str], bridges: list[str] = (), **overrides) -> RunConfig:
    """A tiny 32 px run of ``tasks`` on synthetic cls/seg data and 24 findings phantoms (6 labeled)."""
    settings = dict(size=32, batch_size=2, steps=3, eval_every=3, save_every=1, out=str(out), precision="fp32")
    settings.update(overrides)
    names = [t.split(":", 1)[0] for t in tasks]
    data = {n: TaskData(**TINY_TASK_DATA[n]) if n in TINY_TASK_DATA else FINDINGS_DATA for n in names}
    return RunConfig(tasks=list(tasks), bridges=list(bridges), data=data, **settings)


def test_plugins_lists_the_task_source_and_strategy(installed):
    result = invoke(["plugins", "--json"])
    assert result.exit_code == 0, result.output
    listed = {(c["kind"], c["name"]): c["distribution"] for c in json.loads(result.stdout)["components"]}
    for component in [("task", "findings"), ("source", "findings-phantom"), ("strategy", "softmatch-ml")]:
        assert listed[component] == "mtssl-findings", component


def test_findings_chained_after_saliency_train_and_items_without_target_stay_unlabeled(installed, tmp_path):
    args = ["train", "--quiet", "--size", "32", "--batch-size", "2", "--steps", "3", "--eval-every", "3",
            "--precision", "fp32", "--out", str(tmp_path), "--name", "chain", "--task", "cls:fixmatch",
            "--task", "seg:kl", "--task", "findings:softmatch-ml", "--bridge", "saliency",
            "--bridge", "mask:seg->findings", "--cls-data", "synthetic:n=24", "--cls-labels", "8",
            "--seg-data", "synthetic:n=16", "--seg-labels", "4", "--findings-labels", "6"]
    result = invoke(args)  # no --findings-data: the task's default source, findings-phantom
    assert result.exit_code == 0, result.output
    run = tmp_path / "chain"
    lines = read_metrics(run)
    assert all(math.isfinite(line["findings/sup"]) and math.isfinite(line["findings/softmatch-ml"]) for line in lines)
    assert {"val/findings/accuracy", "seg/kl", "cls/fixmatch"} <= set(lines[-1])
    listing = json.loads((run / "splits" / "findings.json").read_text())
    without_target = set(listing["no_target"])
    from mtssl_findings.phantom import build_phantom

    seed = int(next(iter(without_target)).split("/")[1][1:])  # keys are findings-phantom/sSEED/INDEX
    source = build_phantom("findings-phantom", seed=seed)  # the default source, as the run drew it
    assert without_target == {key for key, labeled in zip(source.keys, source.labeled()) if not labeled}
    assert not without_target & (set(listing["labeled"]) | set(listing["val"]))
    patient = lambda key: int(key.rsplit("/", 1)[1]) // 2  # noqa: E731  (two studies per patient)
    validated = {patient(key) for key in listing["val"]}
    held_out = {key for key in without_target if patient(key) in validated}  # never trained beside its validation
    assert held_out and held_out <= set(listing["excluded"])
    assert without_target - held_out <= set(listing["unlabeled"])
    assert listing["counts"]["labeled"] == 6 and listing["counts"]["no_target"] == len(without_target)

    # the README's evaluation on a fresh phantom range, every item read (fewer items than the README's 200)
    scored = invoke(["eval", str(run), "--json", "--findings-test", "findings-phantom:n=20,start=100000,unlabeled=0"])
    assert scored.exit_code == 0, scored.output
    readme = (PACKAGE / "README.md").read_text()
    assert "--findings-test findings-phantom:n=200,start=100000,unlabeled=0" in readme
    result = json.loads(scored.stdout)["findings"]["findings-phantom:n=20,start=100000,unlabeled=0"]
    assert result["n"] == 20
    assert set(result["aggregate"]) == {"accuracy", "nodule/auc", "effusion/auc", "cardiomegaly/auc", "mean_auc"}
    assert all(0.0 <= v["mean"] <= 1.0 for v in result["aggregate"].values())
    records = result["per_image"]
    assert [r["key"].rsplit("/", 1)[1] for r in records] == [str(100000 + i) for i in range(20)]
    assert all(r["known"] >= 1 for r in records)  # unlabeled=0: every item has a target (some findings unread)


def test_resume_after_step_one_ends_bit_identical_with_the_strategy_state(installed, tmp_path):
    host = PluginHost()

    def trainer(name: str) -> Trainer:
        settings = config(tmp_path, **CHAIN, name=name)
        return Trainer(settings, host, RunDir.create(settings))

    straight = trainer("straight")
    straight.fit()
    stopped = trainer("stopped")
    with pytest.raises(TrainingStopped) as info:
        stopped.fit(on_step=lambda step, logs: stopped.stop.request(signal.SIGTERM) if step == 1 else None)
    assert info.value.step == 1
    result = invoke(["train", "--resume", str(stopped.run.path)])
    assert result.exit_code == 0, result.output
    mine, theirs = state_tensors(stopped.run.path), state_tensors(straight.run.path)
    assert mine.keys() == theirs.keys()
    assert [k for k in mine if not torch.equal(mine[k], theirs[k])] == []
    strategy = [v.item() for k, v in theirs.items() if k.startswith(f"{STRATEGY_STATE}/")]
    assert len(strategy) == 2 and not {0.5, 1.0} & set(strategy)  # mean and variance moved from their start


def test_a_skipped_step_leaves_the_strategy_state_as_it_was(installed, tmp_path):
    settings = config(tmp_path, ["findings:softmatch-ml"], steps=2, eval_every=100, save_every=100, skip_nonfinite=1)
    trainer = Trainer(settings, PluginHost(), RunDir.create(settings))
    strategy = trainer.parts.strategies["findings"][0]
    propose = strategy.loss

    def nan_at_step_one(inputs):
        out = propose(inputs)
        if inputs.step == 0:  # counted from 0 here, from 1 in on_step
            out.loss = out.loss * math.nan
        return out

    strategy.loss = nan_at_step_one
    states = []
    trainer.fit(on_step=lambda step, logs: states.append({k: v.item() for k, v in strategy.state_dict().items()}))
    assert states[0] == {"mean": 0.5, "variance": 1.0}  # proposed at step 1, never committed
    assert states[1]["mean"] != 0.5 and states[1]["variance"] != 1.0



def _worker(rank: int, world: int, port: int, out: str, results) -> None:
    join_group(rank, world, port)
    from mtssl.training.distributed import from_environment

    cluster = from_environment()
    settings = config(out, ["findings:softmatch-ml"], steps=2, eval_every=100, save_every=100, name="ddp")
    run = RunDir(cluster.share(str(RunDir.create(settings).path) if cluster.is_main else None))
    trainer = Trainer(settings, PluginHost(), run, rank=cluster.rank, world=cluster.world)
    first_unlabeled = trainer.unlabeled["findings"].next()[0].float().sum().item()
    trainer.fit()
    state = trainer.parts.strategies["findings"][0].state_dict()
    results[rank] = {"state": {k: v.tolist() for k, v in state.items()}, "first_unlabeled": first_unlabeled}
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_two_processes_keep_the_same_strategy_state(installed, tmp_path):
    results = run_processes(_worker, str(tmp_path))
    assert results[0]["first_unlabeled"] != results[1]["first_unlabeled"]  # each rank sees its own shard
    assert results[0]["state"] == results[1]["state"]
    assert results[0]["state"]["mean"] != 0.5


def test_the_masked_loss_and_evaluation_skip_unread_findings(installed):
    from mtssl_findings.task import Findings

    task = Findings("findings", weight=2.0)
    nan = math.nan
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, 0.0, 3.0]], requires_grad=True)
    target = torch.tensor([[1.0, nan, 0.0], [nan, nan, 1.0]])
    loss = task.supervised_loss(logits, target)
    # known: (logit 0, truth 1) -> ln 2; (-1, 0) -> ln(1 + e^-1); (3, 1) -> ln(1 + e^-3); mean of three, times 2
    expected = 2 * (math.log(2) + math.log1p(math.exp(-1)) + math.log1p(math.exp(-3))) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert logits.grad[target.isnan()].abs().sum() == 0  # an unread finding teaches nothing

    probabilities = np.array([[0.9, 0.2, 0.6], [0.3, 0.8, 0.4], [0.7, 0.1, 0.9], [0.4, 0.6, 0.2]])
    targets = np.array([[1, nan, 0], [0, 1, nan], [nan, 0, 1], [1, nan, 1]], np.float32)
    scores = task.evaluate(probabilities, targets).aggregate
    # known findings: 8; correct at 0.5: (0.9,1) (0.6,0)x (0.3,0) (0.8,1) (0.1,0) (0.9,1) (0.4,1)x (0.2,1)x -> 5/8
    assert scores["accuracy"]["mean"] == pytest.approx(5 / 8)
    # nodule read on images 0, 1, 3: positives score 0.9 and 0.4 against the negative 0.3 -> AUC 1
    assert scores["nodule/auc"]["mean"] == pytest.approx(1.0)
    assert scores["effusion/auc"]["mean"] == pytest.approx(1.0)  # 0.8 (positive) over 0.1
    # cardiomegaly read on 0, 2, 3: positives 0.9, 0.2 against negative 0.6 -> one pair of two ordered
    assert scores["cardiomegaly/auc"]["mean"] == pytest.approx(0.5)
    assert scores["mean_auc"]["mean"] == pytest.approx(2.5 / 3)


def test_softmatch_weights_follow_the_truncated_gaussian(installed):
    from mtssl_findings.softmatch import confidence_statistics, truncated_gaussian

    confidence = torch.tensor([0.5, 0.7, 0.9, 1.0])
    mean, variance = confidence_statistics(torch.tensor(0.5), torch.tensor(1.0), confidence, 0.9, lambda t: t * 2)
    # batch mean 0.775, batch variance (0.25 + 0.49 + 0.81 + 1) / 4 - 0.775^2 = 0.036875 (doubling cancels out)
    assert mean.item() == pytest.approx(0.9 * 0.5 + 0.1 * 0.775)
    assert variance.item() == pytest.approx(0.9 * 1.0 + 0.1 * 0.036875)
    weights = truncated_gaussian(confidence, torch.tensor(0.8), torch.tensor(0.04), 2.0)
    # sigma = sqrt(0.04) / 2 = 0.1: exp(-0.3^2 / 0.02), exp(-0.1^2 / 0.02), then 1 at and above the mean
    assert weights.tolist() == pytest.approx([math.exp(-4.5), math.exp(-0.5), 1.0, 1.0])


def test_the_package_imports_only_the_plugin_api():
    for source in (PACKAGE / "mtssl_findings").glob("*.py"):
        imports = [line for line in source.read_text().splitlines() if line.startswith(("import mtssl", "from mtssl"))]
        assert all(line.startswith(("from mtssl.api import", "from mtssl_findings")) for line in imports), source
