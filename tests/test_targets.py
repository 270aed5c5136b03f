"""Targets a task declares: multi-structure masks, colour images, patient splits, renamed classes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import invoke, spaced
from data_trees import gradient, write
from mtssl.evaluation.evaluate import eval_file_name
from mtssl.data.prepare import open_source
from mtssl.data.splits import split_indices
from mtssl.targets import TargetSpec
from mtssl_plugins.targets import CLASS_LABEL, binary_masks

BASE = ["--quiet", "--size", "32", "--batch-size", "2", "--steps", "2", "--eval-every", "2", "--save-every", "2"]


def train(tmp_path: Path, *args: str) -> Path:
    result = invoke(["train", *BASE, "--out", str(tmp_path / "runs"), *args])
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])



# -- the declaration itself ------------------------------------------------------

def test_spec_agreement_storage_and_description():
    assert CLASS_LABEL.agrees(TargetSpec("class", "int64", (), missing=-1))
    assert not CLASS_LABEL.agrees(binary_masks(1))
    assert not binary_masks(1).agrees(binary_masks(3))
    assert not TargetSpec("ctr", "float32").agrees(TargetSpec("age", "float32"))
    assert binary_masks(3).storage_shape(16) == (3, 16, 16) and CLASS_LABEL.storage_shape(16) == ()
    assert TargetSpec("findings", "float32", (14,)).empty(5, 16).shape == (5, 14)
    assert CLASS_LABEL.categorical and not binary_masks(1).categorical
    assert not TargetSpec("ctr", "float32").categorical
    assert binary_masks(3).describe() == "mask targets (3-channel uint8 map)"
    assert CLASS_LABEL.describe() == "class targets (int64 per image)"
    assert TargetSpec.from_dict(binary_masks(2).as_dict()) == binary_masks(2)
    with pytest.raises(ValueError, match="spatial target's shape"):
        TargetSpec("mask", "uint8", (), spatial=True)


def test_source_and_task_that_disagree_are_named_with_both(host, tmp_path):
    with pytest.raises(ValueError, match=r"provides mask targets \(2-channel uint8 map\), but the task needs "
                                         r"mask targets \(1-channel uint8 map\); the source yields 2 channel\(s\) "
                                         r"\(lungs, heart\)"):
        open_source(host, "synthetic:n=4,structures=lungs+heart", binary_masks(1), 0)


# -- multi-structure segmentation ---------------------------------------------------

def test_synthetic_heart_beside_the_lungs(host):
    source = open_source(host, "synthetic:n=3,structures=lungs+heart", binary_masks(2), 0)
    sample = source.load_resized(0, 64)
    assert sample.target.shape == (64, 64, 2) and source.class_names == ("lungs", "heart")
    lungs, heart = sample.target[..., 0], sample.target[..., 1]
    assert lungs.sum() > 0 and heart.sum() > 0 and not (lungs & heart).any()
    single = open_source(host, "synthetic:n=3", binary_masks(1), 0).load_resized(0, 64)
    assert np.array_equal(single.target, lungs)  # the lung channel is the one-structure mask


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_multi_structure_segmentation_trains_and_evaluates_per_structure(tmp_path, activation):
    run = train(tmp_path, "--task", f"seg:channels=2,activation={activation}",
                "--seg-data", "synthetic:n=12,structures=lungs+heart", "--seg-labels", "4")
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"val/seg/dice", "val/seg/dice/0", "val/seg/dice/1"} <= set(line)
    result = invoke(["eval", str(run), "--seg-test", "synthetic:n=4,structures=lungs+heart"])
    assert result.exit_code == 0, result.output
    assert "lungs/dice" in result.output and "heart/dice" in result.output
    saved = json.loads((run / "eval-seg-synthetic_n=4_structures=lungs+heart.json").read_text())
    entry = saved["results"]["seg"]["synthetic:n=4,structures=lungs+heart"]
    aggregate = entry["aggregate"]
    assert aggregate["dice"]["mean"] == pytest.approx(
        np.mean([aggregate["lungs/dice"]["mean"], aggregate["heart/dice"]["mean"]]))
    out = tmp_path / "preds"
    scan = write(tmp_path / "scans" / "a.png", gradient(1, 40))
    assert invoke(["predict", str(run), str(scan), "--out", str(out)]).exit_code == 0
    assert (out / "seg" / "lungs" / "a.png").is_file() and (out / "seg" / "heart" / "a.png").is_file()


def scr_tree(root: Path, stems: list[str], side: int = 48) -> tuple[Path, Path]:
    """PNG radiographs with SCR-style lung, heart and clavicle mask folders (one structure a band)."""
    images, masks = root / "images", root / "scr" / "masks"
    folders = {"left lung": (8, 20, 0, 24), "right lung": (8, 20, 24, 48), "heart": (22, 36, 12, 36),
               "left clavicle": (2, 6, 0, 24), "right clavicle": (2, 6, 24, 48)}
    for i, stem in enumerate(stems):
        write(images / f"{stem}.png", gradient(i, side))
        for folder, (top, bottom, left, right) in folders.items():
            mask = np.zeros((side, side), np.uint8)
            mask[top + i % 3: bottom, left:right] = 255
            write(masks / folder / f"{stem}.gif", mask)
    return images, root / "scr"


def test_jsrt_scr_structures_as_channels(host, tmp_path):
    images, scr = scr_tree(tmp_path, [f"JPCNN{i:03d}" for i in range(8)])
    source = open_source(host, f"jsrt:{images}:masks={scr},structures=lungs+heart+clavicles", binary_masks(3), 0)
    assert source.class_names == ("lungs", "heart", "clavicles")
    target = source.load(0).target
    assert target.shape == (48, 48, 3)
    assert target[10, 5, 0] == 1 and target[10, 40, 0] == 1  # left and right lung merged
    assert target[30, 20, 1] == 1 and target[30, 20, 0] == 0
    assert target[3, 5, 2] == 1 and target[3, 40, 2] == 1
    run = train(tmp_path, "--task", "seg:channels=3", "--seg-data",
                f"jsrt:{images}:masks={scr},structures=lungs+heart+clavicles", "--seg-labels", "3")
    result = invoke(["eval", str(run)])
    assert result.exit_code == 0, result.output
    for name in ("lungs", "heart", "clavicles"):
        assert f"{name}/dice" in result.output


# -- colour images ----------------------------------------------------------------------

def test_colour_folder_source_trains_and_predicts_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    for cls, tint in (("a", (200, 40, 40)), ("b", (40, 40, 200))):
        for i in range(6):
            image = (rng.random((24, 24, 3)) * 60 + np.array(tint)).clip(0, 255).astype(np.uint8)
            write(tmp_path / "derm" / cls / f"{cls}{i}.png", image)
    run = train(tmp_path, "--task", "cls", "--cls-data", f"folders:{tmp_path / 'derm'}:channels=3",
                "--cls-labels", "4")
    config = json.loads((run / "config.json").read_text())
    assert config["channels"] == 3
    from mtssl.evaluation.inference import load_model

    loaded = load_model(run, "last")
    first_conv = next(m for m in loaded.model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 3
    out = tmp_path / "preds"
    result = invoke(["predict", str(run), str(tmp_path / "derm" / "a"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len((out / "cls.csv").read_text().splitlines()) == 7
    grey = invoke(["train", *BASE, "--out", str(tmp_path / "runs"), "--task", "cls", "--task", "seg",
                   "--cls-data", f"folders:{tmp_path / 'derm'}:channels=3", "--cls-labels", "4",
                   "--seg-data", "synthetic:n=8", "--seg-labels", "2"])
    assert grey.exit_code == 2 and "different image channels" in spaced(grey.output)


# -- patient-level splits ---------------------------------------------------------------

def kermany_tree(root: Path, children: int = 12) -> Path:
    """Two images per child: ``personN_bacteria_*`` (pneumonia) and ``IM-NNNN-000k`` (normal)."""
    train = root / "chest_xray" / "train"
    seed = 0
    for child in range(children):
        for k in range(2):
            seed += 1
            if child % 2:
                write(train / "PNEUMONIA" / f"person{child}_bacteria_{100 * child + k}.jpeg", gradient(seed, 32))
            else:
                write(train / "NORMAL" / f"IM-{child:04d}-000{k + 1}.jpeg", gradient(seed, 32))
    return root / "chest_xray"


def test_kermany_never_puts_one_child_on_two_sides(host, tmp_path):
    root = kermany_tree(tmp_path)
    source = open_source(host, f"kermany:{root}", CLASS_LABEL, 0)
    groups = source.groups()
    assert len(set(groups)) == 12 and groups.count("person1") == 2 and groups.count("IM-0000") == 2
    for seed in range(5):
        split = split_indices(len(source), 5, seed, 0.25, source.class_labels(), groups=groups)
        parts = {name: {groups[i] for i in getattr(split, name)} for name in ("labeled", "unlabeled", "val")}
        assert not parts["labeled"] & parts["unlabeled"] and not parts["labeled"] & parts["val"]
        assert not parts["unlabeled"] & parts["val"]
        assert len(split.labeled) == 5  # the budget is exact; the cut patient's other image is left out
        excluded = {groups[i] for i in split.excluded}
        assert not excluded & (parts["unlabeled"] | parts["val"])
        assert len(split.labeled) + len(split.unlabeled) + len(split.val) + len(split.excluded) == len(source)


def test_patient_split_is_recorded_and_eval_warns_about_shared_patients(tmp_path):
    root = kermany_tree(tmp_path)
    run = train(tmp_path, "--task", "cls", "--cls-data", f"kermany:{root}", "--cls-labels", "6",
                "--cls-val-fraction", "0.25")
    listing = json.loads((run / "splits" / "cls.json").read_text())
    groups = listing["groups"]
    assert set(groups) == {"labeled", "unlabeled", "val"}
    assert not set(groups["val"]) & (set(groups["labeled"]) | set(groups["unlabeled"]))
    result = invoke(["eval", str(run), "--cls-test", f"kermany:{root}"])
    assert result.exit_code == 0, result.output
    text = spaced(result.output)
    trained = len(listing["labeled"]) + len(listing["unlabeled"])
    assert f"{trained} test image(s) were training images of this run" in text
    assert "test patient(s) also appear in this run's training data" in text


def test_group_regex_for_generic_folders(host, tmp_path):
    for cls in ("a", "b"):
        for patient in range(3):
            for k in range(2):
                write(tmp_path / cls / f"{cls}-p{patient}-{k}.png", gradient(patient * 2 + k, 16))
    source = open_source(host, rf"folders:{tmp_path}:group=-(p\d+)-", CLASS_LABEL, 0)
    assert sorted(set(source.groups())) == ["p0", "p1", "p2"]
    with pytest.raises(ValueError, match="not a valid regular expression"):
        open_source(host, f"folders:{tmp_path}:group=(", CLASS_LABEL, 0)


# -- renaming classes across datasets ---------------------------------------------------

def nih_layout(root: Path) -> Path:
    lines = ["Image Index,Finding Labels,Follow-up #,Patient ID"]
    for i, findings in enumerate(["No Finding", "Pneumonia", "No Finding", "Pneumonia|Effusion", "Effusion"]):
        name = f"{i:08d}_000.png"
        lines.append(f"{name},{findings},0,{i // 2}")
        write(root / "images_001" / "images" / name, gradient(i, 32))
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(lines) + "\n")
    return root


def test_kermany_trained_classifier_scored_on_nih_with_a_class_map(tmp_path):
    run = train(tmp_path, "--task", "cls", "--cls-data", f"kermany:{kermany_tree(tmp_path)}", "--cls-labels", "6")
    nih = nih_layout(tmp_path / "nih")
    plain = invoke(["eval", str(run), "--cls-test", f"nih:{nih}"])
    assert plain.exit_code == 2
    assert "has classes No Finding, Pneumonia, but the task was trained on NORMAL, PNEUMONIA" in spaced(plain.output)
    spec = f"nih:{nih}:map=No Finding=NORMAL|Pneumonia=PNEUMONIA"
    result = invoke(["eval", str(run), "--cls-test", spec])
    assert result.exit_code == 0, result.output
    entry = json.loads((run / eval_file_name({"cls": [spec]})).read_text())["results"]["cls"][spec]
    assert entry["n"] == 4
    assert [r["target"] for r in entry["per_image"]] == ["NORMAL", "PNEUMONIA", "NORMAL", "PNEUMONIA"]
    wrong = invoke(["eval", str(run), "--cls-test", f"nih:{nih}:map=Effusion=NORMAL"])
    assert wrong.exit_code == 2 and "which the source does not have" in spaced(wrong.output)
