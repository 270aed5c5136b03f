"""One backbone, one head per task, bridges between heads: one forward runs the backbone once over its batch."""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator, Mapping

import torch
from torch import nn

from mtssl.interfaces import Backbone, Bridge, BridgeInputs, HeadInputs, Task


class MultiTaskModel(nn.Module):
    """Runs the backbone once over a concatenated batch and each head only on its own rows.

    ``rows`` maps a task name to the slice of the batch holding of the images
    that task must predict. A decoder-style head therefore never touches the
    images of other tasks. Bridges get the source head's output on the
    target's rows and may differentiate it with respect to the input images.
    """

    def __init__(self, backbone: Backbone, tasks: Mapping[str, Task], bridges: list[Bridge] = ()):
        super().__init__()
        self.backbone = backbone
        self.tasks = dict(tasks)
        self.bridges = list(bridges)
        self._check_bridges()
        for bridge in self.bridges:
            bridge.image_channels = backbone.in_channels
        self.heads = nn.ModuleDict()
        for name, task in self.tasks.items():
            extras: dict[int, int] = {}
            for bridge in self.bridges:
                if bridge.target == name:
                    extras[bridge.stride] = extras.get(bridge.stride, 0) + bridge.extra_channels
            self.heads[name] = task.build_head(HeadInputs(tuple(backbone.channels), tuple(backbone.strides), extras))
        # the batch norms a bridge's input gradient would run through, found once (not every forward)
        self._batch_norms = {b.source: [m for part in (backbone, self.heads[b.source]) for m in part.modules()
                                        if isinstance(m, nn.modules.batchnorm._BatchNorm)] for b in self.bridges}

    def _check_bridges(self) -> None:
        targets = {b.target for b in self.bridges}
        for bridge in self.bridges:
            for end in (bridge.source, bridge.target):
                if end not in self.tasks:
                    raise ValueError(
                        f"bridge '{bridge.name}' connects '{bridge.source}' -> '{bridge.target}', "
                        f"but task '{end}' is not in this run (tasks: {', '.join(self.tasks)})"
                    )
            if bridge.source == bridge.target:
                raise ValueError(f"bridge '{bridge.name}' connects task '{bridge.source}' to itself")
            if bridge.source in targets:
                raise ValueError(f"bridge '{bridge.name}': task '{bridge.source}' is both a bridge source "
                                 "and a bridge target; chained bridges are not supported")
            if bridge.stride not in self.backbone.strides:
                raise ValueError(f"bridge '{bridge.name}' injects at stride {bridge.stride}, but the backbone "
                                 f"offers strides {list(self.backbone.strides)}")

    def forward(self, images: torch.Tensor, rows: Mapping[str, slice] | None = None,
                maps: dict[str, torch.Tensor] | None = None,
                features: dict[str, list[torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
        """Return ``{task: output}`` for every task named in ``rows`` (all tasks, all rows by default).

        Each task's rows are a contiguous slice of the batch, so selecting its
        features is a view, not a copy. Pass a dict as ``maps`` to receive the
        bridges' displayable maps (:meth:`Bridge.maps`) for the target's rows,
        named ``BRIDGE`` or ``BRIDGE.MAP``; training leaves it out. Pass a dict as
        ``features`` to receive each task's backbone feature maps on its rows.
        """
        if rows is None:
            rows = {name: slice(0, images.shape[0]) for name in self.tasks}
        bridges = [b for b in self.bridges if b.target in rows and _nonempty(rows[b.target])]
        needs_grad = any(b.needs_input_grad for b in bridges)
        caller_grad = torch.is_grad_enabled()
        with torch.enable_grad() if needs_grad else nullcontext():
            if needs_grad and not images.requires_grad:
                images = images.detach().requires_grad_(True)
            pyramid = self.backbone(images)
            outputs: dict[str, torch.Tensor] = {}
            for name, task_rows in rows.items():
                feats = [f[task_rows] for f in pyramid]
                extras: dict[int, torch.Tensor] = {}
                for bridge in bridges:
                    if bridge.target != name:
                        continue
                    source_output = self._bridge_source_output(bridge, images, task_rows, feats)
                    extra = bridge.compute(BridgeInputs(images, task_rows, source_output)).detach()
                    if maps is not None:
                        for key, value in bridge.maps(extra).items():
                            maps[bridge.name if key == bridge.name else f"{bridge.name}.{key}"] = value
                    extras[bridge.stride] = extra if bridge.stride not in extras else torch.cat(
                        [extras[bridge.stride], extra], dim=1)
                outputs[name] = self.heads[name](feats, extras)
            if features is not None:
                features.update({name: [f[task_rows] if caller_grad else f[task_rows].detach() for f in pyramid]
                                 for name, task_rows in rows.items()})
        if not caller_grad:  # grad was enabled only for the bridges: hand back plain tensors, free the graph
            outputs = {name: out.detach() for name, out in outputs.items()}
        return outputs


    def _bridge_source_output(self, bridge: Bridge, images: torch.Tensor, rows: slice,
                              feats: list[torch.Tensor]) -> torch.Tensor:
        """The source head's output on the target's rows, as the bridge may differentiate it.

        A training-mode batch norm mixes the images of a pass, so an input
        gradient through it would make one image's saliency depend on the
        others. For such models the rows get a pass of their own with batch
        norms on their running statistics; per-image norms (the default
        encoder's instance norm) need nothing extra.
        """
        layers = [m for m in self._batch_norms[bridge.source] if m.training] if bridge.needs_input_grad else []
        if not layers:
            return self.heads[bridge.source](feats, {})
        with _running_statistics(layers):
            return self.heads[bridge.source](self.backbone(images[rows]), {})


@contextmanager
def _running_statistics(layers: list[nn.Module]) -> Iterator[None]:
    """Batch norms in eval mode for the block, so each image is normalised on its own."""
    for layer in layers:
        layer.eval()
    try:
        yield
    finally:
        for layer in layers:
            layer.train()


def _nonempty(rows: slice) -> bool:
    return rows.stop > rows.start


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    """The model's input convention: uint8 ``[B, C, S, S]`` (or grey ``[B, S, S]``) -> float in [0, 1]."""
    x = images_u8.float().div_(255.0)
    return x if x.dim() == 4 else x.unsqueeze(1)
