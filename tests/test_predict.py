"""mtssl predict: images of odd sizes and modes in, CSV / mask PNGs / saliency PNGs at original size out."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from mtssl.cli.app import main
from mtssl.evaluation.inference import load_model, predict
from tiny_run import tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory)


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (53, 37, 3), dtype=np.uint8)).save(folder / "rgb.png")
    Image.fromarray(rng.integers(0, 65536, (41, 70), dtype=np.uint16)).save(folder / "deep.png")
    Image.fromarray(rng.integers(0, 256, (30, 31), dtype=np.uint8)).convert("P").save(folder / "sub" / "pal.png")
    Image.fromarray(rng.integers(0, 256, (64, 48, 4), dtype=np.uint8), "RGBA").save(folder / "sub" / "rgba.png")
    return folder


EXPECTED = {"rgb": (37, 53), "deep": (70, 41), "pal": (31, 30), "rgba": (48, 64)}  # PIL sizes: (W, H)


def test_predict_writes_csv_masks_and_maps_at_original_size(run, inputs, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", str(run), str(inputs), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out / "cls.csv")))
    assert [r["image"] for r in rows] == ["deep", "rgb", "pal", "rgba"]
    for row in rows:
        probs = [float(row["normal"]), float(row["pneumonia"])]
        assert sum(probs) == pytest.approx(1, abs=1e-5)
        assert row["predicted"] == ("normal", "pneumonia")[int(np.argmax(probs))]
    for name, size in EXPECTED.items():
        mask = Image.open(out / "seg" / f"{name}.png")
        assert mask.size == size and mask.mode == "L"
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        saliency = Image.open(out / "saliency" / f"{name}.png")
        assert saliency.size == size
        values = np.asarray(saliency)
        assert values.max() > 100 and values.std() > 1  # scaled per image, then resized bilinearly


def test_predict_is_deterministic(run, inputs, tmp_path):
    for name in ("a", "b"):
        result = CliRunner().invoke(main, ["predict", str(run), str(inputs / "rgb.png"), "--out",
                                           str(tmp_path / name), "--batch-size", "1", "--quiet"])
        assert result.exit_code == 0, result.output
    for part in ("cls.csv", "seg/rgb.png", "saliency/rgb.png"):
        assert (tmp_path / "a" / part).read_bytes() == (tmp_path / "b" / part).read_bytes()


def test_unreadable_image_is_named_or_skipped(run, inputs, tmp_path):
    bad = inputs / "broken.png"
    bad.write_bytes(b"not an image")
    result = CliRunner().invoke(main, ["predict", str(run), str(inputs), "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 2
    assert "broken.png" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["predict", str(run), str(inputs), "--out", str(tmp_path / "p"), "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "broken.png" in result.output
    assert len(list(csv.DictReader(open(tmp_path / "p" / "cls.csv")))) == 4


def test_missing_input_is_a_clear_error(run, tmp_path):
    result = CliRunner().invoke(main, ["predict", str(run), str(tmp_path / "nope.png"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "nope.png" in result.output


def test_asking_for_maps_leaves_outputs_unchanged(run):
    loaded = load_model(run)
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    plain = predict(loaded, images)
    with_maps = predict(loaded, images, with_maps=True)
    for task in plain.probabilities:
        np.testing.assert_allclose(plain.probabilities[task], with_maps.probabilities[task], atol=1e-6)
    assert set(with_maps.maps) == {"saliency"} and with_maps.maps["saliency"].shape == (3, 32, 32)
    assert not plain.maps
    # the saliency map is the input gradient of the top class logit
    x = torch.from_numpy(images[:1]).float().div(255).unsqueeze(1).requires_grad_(True)
    logits = loaded.model.heads["cls"](loaded.model.backbone(x), {})
    logits.max(1).values.sum().backward()
    grad = x.grad.abs()[0, 0].numpy()
    np.testing.assert_allclose(with_maps.maps["saliency"][0], grad / grad.max(), atol=1e-4)
