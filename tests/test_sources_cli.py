"""The CLI on on-disk data: training on class folders plus image/mask pairs, and ``mtssl data inspect``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import flat, invoke
from data_trees import gradient, lung_mask, pairs_tree, write


def small_class_tree(root: Path, per_class: int) -> Path:
    for label in ("normal", "pneumonia"):
        for i in range(per_class):
            write(root / label / f"{label}{i:03d}.png", gradient(i, 32))
    return root


def test_train_on_folders_and_pairs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    classes = small_class_tree(tmp_path / "cls", 60)  # the default budget of 100 labels fits
    images, masks = pairs_tree(tmp_path / "seg", 14)
    result = invoke(["train", "--quiet", "--task", "cls", "--task", "seg", "--cls-data", f"folders:{classes}",
                     "--seg-data", f"pairs:{images},{masks}", "--size", "32", "--steps", "2",
                     "--batch-size", "2", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    cls_split = json.loads((run / "splits" / "cls.json").read_text())
    assert len(cls_split["labeled"]) == 100 and len(cls_split["val"]) == 12 and cls_split["skipped"] == []
    seg_split = json.loads((run / "splits" / "seg.json").read_text())
    assert len(seg_split["labeled"]) == 10 and all(k.startswith(str(images)) for k in seg_split["unlabeled"])
    assert len(list((tmp_path / ".mtssl-cache").iterdir())) == 2


def test_data_inspect_json_reports_classes_sizes_and_bad_files(tmp_path):
    root = small_class_tree(tmp_path / "d", 3)
    write(root / "normal" / "big.png", np.dstack([gradient(0, 48)] * 3))
    (root / "pneumonia" / "broken.png").write_bytes(b"nope")
    result = invoke(["data", "inspect", f"folders:{root}", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["classes"] == {"normal": 4, "pneumonia": 3}
    assert report["sizes"] == {"32x32": 6, "48x48": 1} and report["modes"] == {"gray8": 6, "rgb8": 1}
    assert [Path(b["path"]).name for b in report["bad"]] == ["broken.png"]


def test_data_inspect_table_for_masks(tmp_path):
    images, masks = pairs_tree(tmp_path, 3)
    (masks / "case001_mask.png").unlink()
    write(masks / "case002_mask.png", lung_mask(2, value=1))
    result = invoke(["data", "inspect", f"pairs:{images},{masks}"])
    assert result.exit_code == 0, result.output
    output = flat(result.stdout)  # independent of terminal width and of the temporary path's length
    assert flat("masks missing") in output and flat(f"{images / 'case001.png'}: mask missing") in output
