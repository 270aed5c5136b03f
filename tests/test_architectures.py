"""Multi-task architectures: hard sharing (the default), MTAN task attention, MMoE experts with task gates."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import invoke, read_metrics, spaced, tiny_train_args
from mtssl.model.assemble import build_components
from mtssl.run.config import RunConfig
from mtssl_plugins.architectures.mmoe import cell_means


def build(host, architecture="shared", tasks=("cls", "seg"), bridges=("saliency",), size=32):
    torch.manual_seed(0)
    config = RunConfig(tasks=list(tasks), bridges=list(bridges), size=size, architecture=architecture)
    return build_components(config, host).model.eval()


def zero_block(block: nn.Sequential, bias: float) -> None:
    """An attention block whose mask is ``sigmoid(bias)`` everywhere: both convolutions zeroed, last bias set."""
    for layer in (block[0], block[2]):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    nn.init.constant_(block[2].bias, bias)


# -- hard sharing ------------------------------------------------------------------------------------

def test_hard_sharing_is_the_backbone_then_the_heads_and_adds_no_parameters(host):
    model = build(host, bridges=())
    images = torch.rand(5, 1, 32, 32)
    rows = {"cls": slice(0, 3), "seg": slice(3, 5)}
    pyramid = model.backbone(images)
    expected = {name: model.heads[name]([f[r] for f in pyramid], {}) for name, r in rows.items()}
    out = model(images, rows)
    assert all(torch.equal(out[name], expected[name]) for name in rows)
    # checkpoints keep their keys (backbone.*, heads.*), and the shared encoder is the backbone alone
    assert {key.split(".")[0] for key in model.state_dict()} == {"backbone", "heads"}
    assert model.shared_parameters() == list(model.backbone.parameters())


# -- MTAN ----------------------------------------------------------------------------------------------

@torch.no_grad()
def test_mtan_masks_at_init_are_soft_and_shaped_like_each_level(host):
    model = build(host, "mtan")
    images = torch.rand(2, 1, 32, 32)
    shared = model.backbone(images)
    for task in ("cls", "seg"):
        masks, attended = model.architecture.attend(task, shared)
        assert [m.shape for m in masks] == [f.shape for f in shared]
        assert all(0 < float(m.min()) and float(m.max()) < 1 for m in masks)
        assert all(torch.equal(g, m * f) for g, m, f in zip(attended, masks, shared))
    cls_masks = model.architecture.attend("cls", shared)[0]
    seg_masks = model.architecture.attend("seg", shared)[0]
    assert not torch.equal(cls_masks[0], seg_masks[0])  # each task attends with modules of its own
    # heads and bridges are built as for hard sharing, and only the carries count as shared
    assert [p.data_ptr() for p in model.shared_parameters()] == [
        p.data_ptr() for p in (*model.backbone.parameters(), *model.architecture.carry.parameters())]


def test_mtan_attends_with_sigmoid_masks_fed_by_the_previous_level(host):
    model = build(host, "mtan")
    attention = model.architecture.attention["seg"]
    zero_block(attention[0], math.log(3))  # a^0 = sigmoid(log 3) = 3/4
    zero_block(attention[1], 0.0)          # a^1 = sigmoid(0) = 1/2
    shared = model.backbone(torch.rand(2, 1, 32, 32))
    masks, attended = model.architecture.attend("seg", shared)
    assert torch.allclose(masks[0], torch.full_like(shared[0], 0.75))
    assert torch.allclose(attended[0], 0.75 * shared[0]) and torch.allclose(attended[1], 0.5 * shared[1])
    # a^2 reads [f^2, h^2(g^1)]: scaling g^1's mask changes it
    before = masks[2]
    nn.init.constant_(attention[1][2].bias, 3.0)
    assert not torch.allclose(model.architecture.attend("seg", shared)[0][2], before)


# -- MMoE ----------------------------------------------------------------------------------------------

def test_cell_means_average_each_cell():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)  # rows 0-3, 4-7, 8-11, 12-15
    assert cell_means(image, 2).flatten().tolist() == [(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4,
                                                      (8 + 9 + 12 + 13) / 4, (10 + 11 + 14 + 15) / 4]


def test_one_expert_is_the_backbone_itself(host):
    model = build(host, "mmoe:experts=1")
    images = torch.rand(3, 1, 32, 32)
    shared = model.backbone(images)
    encoded = model.architecture.encode(model.backbone, images)
    for task in ("cls", "seg"):
        pyramid = model.architecture.task_features(task, encoded, images, slice(1, 3))
        assert all(torch.equal(p, f[1:3]) for p, f in zip(pyramid, shared))


def test_gates_mix_independent_experts_by_their_softmax(host):
    model = build(host, "mmoe:experts=2")
    mmoe = model.architecture
    images = torch.rand(2, 1, 32, 32)
    first, second = mmoe.encode(model.backbone, images)
    assert not torch.allclose(first[-1], second[-1])  # the second expert has its own initialisation
    # at init the gates are zero: every task reads the experts' mean
    mean = mmoe.task_features("cls", [first, second], images, slice(0, 2))
    assert all(torch.allclose(m, (a + b) / 2) for m, a, b in zip(mean, first, second))
    # gate logits (log 3, 0) weigh the experts 3/4 and 1/4, for that task alone
    nn.init.constant_(mmoe.gates["seg"].bias, 0.0)
    with torch.no_grad():
        mmoe.gates["seg"].bias[0] = math.log(3)
    mixed = mmoe.task_features("seg", [first, second], images, slice(0, 2))
    assert all(torch.allclose(m, 0.75 * a + 0.25 * b, atol=1e-6) for m, a, b in zip(mixed, first, second))
    assert torch.allclose(mmoe.task_features("cls", [first, second], images, slice(0, 2))[0], mean[0])
    assert len(model.shared_parameters()) == 2 * len(list(model.backbone.parameters()))  # both experts


# -- training ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("architecture", ["mtan", "mmoe"])
def test_one_step_run_with_a_saliency_bridge(tmp_path, architecture):
    args = tiny_train_args("cls", "seg", bridges=("saliency",), out=tmp_path, steps=1,
                           extra=("--architecture", architecture, "--weighting", "pcgrad"))
    result = invoke(args)
    assert result.exit_code == 0, result.output
    run = next(tmp_path.iterdir())
    line = read_metrics(run)[-1]
    assert math.isfinite(line["loss"]) and "val/seg/dice" in line
    assert '"architecture": "' + architecture in (run / "config.json").read_text()


def test_unknown_architecture_is_refused_in_one_line(tmp_path):
    result = invoke(tiny_train_args("cls", out=tmp_path, extra=("--architecture", "mtn")))
    assert result.exit_code != 0
    assert "unknown architecture 'mtn'. Did you mean 'mtan'?" in spaced(result.output)


def test_mtan_run_stops_and_resumes_bit_exactly(tmp_path):
    from test_combinations import train_stop_resume

    cell = {"tasks": "cls+seg", "ssl": "none", "bridges": "saliency", "weighting": "equal", "precision": "fp32",
            "backbone": "unet", "architecture": "mtan"}
    outcome = train_stop_resume(cell, str(tmp_path))
    assert outcome["stopped_at"] == 1 and outcome["same_weights"] and outcome["finite"]
    straight, resumed = outcome["logs"]
    assert resumed == straight
