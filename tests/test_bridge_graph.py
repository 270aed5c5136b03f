"""Bridges as a graph: chained routes in topological order, cycles and duplicates refused, setup before
channels, source probabilities, the mask bridge, and the classification head taking bridge extras."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import invoke, read_metrics, tiny_config, tiny_train_args
from test_input_validation import one_line_error
from test_saliency import independent_saliency
from mtssl.api import Bridge, BridgeInputs, HeadInputs, hookimpl
from mtssl.export.graph import portable_graph
from mtssl.model.assemble import build_components
from mtssl.model.network import input_grad_tasks
from mtssl.plugins import PluginHost
from mtssl.run.config import RunConfig, TaskData
from mtssl.run.rundir import RunDir
from mtssl.training.trainer import Trainer
from mtssl_plugins import catalog
from mtssl_plugins.tasks.classification import ClassificationTask

ROOT = Path(__file__).resolve().parents[1]
UNET_CHANNELS, UNET_STRIDES = (16, 32, 64, 128, 256), (1, 2, 4, 8, 16)


class GradeTask(ClassificationTask):
    """A second image-level classification (a severity grade, say): a third task to chain bridges into."""


class Recorder(Bridge):
    """Hands on the source's probabilities and keeps every BridgeInputs it saw; its route is learnt in setup."""

    def __init__(self, name, source, target, **options):
        super().__init__(name, source, target, **options)
        self.seen: list[BridgeInputs] = []
        self.channels: int | None = None

    def setup(self, source, target, head_inputs):
        super().setup(source, target, head_inputs)
        self.channels = source.target.channels if source.target.spatial else 2

    @property
    def extra_channels(self) -> int:
        if self.channels is None:
            raise AssertionError("extra_channels read before setup()")
        return self.channels

    @property
    def stride(self) -> int:
        return 16

    def compute(self, inputs):
        self.seen.append(inputs)
        probabilities = inputs.source_probabilities
        if probabilities.dim() == 2:  # per image: one constant map per class
            probabilities = probabilities[:, :, None, None].expand(-1, -1, *inputs.images.shape[-2:])
        return probabilities.detach()


class ImageChannels(Bridge):
    """A bridge written before setup() existed: it reads ``image_channels`` in ``extra_channels``."""

    @property
    def extra_channels(self) -> int:
        return self.image_channels

    @property
    def stride(self) -> int:
        return 8

    def compute(self, inputs):
        return inputs.images[inputs.rows].detach()


class TestPlugin:
    @hookimpl
    def register_tasks(self, register):
        register("grade", GradeTask, description="a second classification")

    @hookimpl
    def register_bridges(self, register):
        register("recorder", Recorder, description="source probabilities, recorded")
        register("imagechannels", ImageChannels, description="the image, as old bridges wrote it")


@pytest.fixture(scope="module")
def graph_host() -> PluginHost:
    loaded = PluginHost(extra_plugins=[("graph-test", TestPlugin())])
    assert not loaded.failures, loaded.failures
    return loaded


def build(host, tasks, bridges, seed=0, **settings):
    torch.manual_seed(seed)
    return build_components(RunConfig(tasks=list(tasks), bridges=list(bridges), size=32, **settings), host)


def record_heads(model):
    """``[(task, rows, extras), ...]`` in the order the heads run."""
    calls = []
    for name, head in model.heads.items():
        head.register_forward_pre_hook(lambda module, args, name=name: calls.append((name, len(args[0][0]), args[1])))
    return calls


CHAIN = ("saliency:cls->seg", "mask:seg->grade")


def test_heads_run_in_topological_order_whatever_the_task_order(graph_host):
    assert build(graph_host, ("cls", "seg", "grade"), CHAIN).model.order == ["cls", "seg", "grade"]
    assert build(graph_host, ("grade", "seg", "cls"), CHAIN).model.order == ["cls", "seg", "grade"]
    assert build(graph_host, ("grade", "seg", "cls"), ()).model.order == ["grade", "seg", "cls"]


