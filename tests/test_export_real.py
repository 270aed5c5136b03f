"""mtssl export of a model trained on scan-like images (flat black borders, saturated areas, burned-in letters):
the check against predict passes on them, its tolerance is an option, and a failed export leaves nothing behind."""
from __future__ import annotations

import json

import pytest

from conftest import invoke, tiny_train_args
from data_trees import lung_mask, write
from mtssl.evaluation.inference import load_model
from mtssl.export.write import check_images, scan_like

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


def test_export_of_a_scan_model_matches_predict(scan_run, tmp_path):
    result = export(scan_run, tmp_path / "model", "--format", "both")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert meta["verified"]["tolerance"] == 1e-3
    for kind in ("torchscript", "onnx"):
        assert meta["verified"]["max_abs_difference"][kind]["saliency"] <= 1e-3
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

