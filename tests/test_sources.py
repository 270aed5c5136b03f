"""Every on-disk layout: what it lists, the labels and masks it yields, and its decoding."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image
from data_trees import (SIDE, class_tree, gradient, jsrt_tree, lung_mask, montgomery_tree, nih_tree, pairs_tree,
                        shenzhen_tree, write)

from mtssl.data.arrays import decode_all
from mtssl.data.decode import binarize_mask, read_image
from mtssl.data.errors import DataError
from mtssl_plugins.targets import CLASS_LABEL, binary_masks
from mtssl.data.prepare import open_source


def test_kermany_root_and_split_folder(host, tmp_path):
    class_tree(tmp_path / "chest_xray" / "train", {"NORMAL": 3, "PNEUMONIA": 5})
    class_tree(tmp_path / "chest_xray" / "test", {"NORMAL": 2, "PNEUMONIA": 2})
    root = open_source(host, f"kermany:{tmp_path / 'chest_xray'}", CLASS_LABEL, 0)
    split = open_source(host, f"kermany:{tmp_path / 'chest_xray' / 'train'}", CLASS_LABEL, 0)
    test = open_source(host, f"kermany:{tmp_path / 'chest_xray'}:split=test", CLASS_LABEL, 0)
    assert len(root) == len(split) == 8 and len(test) == 4
    assert root.class_names == ("NORMAL", "PNEUMONIA")
    assert sorted(root.class_labels()) == [0] * 3 + [1] * 5
    assert root.keys == split.keys
    arrays = decode_all(root, 32)
    assert arrays.images.shape == (8, 1, 32, 32) and arrays.images.dtype == np.uint8
    assert arrays.targets.tolist() == root.class_labels()


def test_folders_classes_are_sorted_subfolders(host, tmp_path):
    class_tree(tmp_path, {"zeta": 2, "alpha": 3, "mid": 2})
    source = open_source(host, f"folders:{tmp_path}", CLASS_LABEL, 0)
    assert source.class_names == ("alpha", "mid", "zeta")
    assert source.class_labels() == [0, 0, 0, 1, 1, 2, 2]


def test_folders_reject_mask_target(host, tmp_path):
    class_tree(tmp_path, {"a": 2, "b": 2})
    with pytest.raises(ValueError, match="class labels"):
        open_source(host, f"folders:{tmp_path}", binary_masks(), 0)


def test_pairs_match_by_stem_with_mask_suffix(host, tmp_path):
    images, masks = pairs_tree(tmp_path, 4, mask_suffix="_mask")
    write(masks / "case000_mask.png", lung_mask(0)).rename(masks / "case000.png")  # plain stem works too
    source = open_source(host, f"pairs:{images},{masks}", binary_masks(), 0)
    assert len(source) == 4
    arrays = decode_all(source, 20)
    assert set(np.unique(arrays.targets)) == {0, 1}
    expected = np.asarray(Image.fromarray(lung_mask(2)).resize((20, 20), Image.Resampling.NEAREST)) // 255
    assert arrays.targets.shape == (4, 1, 20, 20)
    assert np.array_equal(arrays.targets[2, 0], expected)


def test_decoding_keeps_depth_and_channels(tmp_path):
    image = gradient(3)
    wide = write(tmp_path / "a16.png", image.astype(np.uint16) * 257)
    rgb = write(tmp_path / "rgb.png", np.dstack([image, image // 2, image // 3]))
    palette = tmp_path / "p.png"
    Image.fromarray(image).convert("P").save(palette)
    assert read_image(wide).dtype == np.uint16
    assert read_image(rgb).shape == (SIDE, SIDE, 3)
    assert read_image(palette).shape == (SIDE, SIDE, 3)


def test_dicom_without_pydicom_names_the_file(tmp_path):
    if importlib.util.find_spec("pydicom"):
        pytest.skip("pydicom is installed")
    fake = tmp_path / "scan.dcm"
    fake.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    with pytest.raises(DataError, match=r"scan\.dcm.*pydicom"):
        read_image(fake)


def test_soft_mask_edges_are_thresholded_but_label_maps_refused(tmp_path):
    mask = lung_mask(1)
    soft = mask.copy()
    soft[np.nonzero(np.diff(mask.astype(int), axis=1))] = 128  # a few anti-aliased edge pixels
    edge = soft == 128
    assert 0 < edge.mean() < 0.05
    assert np.array_equal(binarize_mask(soft, "soft.png"), (soft >= 128).astype(np.uint8))
    faint = np.where(edge, 100, soft)  # below halfway: background
    assert np.array_equal(binarize_mask(faint, "faint.png"), (mask > 0).astype(np.uint8) & ~edge)
    assert binarize_mask(mask // 255, "01.png").max() == 1
    labels = np.repeat(np.arange(4, dtype=np.uint8), SIDE * SIDE // 4).reshape(SIDE, SIDE) * 60
    with pytest.raises(DataError, match=r"labels\.png: mask is not binary"):
        binarize_mask(labels, "labels.png")


def test_montgomery_merges_left_and_right(host, tmp_path):
    montgomery_tree(tmp_path, 4)
    masks = open_source(host, f"montgomery:{tmp_path}", binary_masks(), 0)
    assert len(masks) == 4
    merged = masks.load(0).target
    assert merged[:, 30:38].any() and merged[:, 10:20].any()
    labels = open_source(host, f"montgomery:{tmp_path}", CLASS_LABEL, 0)
    assert labels.class_labels() == [0, 1, 0, 1] and labels.class_names == ("normal", "tuberculosis")


def test_shenzhen_pairs_mask_folder(host, tmp_path):
    shenzhen_tree(tmp_path, 3)
    source = open_source(host, f"shenzhen:{tmp_path}", binary_masks(), 0)
    assert len(source) == 3 and np.array_equal(source.load(1).target, lung_mask(1) // 255)


def test_jsrt_raw_images_with_scr_masks(host, tmp_path):
    images, scr = jsrt_tree(tmp_path, ["JPCLN001", "JPCNN002", "JPCNN003"])
    source = open_source(host, f"jsrt:{images}:masks={scr}", binary_masks(), 0)
    assert len(source) == 3
    sample = source.load(0)
    assert sample.image.shape == (2048, 2048)
    assert sample.image[100, 100] == 255 and sample.image[100, 2000] == 0  # inverted: film look
    assert sample.target.shape == (2048, 2048)  # SCR's 1024 px masks upscaled to the image
    assert sample.target[600, 100] == 1 and sample.target[600, 1900] == 1 and sample.target[100, 100] == 0
    arrays = decode_all(source, 32)
    assert arrays.targets[0, 0, 10, 2] == 1 and arrays.targets[0, 0, 2, 2] == 0
    classes = open_source(host, f"jsrt:{tmp_path}", CLASS_LABEL, 0)
    assert classes.class_labels() == [1, 0, 0]


def test_jsrt_raw_of_wrong_size_is_named(host, tmp_path):
    images, scr = jsrt_tree(tmp_path, ["JPCLN001"])
    (images / "JPCLN009.IMG").write_bytes(b"\0" * 1000)
    source = open_source(host, f"jsrt:{images}", CLASS_LABEL, 0)
    with pytest.raises(DataError, match=r"JPCLN009\.IMG: not a JSRT raw image.*1000 bytes"):
        decode_all(source, 32)


def test_nih_maps_findings_to_classes_and_counts_dropped_rows(host, tmp_path):
    rows = [("a.png", "No Finding"), ("b.png", "Pneumonia"), ("c.png", "Effusion|Pneumonia"),
            ("d.png", "Cardiomegaly"), ("e.png", "Effusion"), ("f.png", "No Finding")]
    nih_tree(tmp_path, rows)
    source = open_source(host, f"nih:{tmp_path}", CLASS_LABEL, 0)
    assert [k.rsplit("/", 1)[-1] for k in source.keys] == ["a.png", "b.png", "c.png", "f.png"]
    assert source.class_labels() == [0, 1, 1, 0]
    assert any("2 row(s)" in r for r in source.remarks())
    custom = open_source(host, f"nih:{tmp_path}:classes=Effusion|Cardiomegaly", CLASS_LABEL, 0)
    assert custom.class_names == ("Effusion", "Cardiomegaly") and custom.class_labels() == [0, 1, 0]


def test_rgb_to_gray_is_the_rounded_channel_mean():
    from mtssl.data.decode import to_gray_uint8

    rgb = np.random.default_rng(0).integers(0, 256, (17, 19, 3), dtype=np.uint8)
    assert np.array_equal(to_gray_uint8(rgb), np.rint(rgb.mean(axis=2)).astype(np.uint8))
