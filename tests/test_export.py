"""mtssl export: TorchScript and ONNX files that reproduce mtssl predict, saliency included, plus metadata.json."""
from __future__ import annotations

import csv
import json
import shutil
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from mtssl.cli.app import main
from mtssl.export.graph import REWRITES
from mtssl.evaluation.inference import load_model, predict
from tiny_run import tiny_run

PROBABILITY_TOLERANCE = 1e-4  # softmax / sigmoid outputs in [0, 1]
MAP_TOLERANCE = 1e-3  # saliency, normalised to [0, 1] per image; a gradient, so a few more rounding steps

aten = torch.ops.aten


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "model"
    result = CliRunner().invoke(main, ["export", str(run), "--format", "both", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out / "metadata.json")
    return out


@pytest.fixture(scope="module")
def images():
    """Five images, a batch size the export never saw (it traced with two)."""
    return np.random.default_rng(7).integers(0, 256, (5, 32, 32), dtype=np.uint8)


def reference(run, images):
    loaded = load_model(run)
    out = predict(loaded, images, with_maps=True)
    return out.probabilities["cls"], out.probabilities["seg"], out.maps["saliency"][:, None]


def check_against_predict(outputs, run, images):
    cls, seg, saliency = reference(run, images)
    assert [o.shape for o in outputs] == [(5, 2), (5, 1, 32, 32), (5, 1, 32, 32)]
    np.testing.assert_allclose(outputs[0], cls, atol=PROBABILITY_TOLERANCE, rtol=0)
    np.testing.assert_allclose(outputs[1], seg, atol=PROBABILITY_TOLERANCE, rtol=0)
    np.testing.assert_allclose(outputs[2], saliency, atol=MAP_TOLERANCE, rtol=0)
    np.testing.assert_allclose(outputs[2].reshape(5, -1).max(1), 1.0, atol=1e-6)  # a real, normalised gradient


def test_torchscript_file_matches_predict(exported, run, images):
    module = torch.jit.load(str(exported / "model.pt"))
    x = torch.from_numpy(images).float().div(255).unsqueeze(1)
    with torch.no_grad():  # the graph holds the gradient as plain operators: no autograd needed by the caller
        outputs = [t.numpy() for t in module(x)]
    check_against_predict(outputs, run, images)


def test_onnx_file_matches_predict(exported, run, images):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["cls", "seg", "saliency"]
    x = (images.astype(np.float32) / 255)[:, None]
    check_against_predict(session.run(None, {"image": x}), run, images)


def test_metadata_says_how_to_feed_and_read_the_model(exported, run):
    meta = json.loads((exported / "metadata.json").read_text())
    assert meta["files"] == {"torchscript": "model.pt", "onnx": "model.onnx"}
    assert meta["input"]["shape"] == ["batch", 1, 32, 32] and meta["input"]["size"] == 32
    assert meta["input"]["channels"] == 1 and "/ 255" in meta["input"]["scaling"]
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert list(outputs) == ["cls", "seg", "saliency"]
    assert outputs["cls"]["values"] == "probabilities" and outputs["cls"]["classes"] == ["normal", "pneumonia"]
    assert outputs["seg"]["threshold"] == 0.5 and outputs["seg"]["shape"] == ["batch", 1, 32, 32]
    assert outputs["saliency"]["route"] == "cls->seg" and outputs["saliency"]["shape"] == ["batch", 1, 32, 32]
    assert meta["class_names"]["cls"] == ["normal", "pneumonia"]
    assert meta["config"] == json.loads((run / "config.json").read_text())
    assert meta["mtssl_version"] == "0.1.0" and meta["checkpoint"]["tag"] == "best"
    verified = meta["verified"]
    assert max(verified["max_abs_difference"]["torchscript"].values()) <= verified["tolerance"] == 1e-3
    onnx = verified["max_abs_difference"]["onnx"]
    assert onnx["cls"] <= 1e-3 and onnx["seg"] <= 1e-3 and onnx["saliency"] <= verified["onnx_map_tolerance"] == 0.1


def predict_folder(source, inputs, out):
    result = CliRunner().invoke(main, ["predict", str(source), str(inputs), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return {row["image"]: [float(row["normal"]), float(row["pneumonia"])] for row in csv.DictReader(open(out / "cls.csv"))}


def test_predict_runs_from_an_exported_folder(exported, run, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(3)
    for i, shape in enumerate([(40, 50), (32, 32), (61, 33)]):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(inputs / f"img{i}.png")
    onnx_only = tmp_path / "onnx-only"  # no TorchScript file: predict falls back to onnxruntime
    shutil.copytree(exported, onnx_only)
    (onnx_only / "model.pt").unlink()
    meta = json.loads((onnx_only / "metadata.json").read_text())
    meta["files"] = {"onnx": "model.onnx"}
    (onnx_only / "metadata.json").write_text(json.dumps(meta))
    want = predict_folder(run, inputs, tmp_path / "from-run")
    for name, source in (("ts", exported), ("onnx", onnx_only)):
        got = predict_folder(source, inputs, tmp_path / name)
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_allclose(got[key], want[key], atol=PROBABILITY_TOLERANCE)
        for stem in want:
            mask = np.asarray(Image.open(tmp_path / name / "seg" / f"{stem}.png"))
            ref = np.asarray(Image.open(tmp_path / "from-run" / "seg" / f"{stem}.png"))
            assert mask.shape == ref.shape and (mask != ref).mean() <= 0.01  # only pixels at p ~ 0.5 may flip
            assert (tmp_path / name / "saliency" / f"{stem}.png").is_file()


def test_missing_onnx_packages_name_the_extra(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    result = CliRunner().invoke(main, ["export", str(run), "--format", "onnx", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "mtssl[export]" in result.stderr and "onnxruntime" in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_convolution_gradient_rewrite_matches_autograd():
    """The transposed-convolution form of a convolution's input gradient, odd sizes and stride 2 included."""
    torch.manual_seed(0)
    for size, stride, padding in [(9, 2, 1), (8, 1, 1), (7, 2, 0)]:
        x = torch.randn(2, 3, size, size, requires_grad=True)
        w = torch.randn(4, 3, 3, 3)
        y = F.conv2d(x, w, stride=stride, padding=padding)
        g = torch.randn_like(y)
        (want,) = torch.autograd.grad(y, x, g)
        got, _, _ = REWRITES[aten.convolution_backward.default](
            g, x.detach(), w, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1, [True, False, False])
        torch.testing.assert_close(got, want)


def test_max_pool_gradient_rewrite_matches_autograd():
    x = torch.tensor([[[[1., 5., 2., 0.], [3., 4., 8., 1.], [0., 0., 1., 2.], [7., 0., 3., 9.]]]], requires_grad=True)
    y, indices = F.max_pool2d(x, 2, return_indices=True)
    g = torch.tensor([[[[10., 20.], [30., 40.]]]])
    (want,) = torch.autograd.grad(y, x, g)
    # by hand: each window's gradient lands on its maximum (5, 8, 7, 9)
    expected = torch.zeros(1, 1, 4, 4)
    expected[0, 0, 0, 1], expected[0, 0, 1, 2], expected[0, 0, 3, 0], expected[0, 0, 3, 3] = 10, 20, 30, 40
    torch.testing.assert_close(want, expected)
    got = REWRITES[aten.max_pool2d_with_indices_backward.default](g, x.detach(), [2, 2], [2, 2], [0, 0], [1, 1],
                                                                   False, indices)
    torch.testing.assert_close(got, expected)
