"""The saliency bridge inside a real MultiTaskModel: what reaches the decoder, and how routes resolve."""
from __future__ import annotations

import pytest
import torch

from mtssl.model.assemble import build_components
from mtssl.run.config import RunConfig


def build(host, bridges=("saliency",), tasks=("cls", "seg"), size=32):
    torch.manual_seed(0)
    return build_components(RunConfig(tasks=list(tasks), bridges=list(bridges), size=size), host)


def capture_extras(model, task="seg"):
    """Record the ``extras`` every call of a head receives."""
    seen = []
    model.heads[task].register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    return seen


def independent_saliency(model, images):
    """|d max cls logit / d image| per image, normalised to a peak of 1, computed without the bridge."""
    x = images.detach().clone().requires_grad_(True)
    logits = model.heads["cls"](model.backbone(x), {})
    (grad,) = torch.autograd.grad(logits.max(dim=1).values.sum(), x)
    sal = grad.abs()
    return sal / sal.flatten(1).amax(1).view(-1, 1, 1, 1)


@pytest.fixture
def no_backward(monkeypatch):
    """Fail if anything calls .backward() (the bridge must use autograd.grad)."""
    def refuse(*args, **kwargs):
        raise AssertionError("backward() called during a forward pass")

    monkeypatch.setattr(torch.Tensor, "backward", refuse)
    monkeypatch.setattr(torch.autograd, "backward", refuse)


def test_decoder_receives_image_and_normalized_input_gradient_for_its_rows(host, no_backward):
    parts = build(host)
    model = parts.model.eval()
    seen = capture_extras(model)
    torch.manual_seed(1)
    images = torch.rand(5, 1, 32, 32)
    rows = {"cls": slice(0, 3), "seg": slice(3, 5)}
    outputs = model(images, rows)
    assert outputs["cls"].shape == (3, 2) and outputs["seg"].shape == (2, 1, 32, 32)
    assert len(seen) == 1 and set(seen[0]) == {8}
    extra = seen[0][8]
    assert extra.shape == (2, 2, 32, 32) and not extra.requires_grad
    assert torch.equal(extra[:, :1], images[3:5])
    expected = independent_saliency(model, images[3:5])
    assert torch.allclose(extra[:, 1:], expected, atol=1e-5)
    assert extra[:, 1:].flatten(1).amax(1).tolist() == pytest.approx([1.0, 1.0])
    assert all(p.grad is None for p in model.parameters())
    assert not images.requires_grad and images.grad is None


def test_bridge_works_under_no_grad_in_eval_mode_without_an_optimizer(host, no_backward):
    model = build(host).model.eval()
    seen = capture_extras(model)
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        outputs = model(images, {"seg": slice(0, 2)})
    assert outputs["seg"].grad_fn is None
    assert torch.allclose(seen[0][8][:, 1:], independent_saliency(model, images), atol=1e-5)
    assert all(p.grad is None for p in model.parameters())
    # the same forward with grad enabled gives the same segmentation
    assert torch.allclose(model(images, {"seg": slice(0, 2)})["seg"], outputs["seg"], atol=1e-6)


def test_training_forward_leaves_parameter_grads_alone_until_the_loss_backward(host):
    model = build(host).model.train()
    images = torch.rand(4, 1, 32, 32)
    outputs = model(images, {"cls": slice(0, 2), "seg": slice(2, 4)})
    assert all(p.grad is None for p in model.parameters())
    (outputs["cls"].sum() + outputs["seg"].mean()).backward()
    assert model.heads["seg"].blocks[0][0].weight.grad is not None
    assert model.backbone.blocks[0][0].weight.grad.abs().sum() > 0


def test_bridge_only_runs_for_the_target_rows(host):
    model = build(host).model.eval()
    seen = capture_extras(model, "cls")
    model(torch.rand(3, 1, 32, 32), {"cls": slice(0, 3)})
    # without segmentation rows the bridge is idle: the cls head runs once, with no extras
    assert seen == [{}]


def test_route_is_inferred_and_matches_the_explicit_route(host):
    inferred = build(host, bridges=("saliency",)).bridges[0]
    explicit = build(host, bridges=("saliency:cls->seg",)).bridges[0]
    assert (inferred.source, inferred.target) == ("cls", "seg") == (explicit.source, explicit.target)
    assert (inferred.stride, inferred.extra_channels) == (8, 2)
    stride4 = build(host, bridges=("saliency:cls->seg:stride=4",))
    assert stride4.bridges[0].stride == 4
    assert stride4.model.heads["seg"].blocks[1][0].in_channels == 128 + 64 + 2  # upsampled + skip + bridge


@pytest.mark.parametrize("tasks, bridge, message", [
    (("cls", "seg"), "saliency:cls->lungs", "task 'lungs' is not in this run"),
    (("cls", "seg"), "saliency:seg->cls", "differentiates the top class of its source, but task 'seg'"),
    (("cls", "seg"), "saliency:cls->seg:stride=3", "injects at stride 3"),
    (("cls", "seg"), "saliency:cls->seg:stride=16", "decoder has no block at stride(s) [16]"),
    (("cls", "seg"), "saliency:cls->seg:colour=red", "known: in_channels, normalize, stride"),
    (("cls",), "saliency", "cannot infer its route"),
    (("cls", "seg"), "saliency:cls-seg", "cannot read 'cls-seg'"),
    (("cls", "seg"), "saliency:->seg", "route must look like SRC->DST"),
])
def test_bad_routes_and_options_are_clear_errors(host, tasks, bridge, message):
    with pytest.raises(ValueError) as info:
        build(host, bridges=(bridge,), tasks=tasks)
    assert message in str(info.value)


def test_saliency_through_batch_norm_does_not_depend_on_the_other_images(host):
    """With a BatchNorm backbone in training mode, each image's saliency equals its own, computed alone."""
    torch.manual_seed(0)
    parts = build_components(RunConfig(tasks=["cls", "seg"], bridges=["saliency"], size=32,
                                       backbone="timm:model=resnet18"), host)
    model = parts.model.train()
    seen = capture_extras(model)
    images = torch.rand(6, 1, 32, 32)
    model(images, {"cls": slice(0, 2), "seg": slice(2, 6)})
    together = seen[-1][8][:, 1:]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.training for m in norms)  # the forward restored training mode
    for m in norms:
        m.eval()
    alone = torch.cat([independent_saliency(model, images[i:i + 1]) for i in range(2, 6)])
    assert torch.allclose(together, alone, atol=1e-5)
    # and a different companion image in the pass changes nothing (running statistics held still)
    for m in norms:
        m.train()
        m.momentum = 0.0
    other = images.clone()
    other[0] = torch.rand(1, 32, 32)
    other[2] = torch.rand(1, 32, 32)
    model(other, {"cls": slice(0, 2), "seg": slice(2, 6)})
    assert torch.allclose(seen[-1][8][1:, 1:], together[1:], atol=1e-5)
