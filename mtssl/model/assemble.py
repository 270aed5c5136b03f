"""Config -> live components (tasks, strategies, bridges, backbone, model) through the registries."""
from __future__ import annotations

from dataclasses import dataclass

from mtssl.run.config import RunConfig
import torch
from torch import nn

from mtssl.interfaces import Architecture, Backbone, Bridge, SSLStrategy, Task, Weighting
from mtssl.model.network import MultiTaskModel
from mtssl.plugins import PluginHost
from mtssl.targets import TargetSpec
from mtssl.spec import parse_bridge, parse_source, parse_task


@dataclass
class Components:
    tasks: dict[str, Task]
    strategies: dict[str, list[SSLStrategy]]
    bridges: list[Bridge]
    backbone: Backbone
    model: MultiTaskModel


TaskSet = tuple[dict[str, Task], dict[str, list[SSLStrategy]]]


def build_tasks(config: RunConfig, host: PluginHost) -> TaskSet:
    """The run's tasks and each task's strategies, checked to fit each other."""
    if not config.tasks:
        raise ValueError("no task given: add at least one --task (see `mtssl plugins` for the available tasks)")
    tasks: dict[str, Task] = {}
    strategies: dict[str, list[SSLStrategy]] = {}
    for text in config.tasks:
        spec = parse_task(text)
        if spec.name in tasks:
            raise ValueError(f"task '{spec.name}' is given twice")
        task = host.create("task", spec.name, **spec.task.options)
        if not isinstance(getattr(task, "target", None), TargetSpec):
            raise ValueError(f"task '{spec.name}' declares no target (its class must set `target` to a TargetSpec)")
        tasks[spec.name] = task
        strategies[spec.name] = []
        canonical = [host.registry("strategy").get(s.name).name for s in spec.strategies]
        twice = sorted({name for name in canonical if canonical.count(name) > 1})
        if twice:
            raise ValueError(f"task spec '{text}' lists strategy '{twice[0]}' twice (under two names)")
        for s in spec.strategies:
            strategy = host.create("strategy", s.name, **s.options)
            if not strategy.serves(task.target):
                raise ValueError(f"strategy '{s.name}' cannot train task '{spec.name}': it does not serve "
                                 f"{task.target.describe()}")
            strategies[spec.name].append(strategy)
    return tasks, strategies


def build_components(config: RunConfig, host: PluginHost, task_set: TaskSet | None = None) -> Components:
    """Tasks, strategies, bridges, backbone and model; the backbone reads ``config.channels`` (1 when unset)."""
    tasks, strategies = task_set or build_tasks(config, host)
    bridges = []
    for text in config.bridges:
        spec = parse_bridge(text)
        bridge = host.create("bridge", spec.name, source=spec.source or "", target=spec.target or "",
                             **spec.bridge.options)
        if not spec.source:
            bridge.source, bridge.target = bridge.infer_route(tasks)
        bridges.append(bridge)
    backbone_spec = parse_source(config.backbone)  # same NAME[:key=value] shape
    if backbone_spec.path:
        raise ValueError(f"backbone spec '{config.backbone}': expected NAME[:key=value,...]")

    def build_backbone() -> Backbone:
        return host.create("backbone", backbone_spec.name, in_channels=config.channels or 1, **backbone_spec.options)

    backbone = build_backbone()
    backbone.check_input_size(config.size, config.size)
    model = MultiTaskModel(backbone, tasks, bridges, build_architecture(config, host), build_backbone)
    return Components(tasks, strategies, bridges, backbone, model)


def build_architecture(config: RunConfig, host: PluginHost) -> Architecture:
    """How the run's tasks share the encoder, from ``architecture = "NAME[:key=value]"`` (default ``shared``)."""
    spec = parse_source(config.architecture or "shared")  # same NAME[:key=value] shape
    if spec.path:
        raise ValueError(f"--architecture '{config.architecture}': expected NAME[:key=value,...]")
    return host.create("architecture", spec.name, **spec.options)


def build_strategy_modules(parts: Components, device: torch.device) -> dict[str, nn.Module]:
    """The trainable modules strategies own (:meth:`SSLStrategy.modules`), on ``device``, keyed ``TASK/STRATEGY``.

    They live beside the model, outside DistributedDataParallel (which would not average their gradients),
    so a run of several processes refuses them (:func:`mtssl.training.distributed.check_processes`).
    """
    modules = {}
    for name, group in parts.strategies.items():
        for strategy in group:
            module = strategy.modules(parts.tasks[name], parts.model.head_inputs[name])
            if module is not None:
                modules[f"{name}/{strategy.name}"] = module.to(device)
    return modules


def build_weighting(config: RunConfig, host: PluginHost) -> Weighting:
    """The run's task weighting from ``weighting = "NAME[:key=value]"`` (default ``equal``)."""
    spec = parse_source(config.weighting or "equal")  # same NAME[:key=value] shape
    if spec.path:
        raise ValueError(f"--weighting '{config.weighting}': expected NAME[:key=value,...]")
    return host.create("weighting", spec.name, **spec.options)


PEER_SEED_OFFSET = 7919


def build_peer(config: RunConfig, host: PluginHost) -> MultiTaskModel:
    """A second model of the same components, initialised from its own seed (cross pseudo supervision).

    The global random stream is left as it was, so asking for a peer does not
    change the first model's initialisation or the run's augmentations.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + PEER_SEED_OFFSET)
        return build_components(config, host).model
