"""Config -> live components (tasks, strategies, bridges, backbone, model) through the registries."""
from __future__ import annotations

from dataclasses import dataclass

from mtssl.config import RunConfig
from mtssl.interfaces import Backbone, Bridge, SSLStrategy, Task
from mtssl.model import MultiTaskModel
from mtssl.plugins import PluginHost
from mtssl.spec import parse_bridge, parse_source, parse_task


@dataclass
class Components:
    tasks: dict[str, Task]
    strategies: dict[str, list[SSLStrategy]]
    bridges: list[Bridge]
    backbone: Backbone
    model: MultiTaskModel


def build_components(config: RunConfig, host: PluginHost) -> Components:
    if not config.tasks:
        raise ValueError("no task given: add at least one --task (see `mtssl plugins` for the available tasks)")
    tasks: dict[str, Task] = {}
    strategies: dict[str, list[SSLStrategy]] = {}
    for text in config.tasks:
        spec = parse_task(text)
        if spec.name in tasks:
            raise ValueError(f"task '{spec.name}' is given twice")
        task = host.create("task", spec.name, **spec.task.options)
        tasks[spec.name] = task
        strategies[spec.name] = []
        for s in spec.strategies:
            strategy = host.create("strategy", s.name, **s.options)
            if task.target_kind not in strategy.compatible_targets:
                raise ValueError(f"strategy '{s.name}' works on {'/'.join(strategy.compatible_targets)} targets, "
                                 f"but task '{spec.name}' has {task.target_kind} targets")
            strategies[spec.name].append(strategy)
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
    backbone = host.create("backbone", backbone_spec.name, in_channels=1, **backbone_spec.options)
    backbone.check_input_size(config.size, config.size)
    model = MultiTaskModel(backbone, tasks, bridges)
    return Components(tasks, strategies, bridges, backbone, model)