def test_a_source_head_runs_with_its_own_extras_on_the_target_rows(graph_host):
    model = build(graph_host, ("cls", "seg", "grade"), CHAIN).model.eval()
    calls = record_heads(model)
    seg_outputs = []
    model.heads["seg"].register_forward_hook(lambda module, args, out: seg_outputs.append(out))
    images = torch.rand(5, 1, 32, 32)
    model(images, {"grade": slice(3, 5)})
    assert [(name, rows, sorted(extras)) for name, rows, extras in calls] == [
        ("cls", 2, []), ("seg", 2, [8]), ("grade", 2, [16])]
    saliency = calls[1][2][8]
    assert saliency.shape == (2, 2, 32, 32) and torch.equal(saliency[:, :1], images[3:5])
    # the mask bridge hands on the seg head's sigmoid, computed with the saliency extras
    assert torch.allclose(calls[2][2][16], torch.sigmoid(seg_outputs[0]), atol=1e-6)


def test_the_downstream_head_sees_a_change_of_the_upstream_extra(graph_host, monkeypatch):
    model = build(graph_host, ("cls", "seg", "grade"), CHAIN).model.eval()
    calls = record_heads(model)
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        before = model(images, {"grade": slice(0, 2)})["grade"]
    saliency = model.bridges[0]
    monkeypatch.setattr(saliency, "compute", lambda inputs: torch.zeros(2, 2, 32, 32))
    with torch.no_grad():
        after = model(images, {"grade": slice(0, 2)})["grade"]
    grade_extras = [extras[16] for name, _, extras in calls if name == "grade"]
    assert not torch.allclose(grade_extras[0], grade_extras[1])
    assert not torch.allclose(before, after)


