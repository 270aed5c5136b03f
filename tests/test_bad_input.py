"""Every kind of bad input: an error naming the file and the problem, or (skip_bad) left out and counted."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke
from data_trees import class_tree, gradient, lung_mask, pairs_tree, write

from mtssl.run.config import TaskData
from mtssl.data.errors import DataError
from mtssl_plugins.targets import CLASS_LABEL, binary_masks
from mtssl.data.prepare import data_summary, load_arrays, open_source, prepare_task_data


def folders(host, root: Path, skip_bad: bool = False):
    return open_source(host, f"folders:{root}", CLASS_LABEL, 0, skip_bad)


def pairs(host, root: Path, skip_bad: bool = False):
    return open_source(host, f"pairs:{root / 'images'},{root / 'masks'}", binary_masks(), 0, skip_bad)


def load(source, tmp_path, skip_bad=False):
    return load_arrays(source, 16, cache_dir=tmp_path / "cache", skip_bad=skip_bad)


def test_corrupt_image(host, tmp_path):
    class_tree(tmp_path / "d", {"a": 3, "b": 3})
    bad = tmp_path / "d" / "a" / "zz_corrupt.png"
    bad.write_bytes(b"this is not a png at all")
    source = folders(host, tmp_path / "d")
    with pytest.raises(DataError, match=r"zz_corrupt\.png: cannot decode image"):
        load(source, tmp_path)
    arrays = load(source, tmp_path, skip_bad=True)
    assert len(arrays) == 6 and [s.path for s in arrays.skipped] == [str(bad)]


def test_truncated_image(host, tmp_path):
    class_tree(tmp_path / "d", {"a": 2, "b": 2})
    bad = write(tmp_path / "d" / "b" / "cut.png", gradient(9, 64))
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    source = folders(host, tmp_path / "d")
    with pytest.raises(DataError, match=r"cut\.png: cannot decode image .*truncated"):
        load(source, tmp_path)
    assert len(load(source, tmp_path, skip_bad=True).skipped) == 1


def test_a_cached_bad_item_still_stops_a_run_without_skip_bad(host, tmp_path):
    class_tree(tmp_path / "d", {"a": 2, "b": 2})
    (tmp_path / "d" / "a" / "junk.png").write_bytes(b"junk")
    source = folders(host, tmp_path / "d")
    assert len(load(source, tmp_path, skip_bad=True).skipped) == 1
    with pytest.raises(DataError, match=r"junk\.png"):
        load(source, tmp_path)


def test_mask_missing(host, tmp_path):
    pairs_tree(tmp_path, 4)
    (tmp_path / "masks" / "case002_mask.png").unlink()
    with pytest.raises(DataError, match=r"case002\.png: mask missing"):
        pairs(host, tmp_path)
    source = pairs(host, tmp_path, skip_bad=True)
    arrays = load(source, tmp_path, skip_bad=True)
    assert len(arrays) == 3 and arrays.skipped[0].path.endswith("case002.png")


def test_mask_size_differs(host, tmp_path):
    pairs_tree(tmp_path, 3)
    write(tmp_path / "masks" / "case001_mask.png", lung_mask(1, side=24))
    source = pairs(host, tmp_path)
    with pytest.raises(DataError, match=r"case001\.png: mask size differs: .*case001_mask\.png is 24x24 but the image is 40x40"):
        load(source, tmp_path)
    assert len(load(source, tmp_path, skip_bad=True)) == 2


def test_non_binary_mask(host, tmp_path):
    pairs_tree(tmp_path, 3)
    write(tmp_path / "masks" / "case000_mask.png", gradient(5))
    source = pairs(host, tmp_path)
    with pytest.raises(DataError, match=r"case000_mask\.png: mask is not binary"):
        load(source, tmp_path)
    arrays = load(source, tmp_path, skip_bad=True)
    assert len(arrays) == 2 and "not binary" in arrays.skipped[0].reason


def test_empty_class_folder(host, tmp_path):
    class_tree(tmp_path / "d", {"a": 2, "b": 2})
    (tmp_path / "d" / "c").mkdir()
    with pytest.raises(DataError, match=r"d/c: class folder is empty"):
        folders(host, tmp_path / "d")
    source = folders(host, tmp_path / "d", skip_bad=True)
    assert len(source) == 4 and len(load(source, tmp_path, skip_bad=True).skipped) == 1


@pytest.mark.parametrize("spec", ["folders", "kermany", "montgomery", "shenzhen", "jsrt", "nih"])
def test_folder_matching_no_layout(host, tmp_path, spec):
    write(tmp_path / "loose.png", gradient(0))
    with pytest.raises(DataError, match=rf"{tmp_path}.*(no known layout|no Data_Entry|no SCR|holds no)"):
        open_source(host, f"{spec}:{tmp_path}",
                    CLASS_LABEL if spec in {"folders", "kermany", "nih"} else binary_masks(), 0)


def test_missing_folder(host, tmp_path):
    with pytest.raises(DataError, match=r"nowhere: folder not found"):
        folders(host, tmp_path / "nowhere")


def test_mismatched_stems(host, tmp_path):
    pairs_tree(tmp_path, 3)
    write(tmp_path / "masks" / "other_mask.png", lung_mask(0))
    with pytest.raises(DataError, match=r"other_mask\.png: mask matches no image"):
        pairs(host, tmp_path)
    assert len(pairs(host, tmp_path, skip_bad=True).problems()) == 1


def test_label_budget_larger_than_data(host, tmp_path):
    class_tree(tmp_path / "d", {"a": 3, "b": 3})
    task = host.create("task", "cls")
    data = TaskData(train=f"folders:{tmp_path / 'd'}", labels=50)
    with pytest.raises(ValueError, match=r"cls: source 'folders:.*': label budget 50 is larger than the 5"):
        prepare_task_data(host, "cls", task, data, 16, 0, cache_dir=tmp_path / "cache")


def test_skipped_items_are_summarised(host, tmp_path):
    class_tree(tmp_path / "d", {"a": 4, "b": 4})
    (tmp_path / "d" / "a" / "junk.png").write_bytes(b"junk")
    task = host.create("task", "cls")
    data = TaskData(train=f"folders:{tmp_path / 'd'}", labels=2)
    arrays = prepare_task_data(host, "cls", task, data, 16, 0, cache_dir=tmp_path / "cache", skip_bad=True)
    assert data_summary({"cls": arrays}) == ["cls: skipped 1 bad item(s) (1 cannot decode image)"]


def test_cli_reports_one_line_and_skip_bad_counts(tmp_path):
    class_tree(tmp_path / "d", {"a": 6, "b": 6})
    (tmp_path / "d" / "b" / "junk.png").write_bytes(b"junk")
    args = ["train", "--quiet", "--task", "cls", "--cls-data", f"folders:{tmp_path / 'd'}", "--size", "32",
            "--batch-size", "2", "--steps", "1", "--cls-labels", "4", "--out", str(tmp_path / "runs"),
            "--cache-dir", str(tmp_path / "c")]
    failed = invoke(args)
    assert failed.exit_code == 2
    assert "junk.png: cannot decode image" in failed.stderr and "Traceback" not in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    ok = invoke(args + ["--skip-bad"])
    assert ok.exit_code == 0, ok.output
    assert "skipped 1 bad item" in ok.stderr
    run = Path(ok.stdout.strip().splitlines()[-1])
    skipped = json.loads((run / "splits" / "cls.json").read_text())["skipped"]
    assert [Path(s["path"]).name for s in skipped] == ["junk.png"]
    assert np.isin(["junk.png"], [Path(k).name for k in json.loads((run / "splits" / "cls.json").read_text())["labeled"]]).sum() == 0
