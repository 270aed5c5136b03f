"""mtssl export of a model trained on scan-like images (flat black borders, saturated areas, burned-in letters):
the check against predict passes on them, its tolerance is an option, and a failed export leaves nothing behind."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import invoke, tiny_train_args
from data_trees import lung_mask, write
from mtssl.evaluation.inference import load_model
from mtssl.export.graph import REWRITES, portable_graph
from mtssl.export.write import check_images, reference_outputs, scan_like
from mtssl.model.network import to_float

aten = torch.ops.aten

SIDE = 48


def scan_tree(root):
    """Class folders and image/mask pairs of scan-like images: flat borders, saturated blocks, letter blocks."""
    for i in range(12):
        image = scan_like(SIDE, seed=i)
        if i % 2:
            image[SIDE // 3: SIDE // 2, SIDE // 4: SIDE // 2] = 255  # a second saturated area for one class
        write(root / "classes" / ("NORMAL" if i % 2 == 0 else "PNEUMONIA") / f"scan{i:02d}.png", image)
    for i in range(8):
        write(root / "pairs" / "images" / f"case{i}.png", scan_like(SIDE, seed=100 + i))
        write(root / "pairs" / "masks" / f"case{i}.png", lung_mask(i, SIDE))
    return root


@pytest.fixture(scope="module")
def scan_run(tmp_path_factory):
    root = scan_tree(tmp_path_factory.mktemp("scans"))
    args = tiny_train_args("cls:fixmatch", "seg:kl", bridges=("saliency",), out=root / "runs", name="scans")
    data = {"--cls-data": f"folders:{root / 'classes'}", "--seg-data": f"pairs:{root / 'pairs/images'},"
                                                                       f"{root / 'pairs/masks'}"}
    for flag, value in data.items():
        args[args.index(flag) + 1] = value
    args[args.index("--cls-labels") + 1], args[args.index("--seg-labels") + 1] = "6", "3"
    result = invoke(args)
    assert result.exit_code == 0, result.output
    return root / "runs" / "scans"


def export(run, out, *extra):
    return invoke(["export", str(run), "--out", str(out), *extra])


def test_check_images_include_flat_and_saturated_regions(scan_run):
    images = check_images(load_model(scan_run, device="cpu"))
    scan = images[-1, 0]
    assert (scan[0] == 0).all() and (scan[:, 0] == 0).all()  # a flat black border
    assert (scan == 255).mean() > 0.1  # saturated area and burned-in letters


def test_group_norm_gradient_rewrite_matches_autograd():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 7, requires_grad=True)
    weight, bias = torch.randn(6), torch.randn(6)
    y = F.group_norm(x, 3, weight, bias, 1e-5)
    g = torch.randn_like(y)
    (want,) = torch.autograd.grad(y, x, g)
    _, mean, rstd = aten.native_group_norm(x.detach(), weight, bias, 2, 6, 35, 3, 1e-5)
    got, no_weight, no_bias = REWRITES[aten.native_group_norm_backward.default](
        g, x.detach(), mean, rstd, weight, 2, 6, 35, 3, [True, False, False])
    torch.testing.assert_close(got, want)
    assert no_weight is None and no_bias is None


def test_graph_saliency_equals_predict_on_many_scan_like_images(scan_run):
    """Max pooling sends each window's gradient to its largest activation; where two are nearly equal, a forward
    that rounds differently from eager mode picks the other one. With group norm spelled out as reductions in
    the graph, 2 of these 512 images got a saliency map off by up to 0.05; with eager's own kernel, none."""
    loaded = load_model(scan_run, device="cpu")
    tasks = loaded.parts.tasks
    graph, outputs = portable_graph(loaded.model, lambda name, raw: tasks[name].probabilities(raw), 1, loaded.size)
    images = np.stack([scan_like(loaded.size, seed) for seed in range(512)])[:, None]
    want = reference_outputs(loaded, images, outputs)["saliency"]
    with torch.no_grad():
        got = graph(to_float(torch.from_numpy(images)))[outputs.names.index("saliency")].numpy()
    worst = np.abs(got - want).reshape(len(images), -1).max(1)
    assert worst.max() < 1e-4, np.flatnonzero(worst >= 1e-4)


def test_export_of_a_scan_model_matches_predict(scan_run, tmp_path):
    result = export(scan_run, tmp_path / "model", "--format", "both")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "model" / "metadata.json").read_text())
    verified = meta["verified"]
    assert verified["tolerance"] == 1e-3
    assert max(verified["max_abs_difference"]["torchscript"].values()) <= 1e-3  # torch's kernels: the same map
    onnx = verified["max_abs_difference"]["onnx"]
    assert onnx["cls"] <= 1e-3 and onnx["seg"] <= 1e-3 and onnx["saliency"] <= verified["onnx_map_tolerance"]
    # the export refuses a map beyond that bound, so hold it to the largest near-tie difference measured on
    # real scans (0.06) as well: a broken backward rewrite moves the map by far more
    assert onnx["saliency"] <= 0.06
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left beside it


def test_failed_check_leaves_nothing_and_keeps_the_previous_export(scan_run, tmp_path):
    out = tmp_path / "model"
    failed = export(scan_run, tmp_path / "fresh", "--format", "torchscript", "--tolerance", "1e-30")
    assert failed.exit_code != 0
    (line,) = [line for line in failed.stderr.splitlines() if line.startswith("Error")]
    assert "model.pt" in line and "tolerance 1e-30" in line, failed.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the folder nor a temporary one

    assert export(scan_run, out, "--format", "torchscript").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert export(scan_run, out, "--format", "torchscript", "--tolerance", "1e-30").exit_code != 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_tolerance_is_recorded_and_a_narrower_export_drops_stale_files(scan_run, tmp_path):
    out = tmp_path / "model"
    (tmp_path / "model").mkdir()
    (out / "notes.txt").write_text("mine")
    assert export(scan_run, out, "--format", "both").exit_code == 0
    result = export(scan_run, out, "--format", "torchscript", "--tolerance", "0.01")
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["verified"]["tolerance"] == 0.01 and meta["files"] == {"torchscript": "model.pt"}
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "model.pt", "notes.txt"]


@pytest.mark.parametrize("value", ["0", "-1"])
def test_tolerance_must_be_positive(value, tmp_path):
    result = invoke(["export", str(tmp_path), "--out", str(tmp_path / "x"), "--tolerance", value])
    assert result.exit_code == 2 and "--tolerance" in result.output