def test_chained_saliency_through_batch_norm_does_not_depend_on_the_other_images(graph_host):
    """Downstream rows run the upstream saliency with batch norms on their running statistics, per image."""
    model = build(graph_host, ("cls", "seg", "grade"), CHAIN, backbone="timm:model=resnet18").model.train()
    calls = record_heads(model)
    images = torch.rand(6, 1, 32, 32)
    model(images, {"cls": slice(0, 2), "grade": slice(2, 6)})
    assert [(name, rows) for name, rows, _ in calls] == [("cls", 2), ("cls", 4), ("seg", 4), ("grade", 4)]
    together = calls[2][2][8][:, 1:]
    for norm in model.modules():
        if isinstance(norm, nn.modules.batchnorm._BatchNorm):
            norm.eval()
    alone = torch.cat([independent_saliency(model, images[i:i + 1]) for i in range(2, 6)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_each_head_runs_once_per_distinct_rows(graph_host):
    model = build(graph_host, ("cls", "seg", "grade"), CHAIN).model.eval()
    calls = record_heads(model)
    model(torch.rand(3, 1, 32, 32))  # every task on every row, as predict and export run it
    assert [name for name, _, _ in calls] == ["cls", "seg", "grade"]


def test_rows_downstream_of_an_input_gradient_bridge_need_the_input_gradient(graph_host):
    parts = build(graph_host, ("cls", "seg", "grade"), CHAIN)
    assert input_grad_tasks(list(parts.tasks), parts.bridges) == {"seg", "grade"}
    assert input_grad_tasks(["cls", "seg", "grade"], parts.bridges[1:]) == set()


def test_a_chained_run_trains_a_step(graph_host, tmp_path):
    config = tiny_config(tmp_path, ["cls", "seg", "grade"], list(CHAIN))
    config.data["grade"] = TaskData(train="synthetic:n=24", labels=8)
    trainer = Trainer(config, graph_host, RunDir.create(config))
    pooled = trainer.model.heads["grade"].fc.weight[:, 256:].detach().clone()  # the weights on the mask pooling
    logs = trainer.train_step()
    assert all(torch.isfinite(torch.tensor(logs[f"{task}/sup"])) for task in ("cls", "seg", "grade"))
    assert not torch.equal(trainer.model.heads["grade"].fc.weight[:, 256:], pooled)


def test_a_chained_model_exports_as_one_graph(graph_host):
    parts = build(graph_host, ("cls", "seg", "grade"), CHAIN)
    model = parts.model.eval()
    probabilities = lambda name, output: parts.tasks[name].probabilities(output)
    graph, outputs = portable_graph(model, probabilities, channels=1, size=32)
    assert outputs.names == ("cls", "seg", "grade", "saliency")
    images = torch.rand(3, 1, 32, 32)
    maps = {}
    with torch.no_grad():
        raw = model(images, maps=maps)
    expected = [probabilities(name, raw[name]) for name in outputs.tasks] + [maps["saliency"]]
    for name, got, want in zip(outputs.names, graph(images), expected):
        assert torch.allclose(got, want, atol=1e-3 if name == "saliency" else 1e-5), name


def test_a_cycle_is_refused_naming_its_tasks_and_bridges(graph_host):
    with pytest.raises(ValueError, match=r"^bridges form a cycle: cls -> seg -> cls \(bridges 'saliency', 'mask'\)$"):
        build(graph_host, ("cls", "seg"), ("saliency", "mask:seg->cls"))
    with pytest.raises(ValueError, match=r"^bridges form a cycle: seg -> grade -> seg \(bridges 'mask', 'recorder'\)$"):
        build(graph_host, ("cls", "seg", "grade"), (*CHAIN, "recorder:grade->seg"))


def test_train_check_refuses_a_cycle_in_one_line(tmp_path):
    result = invoke(tiny_train_args("cls", "seg", bridges=("saliency", "mask:seg->cls"), out=tmp_path / "runs",
                                    extra=("--check",)))
    assert one_line_error(result) == "Error: bridges form a cycle: cls -> seg -> cls (bridges 'saliency', 'mask')"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("bridges, routes", [
    (("saliency:cls->seg", "saliency:cls->seg"), "cls->seg and cls->seg"),
    (("saliency:cls->seg", "saliency:grade->seg"), "cls->seg and grade->seg"),
])
def test_the_same_bridge_twice_is_refused(graph_host, bridges, routes):
    with pytest.raises(ValueError) as info:
        build(graph_host, ("cls", "seg", "grade"), bridges)
    assert str(info.value) == (f"bridge 'saliency' is given twice ({routes}); a bridge may appear once per run "
                               "(its state, maps and prediction files are keyed by its name)")


def test_setup_runs_before_channels_are_read_and_sets_image_channels(graph_host):
    parts = build(graph_host, ("cls", "seg", "grade"), ("recorder:seg->grade", "imagechannels:cls->seg"), channels=3)
    recorder, old_style = parts.bridges
    assert recorder.channels == 1 and old_style.image_channels == 3
    assert parts.model.heads["grade"].fc.in_features == 256 + 256 * 1  # global + pooled under the seg map
    assert parts.model.heads["seg"].blocks[0][0].in_channels == 256 + 128 + 3  # upsampled + skip + the image


@pytest.mark.parametrize("route, activation", [("cls->grade", None), ("seg->grade", "sigmoid"),
                                               ("seg->grade", "softmax")])
def test_bridge_inputs_carry_the_source_probabilities(graph_host, route, activation):
    seg = f"seg:channels=2,activation={activation}" if activation else "seg"
    model = build(graph_host, ("cls", seg, "grade"), (f"recorder:{route}",)).model.eval()
    model(torch.rand(3, 1, 32, 32), {"grade": slice(1, 3)})
    (inputs,) = model.bridges[0].seen
    assert inputs.rows == slice(1, 3) and inputs.images.shape[0] == 3
    output, probabilities = inputs.source_output, inputs.source_probabilities
    if activation is None:
        expected = torch.softmax(output, dim=1)
    elif activation == "sigmoid":
        expected = torch.sigmoid(output)
    else:
        expected = torch.softmax(output, dim=1)[:, 1:]  # the background channel is not a structure
    assert probabilities.shape == expected.shape and torch.allclose(probabilities, expected)


class PaperHead(nn.Module):
    """The classification head as it was before it took extras, written out: MaxPool(2) -> mean -> FC."""

    def __init__(self, channels, num_classes):
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, features, extras):
        return self.fc(F.max_pool2d(features[-1], 2).mean(dim=(-2, -1)))


def pyramid(batch=3, size=32, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, size // s, size // s, generator=generator) for c, s in zip(UNET_CHANNELS, UNET_STRIDES)]


def test_classification_head_without_extras_is_the_paper_head():
    torch.manual_seed(0)
    reference = PaperHead(256, 2)
    torch.manual_seed(0)
    head = ClassificationTask("cls").build_head(HeadInputs(UNET_CHANNELS, UNET_STRIDES))
    assert {k: v.shape for k, v in head.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), reference.state_dict().values()))
    features = pyramid()
    assert torch.equal(head(features, {}), reference(features, {}))


