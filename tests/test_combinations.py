"""Pieces combined: every pairwise cell of tasks × strategies × bridges × weighting × precision × backbone ×
processes either trains, stops and resumes bit for bit, or is refused by ``--check`` in one line.

The cells come from :func:`pairwise.all_pairs` (every two levels of every two factors meet in some cell)
instead of the full product. A third-party regression task (``reg``, installed as its own distribution)
stands in for the tasks mtssl has never seen; it takes bridge extras, so a chain ``cls -> seg -> reg``
(saliency, then the mask bridge) is one of the bridge levels. Each cell trains 3 steps at 32 px; a copy
stopped after step 1 resumes in a fresh trainer and must end with the same weights and log.

``EXPECTED_REFUSALS`` is the table of refused combinations in docs/guide/targets.md: a cell refused for
another reason, or a listed cell that trains, fails the test.
"""
from __future__ import annotations

import signal

import pytest
import torch

from conftest import invoke
from pairwise import all_pairs, uncovered_pairs
from processes import join_group, run_processes
from test_stop_resume import log_lines

FACTORS = {
    "tasks": ["cls+seg", "cls", "seg", "cls+seg2", "cls+seg+reg"],
    "ssl": ["multimix", "none", "teacher", "stateful", "features"],
    "bridges": ["saliency", "none", "into-cls", "chained"],
    "weighting": ["equal", "uncertainty", "pcgrad"],
    "precision": ["fp32", "bf16", "fp16"],
    "backbone": ["unet", "timm"],
    "processes": ["1", "2"],
}

TASK_SPECS = {"cls": "cls", "seg": "seg", "seg2": "seg:channels=2", "reg": "reg"}
STRATEGIES = {  # the strategies each task gets at each ssl level
    "none": {},
    "multimix": {"cls": "fixmatch", "seg": "kl", "seg2": "kl"},
    "teacher": {"cls": "meanteacher", "seg": "meanteacher", "seg2": "meanteacher", "reg": "meanteacher"},
    "stateful": {"cls": "freematch", "seg": "cps", "seg2": "cps"},
    # strategies that run a head again on a view's features, or mix images under an EMA teacher
    "features": {"cls": "simmatch", "seg": "unimatch", "seg2": "cutmix-seg"},
}
BRIDGES = {"none": [], "saliency": ["saliency"], "into-cls": ["mask:seg->cls"],
           "chained": ["saliency:cls->seg", "mask:seg->reg"]}
DATA = {"cls": ["--cls-data", "synthetic:n=24", "--cls-labels", "8"],
        "seg": ["--seg-data", "synthetic:n=16", "--seg-labels", "4"],
        "seg2": ["--seg-data", "synthetic:n=16,structures=lungs+heart", "--seg-labels", "4"],
        "reg": ["--reg-labels", "6"]}  # reg's data: its task's default source
BACKBONES = {"unet": "unet", "timm": "timm:model=test_resnet"}

EXPECTED_REFUSALS = [  # (what the refusal says, when): the table in docs/guide/targets.md
    ("weighting 'pcgrad' (a backward per task) can run in one process only",
     lambda cell: cell["processes"] == "2" and cell["weighting"] == "pcgrad"),
    ("strategy 'cps' (a second network)",
     lambda cell: cell["processes"] == "2" and cell["ssl"] == "stateful" and "seg" in cell["tasks"]),
]


def bridge_fits(cell: dict) -> bool:
    """Bridge levels need their tasks: saliency and into-cls a cls and a seg task, the chain also reg."""
    tasks, bridges = cell.get("tasks"), cell.get("bridges")
    if tasks is None or bridges in (None, "none"):
        return True
    names = tasks.split("+")
    has_seg = "seg" in names or "seg2" in names
    return "cls" in names and has_seg and (bridges != "chained" or "reg" in names)


CELLS = all_pairs(FACTORS, bridge_fits)


def test_the_cells_cover_every_allowed_pair_and_stay_few():
    assert not uncovered_pairs(FACTORS, CELLS, bridge_fits)
    assert len(CELLS) <= 30  # the full product would be 5,760 runs


REG_PLUGIN = '''
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from mtssl.api import HeadInputs, Sample, Source, TargetSpec, Task, hookimpl, resize_like

BRIGHTNESS = TargetSpec("brightness", "float32", ())


class RegressionHead(nn.Module):
    """Pooled deepest features, plus the mean of every bridge extra channel, into one number."""

    def __init__(self, inputs):
        super().__init__()
        self.strides = sorted(inputs.extras)
        self.fc = nn.Linear(inputs.channels[-1] + sum(inputs.extras.values()), 1)

    def forward(self, features, extras):
        pooled = [features[-1].mean(dim=(-2, -1))] + [extras[s].mean(dim=(-2, -1)) for s in self.strides]
        return self.fc(torch.cat(pooled, dim=1))


class Brightness(Task):
    target = BRIGHTNESS
    default_source = "reg-phantom"

    def build_head(self, inputs: HeadInputs):
        return RegressionHead(inputs)

    def probabilities(self, output):
        return torch.sigmoid(output.float())

    def supervised_loss(self, output, target):
        return F.mse_loss(self.probabilities(output)[:, 0], target.float())


class Phantom(Source):
    target = BRIGHTNESS

    def __init__(self, n=20, seed=0):
        self.n, self.seed = int(n), seed

    @property
    def keys(self):
        return [f"reg-{i}" for i in range(self.n)]

    def load(self, index):
        rng = np.random.default_rng([self.seed, index])
        level = rng.uniform(0.2, 0.8)
        image = np.clip(rng.normal(level * 255, 20, (40, 40)), 0, 255).astype(np.uint8)
        return Sample(image, np.float32(level))


def phantom(name, path=None, target=None, seed=0, **options):
    return Phantom(seed=seed, **options)


@hookimpl
def register_tasks(register):
    register("reg", Brightness, description="mean brightness, a regression the core has never seen")


@hookimpl
def register_sources(register):
    register("reg-phantom", phantom, description="images of known brightness")
'''


