"""The paper's encoder/decoder sizes (Tables 4-5), shapes, row routing, and backbone x head combinations."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import tiny_trainer
from mtssl.model.assemble import build_components
from mtssl.run.config import RunConfig


def conv_params(cin: int, cout: int, k: int = 3) -> int:
    return k * k * cin * cout + cout  # weights + bias


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build(host, tasks=("cls", "seg"), bridges=("saliency",), size=64, backbone="unet"):
    torch.manual_seed(0)
    return build_components(RunConfig(tasks=list(tasks), bridges=list(bridges), size=size, backbone=backbone), host)


ENCODER_CONVS = [(1, 16), (16, 16), (16, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128),
                 (128, 256), (256, 256)]


def test_encoder_matches_table_4(host):
    backbone = build(host).backbone
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(i, o, (3, 3)) for i, o in ENCODER_CONVS]
    assert all(c.bias is not None for c in convs)
    norms = [m for m in backbone.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 10 and not any(n.affine for n in norms) and count(nn.ModuleList(norms)) == 0
    slopes = {m.negative_slope for m in backbone.modules() if isinstance(m, nn.LeakyReLU)}
    dropouts = {m.p for m in backbone.modules() if isinstance(m, nn.Dropout)}
    assert slopes == {0.2} and dropouts == {0.25}
    assert count(backbone) == sum(conv_params(i, o) for i, o in ENCODER_CONVS) == 1_178_480


@pytest.mark.parametrize("bridged, first_in", [(True, 386), (False, 384)])
def test_decoder_matches_table_5(host, bridged, first_in):
    head = build(host, bridges=("saliency",) if bridged else ()).model.heads["seg"]
    decoder_convs = [(first_in, 128), (128, 128), (192, 64), (64, 64), (96, 32), (32, 32), (48, 16), (16, 16)]
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs[:-1]] == decoder_convs
    final = convs[-1]
    assert (final.in_channels, final.out_channels, final.kernel_size) == (16, 1, (1, 1))
    expected = sum(conv_params(i, o) for i, o in decoder_convs) + conv_params(16, 1, k=1)
    assert count(head) == expected
    assert expected == (786_161 if bridged else 783_857)


def test_classification_head_is_fc_256_to_2(host):
    head = build(host).model.heads["cls"]
    assert count(head) == 256 * 2 + 2
    assert [(m.in_features, m.out_features) for m in head.modules() if isinstance(m, nn.Linear)] == [(256, 2)]


def test_forward_shapes_at_64_pixels(host):
    model = build(host).model.eval()
    images = torch.rand(3, 1, 64, 64)
    features = model.backbone(images)
    assert [tuple(f.shape) for f in features] == [(3, 16, 64, 64), (3, 32, 32, 32), (3, 64, 16, 16),
                                                  (3, 128, 8, 8), (3, 256, 4, 4)]
    out = model(images)
    assert out["cls"].shape == (3, 2) and out["seg"].shape == (3, 1, 64, 64)


def test_each_head_runs_only_on_its_own_rows(host):
    model = build(host, size=32).model.eval()
    calls = {"cls": [], "seg": []}
    for name in calls:
        model.heads[name].register_forward_pre_hook(
            lambda module, args, name=name: calls[name].append(args[0][0].shape[0]))
    out = model(torch.rand(5, 1, 32, 32), {"cls": slice(0, 3), "seg": slice(3, 5)})
    assert calls["seg"] == [2]  # the decoder never sees classification images
    assert calls["cls"] == [3, 2]  # its own rows, then the segmentation rows for the saliency bridge
    assert out["cls"].shape[0] == 3 and out["seg"].shape[0] == 2


def test_training_step_groups_views_into_three_backbone_passes(host, tmp_path):
    trainer = tiny_trainer(host, tmp_path, ["cls:fixmatch", "seg:kl"], ["saliency"])
    batches, decoder_batches = [], []
    grad_modes = []

    def record(module, args, out):
        batches.append(args[0].shape[0])
        grad_modes.append(torch.is_grad_enabled())

    trainer.model.backbone.register_forward_hook(record)
    trainer.model.heads["seg"].register_forward_pre_hook(
        lambda m, args: decoder_batches.append(args[0][0].shape[0]))
    logs = trainer.train_step()
    # 2 images per view. Pass 1: cls labeled + strong (with grad). Pass 2: the weak pseudo-label view,
    # without autograd. Pass 3: seg labeled + plain unlabeled, the rows the saliency bridge differentiates.
    assert sorted(zip(batches, grad_modes)) == [(2, False), (4, True), (4, True)]
    assert decoder_batches == [4]  # the decoder runs once, on the segmentation rows only
    assert {"cls/sup", "cls/fixmatch", "cls/fixmatch/mask_rate", "seg/sup", "seg/kl", "loss"} <= set(logs)
    assert trainer.step == 1


def test_single_pass_when_every_view_needs_the_same_gradients(host, tmp_path):
    trainer = tiny_trainer(host, tmp_path, ["cls", "seg"])
    batches = []
    trainer.model.backbone.register_forward_hook(lambda m, args, out: batches.append(args[0].shape[0]))
    trainer.train_step()
    assert batches == [4]


COMBOS = [(backbone, tasks, bridges)
          for backbone, size in (("unet", 32), ("timm:model=resnet18", 64))
          for tasks, bridges in ((("cls",), ()), (("seg",), ()), (("cls", "seg"), ("saliency",)))]


@pytest.mark.parametrize("backbone, tasks, bridges", COMBOS, ids=lambda v: str(v))
def test_every_backbone_and_head_combination_trains(host, backbone, tasks, bridges):
    size = 64 if backbone.startswith("timm") else 32
    model = build(host, tasks=tasks, bridges=bridges, size=size, backbone=backbone).model.train()
    images = torch.rand(2, 1, size, size)
    out = model(images)
    loss = sum(o.float().mean() for o in out.values())
    loss.backward()
    if "cls" in out:
        assert out["cls"].shape == (2, 2)
    if "seg" in out:
        assert out["seg"].shape == (2, 1, size, size)
    first = next(p for p in model.backbone.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0
    for name in tasks:
        assert all(p.grad is not None for p in model.heads[name].parameters())


@pytest.mark.parametrize("backbone, size, suggestion", [
    ("unet", 40, "--size 32 or 48"),
    ("unet", 8, "--size 16"),
    ("timm:model=resnet18", 48, "--size 32 or 64"),
])
def test_unusable_input_size_names_a_usable_one(host, backbone, size, suggestion):
    with pytest.raises(ValueError) as info:
        build(host, tasks=("cls",), bridges=(), size=size, backbone=backbone)
    assert suggestion in str(info.value)
    assert f"{size}x{size}" in str(info.value)


def test_unknown_backbone_option_is_refused(host):
    with pytest.raises(ValueError, match="known: dropout, widths"):
        build(host, tasks=("cls",), bridges=(), size=32, backbone="unet:depth=4")
