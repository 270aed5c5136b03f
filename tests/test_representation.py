"""The shared representation the core records for MGDA-UB: aliases of the encoder's outputs that only the
heads read, so a task's gradient with respect to them is the partial derivative through its head, without
a pass back through the encoder, while the saliency bridge's input gradient still reaches the images."""
from __future__ import annotations

import math

import torch

from conftest import tiny_trainer


def test_the_recorded_representation_is_differentiated_through_the_heads_only(host, tmp_path):
    trainer = tiny_trainer(host, tmp_path, ["cls:fixmatch", "seg:kl"], ["saliency"])
    model = trainer.model
    encoder_backward = []  # the deepest block's backward: on the encoder's path from every shallower level
    model.backbone.blocks[-1].register_full_backward_hook(lambda *args: encoder_backward.append(1))
    views = trainer.gather_views()
    with model.recording_representation() as recorded:
        result = trainer.compute_loss(views)
    assert recorded and all(t.requires_grad for t in recorded)
    assert len({t.shape for t in recorded}) == len(model.backbone.channels)  # every level of the pyramid
    encoder_backward.clear()  # the saliency bridge's input gradient ran through the encoder in the forward
    for loss in result.task_losses.values():
        grads = torch.autograd.grad(loss, recorded, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert not encoder_backward, "a task's gradient on the representation went back through the encoder"
    result.loss.backward()  # the whole step still trains the encoder
    assert encoder_backward
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    assert math.isfinite(result.loss.item())


def test_outside_the_block_nothing_is_recorded(host, tmp_path):
    trainer = tiny_trainer(host, tmp_path, ["cls", "seg"])
    with trainer.model.recording_representation() as recorded:
        pass
    trainer.compute_loss(trainer.gather_views())
    assert recorded == []