@pytest.fixture
def reg_plugin(plugin_factory):
    plugin_factory.install("mtssl-reg-test", {"mtssl_reg_test": REG_PLUGIN}, {"reg": "mtssl_reg_test"})


def cell_command(cell: dict) -> tuple[list[str], list[str], list[str], dict]:
    """``--task`` specs, ``--bridge`` specs, per-task data arguments and the other options of a cell."""
    tasks, data = [], []
    for name in cell["tasks"].split("+"):
        strategy = STRATEGIES[cell["ssl"]].get(name)
        tasks.append(TASK_SPECS[name] + (f":{strategy}" if strategy else ""))
        data += DATA[name]
    options = {"weighting": cell["weighting"], "precision": cell["precision"], "backbone": BACKBONES[cell["backbone"]]}
    if "architecture" in cell:  # cells that name one; the others run hard sharing
        options["architecture"] = cell["architecture"]
    return tasks, BRIDGES[cell["bridges"]], data, options


def cli_args(cell: dict) -> list[str]:
    tasks, bridges, data, options = cell_command(cell)
    args = ["train", "--check", "--size", "32", "--batch-size", "2", "--steps", "3"]
    for task in tasks:
        args += ["--task", task]
    for bridge in bridges:
        args += ["--bridge", bridge]
    for key, value in options.items():
        args += [f"--{key}", value]
    return args + data


def cell_config(cell: dict, out: str, name: str):
    """The cell's settings through the command line's own resolution (what ``mtssl train`` would run)."""
    from mtssl.cli.train import resolve_config

    tasks, bridges, data, options = cell_command(cell)
    overrides = dict(options, size=32, batch_size=2, steps=3, eval_every=2, save_every=100, out=out, name=name,
                     seed=0)
    return resolve_config(None, data, {**overrides, "tasks": list(tasks), "bridges": list(bridges) or None})


def train_stop_resume(cell: dict, out: str, rank: int = 0, world: int = 1, share=lambda path: path) -> dict:
    """A straight run, a run stopped after its first step, and its resume; what the test compares."""
    from mtssl.plugins import PluginHost
    from mtssl.run.rundir import RunDir
    from mtssl.training.stopping import TrainingStopped
    from mtssl.training.trainer import Trainer

    def trainer_for(name: str) -> Trainer:
        config = cell_config(cell, out, name)
        run = RunDir(share(str(RunDir.create(config).path) if rank == 0 else None))
        return Trainer(config, PluginHost(), run, rank=rank, world=world)

    straight = trainer_for("straight")
    straight.fit()
    stopped = trainer_for("stopped")
    try:
        stopped.fit(on_step=lambda step, logs: stopped.stop.request(signal.SIGTERM) if step == 1 else None)
        stopped_at = None
    except TrainingStopped as exc:
        stopped_at = exc.step
    run = RunDir(stopped.run.path)
    resumed = Trainer(run.config(), PluginHost(), run, rank=rank, world=world)
    resumed.resume()
    resumed.fit()
    weights = [torch.cat([p.detach().flatten().float() for p in t.model.parameters()]) for t in (straight, resumed)]
    return {"stopped_at": stopped_at, "same_weights": torch.equal(*weights),
            "finite": bool(torch.isfinite(weights[0]).all()),
            "logs": [log_lines(t.run.path) for t in (straight, resumed)]}


def _two_process_worker(rank: int, world: int, port: int, cell: dict, out: str, results) -> None:
    join_group(rank, world, port)
    import torch.distributed as dist

    from mtssl.training.distributed import from_environment

    cluster = from_environment()
    results[rank] = train_stop_resume(cell, out, cluster.rank, cluster.world, cluster.share)
    dist.destroy_process_group()


def check_refusal(cell: dict) -> str | None:
    """``mtssl train --check`` of the cell, then the checks that depend on the number of processes (as
    ``--check`` under torchrun makes them): None, or the one line that refuses the cell."""
    from mtssl.plugins import PluginHost
    from mtssl.run.preflight import check_run

    result = invoke(cli_args(cell))
    if result.exit_code != 0:
        text = result.output.strip()
        assert "Traceback" not in text and len(text.splitlines()) == 1, text
        return text
    try:
        check_run(cell_config(cell, "unused", "check"), PluginHost(), world=int(cell["processes"]))
    except ValueError as exc:
        assert len(str(exc).splitlines()) == 1, exc
        return str(exc)
    return None


@pytest.mark.parametrize("cell", CELLS, ids=["-".join(c.values()) for c in CELLS])
def test_every_cell_trains_and_resumes_bit_exactly_or_is_refused_in_one_line(cell, reg_plugin, tmp_path):
    expected = [why for why, when in EXPECTED_REFUSALS if when(cell)]
    refusal = check_refusal(cell)
    if expected or refusal:
        assert expected and refusal, f"refused unexpectedly: {refusal}" if refusal else "not refused"
        assert all(why in refusal for why in expected), refusal
        return
    if cell["processes"] == "1":
        outcome = train_stop_resume(cell, str(tmp_path))
        outcomes = [outcome]
    else:
        results = run_processes(_two_process_worker, cell, str(tmp_path))
        outcomes = [results[0], results[1]]
    for outcome in outcomes:
        assert outcome["stopped_at"] in (1, 2)  # one process stops after step 1; two agree one step later
        assert outcome["finite"]
        assert outcome["same_weights"], cell
        straight, resumed = outcome["logs"]
        assert resumed == straight and len(straight) == 3