def test_classification_head_pools_the_features_under_each_extra_map():
    torch.manual_seed(0)
    head = ClassificationTask("cls").build_head(HeadInputs(UNET_CHANNELS, UNET_STRIDES, {8: 2}))
    assert head.fc.in_features == 256 + 2 * 128
    features = pyramid(batch=1)
    extra = torch.zeros(1, 2, 32, 32)
    extra[:, 0, 8:16, 16:24] = 1.0  # exactly feature cell (1, 2) at stride 8
    extra[:, 1, :16, :] = 0.5  # the top half, uniformly weighted
    extra[:, 1, 16:, :] = -3.0  # negative weights count as zero
    deepest = F.max_pool2d(features[-1], 2).mean(dim=(-2, -1))
    inside = features[3][:, :, 1, 2]
    top = features[3][:, :, :2, :].mean(dim=(-2, -1))
    expected = head.fc(torch.cat([deepest, inside, top], dim=1))
    assert torch.allclose(head(features, {8: extra}), expected, atol=1e-5)
    assert not torch.allclose(head(features, {8: extra.flip(-1)}), expected, atol=1e-3)


def test_classification_task_trains_a_step_fed_by_the_mask_bridge(tmp_path):
    result = invoke(tiny_train_args("seg", "cls", bridges=("mask",), out=tmp_path / "runs", steps=1))
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    (line,) = read_metrics(run)
    assert all(torch.isfinite(torch.tensor(line[key])) for key in ("cls/sup", "seg/sup", "loss"))


def test_the_mask_bridge_changes_what_the_classifier_predicts(graph_host):
    parts = build(graph_host, ("seg", "cls"), ("mask",))
    bridge, model = parts.bridges[0], parts.model.eval()
    assert (bridge.source, bridge.target, bridge.stride, bridge.extra_channels) == ("seg", "cls", 16, 1)
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        plain = model(images, {"cls": slice(0, 2)})["cls"]
        model.heads["seg"].final.bias.add_(5.0)  # a different segmentation ...
        moved = model(images, {"cls": slice(0, 2)})["cls"]
    assert not torch.allclose(plain, moved)  # ... is a different classification


@pytest.mark.parametrize("tasks, bridge, message", [
    (("cls", "seg"), "mask:cls->seg", "bridge 'mask' hands on per-pixel probability maps, but task 'cls' has class "
                                      "targets (int64 per image); route it from a segmentation task"),
    (("cls",), "mask", "bridge 'mask' cannot infer its route"),
    (("cls", "seg"), "saliency:seg->cls", "bridge 'saliency' differentiates the top class of its source, but task "
                                          "'seg' has mask targets"),
])
def test_bridges_refuse_routes_they_cannot_serve(graph_host, tasks, bridge, message):
    with pytest.raises(ValueError) as info:
        build(graph_host, tasks, (bridge,))
    assert message in str(info.value)


def test_every_catalog_plugin_is_an_entry_point_and_back():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["mtssl"]
    in_catalog = {name for name, value in vars(catalog).items() if isinstance(value, catalog.CatalogPlugin)}
    assert {target.split(":")[1] for target in declared.values()} == in_catalog
    assert all(target.startswith("mtssl_plugins.catalog:") for target in declared.values())
    assert declared["mask"] == "mtssl_plugins.catalog:mask"


def test_rows_downstream_of_an_input_gradient_bridge_share_its_pass():
    """cls -> seg (saliency, input gradient) -> cls2 (mask): cls2's rows run the saliency bridge too, so they
    go in the input-gradient pass with seg's and not in the plain pass with cls's."""
    from types import SimpleNamespace

    from mtssl.training.views import View, plan_passes

    bridges = [SimpleNamespace(name="saliency", source="cls", target="seg", needs_input_grad=True),
               SimpleNamespace(name="mask", source="seg", target="cls2", needs_input_grad=False)]
    views = [View(task, "labeled", torch.zeros(1, 1, 8, 8)) for task in ("cls", "seg", "cls2")]
    passes = [[view.task for view in group] for group in plan_passes(views, bridges)]
    assert sorted(map(sorted, passes)) == [["cls"], ["cls2", "seg"]]
