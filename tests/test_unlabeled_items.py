"""Items without a target are unlabeled data; multi-label targets with unread findings train on the rest.

The source of :mod:`partial_labels_plugin` yields ``Sample(target=None)`` for every third item and
leaves some findings unread; its tasks fail on seeing a placeholder where a target should be.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import partial_labels_plugin
from conftest import invoke, spaced
from mtssl.data.prepare import load_arrays, open_source
from mtssl.data.splits import split_indices
from mtssl.plugins import PluginHost
from mtssl.run.config import RunConfig, TaskData
from mtssl.run.rundir import RunDir
from mtssl.targets import TargetSpec, known_mask, masked_binary_cross_entropy

BASE = ["--quiet", "--size", "32", "--batch-size", "2", "--steps", "1", "--eval-every", "1", "--save-every", "1",
        "--precision", "fp32"]
UNTARGETED = [i for i in range(24) if i % 3 == 2]  # of mixed:n=24


@pytest.fixture
def partial(plugin_factory):
    partial_labels_plugin.install(plugin_factory)


def key(i: int) -> str:
    return f"mixed/{i:03d}"


def train(tmp_path: Path, *args: str) -> Path:
    result = invoke(["train", *BASE, "--out", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
                     *args])
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])


# -- item 1: items without a target ------------------------------------------------------------------

def test_items_without_target_are_only_unlabeled_and_never_supervised_or_scored(partial, tmp_path):
    run = train(tmp_path, "--task", "grade:fixmatch", "--grade-data", "mixed:n=24", "--grade-labels", "6",
                "--grade-val-fraction", "0.25")
    listing = json.loads((run / "splits" / "grade.json").read_text())
    untargeted = {key(i) for i in UNTARGETED}
    assert set(listing["no_target"]) == untargeted
    assert untargeted <= set(listing["unlabeled"])
    assert not untargeted & (set(listing["labeled"]) | set(listing["val"]))
    assert len(listing["labeled"]) == 6 and len(listing["val"]) == 4  # a quarter of the 16 labeled items
    assert listing["counts"] == {"labeled": 6, "unlabeled": 14, "val": 4, "excluded": 0, "no_target": 8}
    result = invoke(["eval", str(run)])  # scores the validation set: the task refuses a placeholder
    assert result.exit_code == 0, result.output


def test_a_separate_validation_source_keeps_only_its_labeled_items(partial, tmp_path):
    result = invoke(["train", *BASE, "--out", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
                     "--task", "grade", "--grade-data", "mixed:n=24", "--grade-labels", "4",
                     "--grade-val", "mixed:n=9"])
    assert result.exit_code == 0, result.output
    assert "validation source 'mixed:n=9': 3 item(s) without a target left out" in spaced(result.stderr)
    run = Path(result.stdout.strip().splitlines()[-1])
    listing = json.loads((run / "splits" / "grade.json").read_text())
    assert listing["val"] == [key(i) for i in range(9) if i % 3 != 2]


def test_every_label_kept_still_streams_items_without_target_to_strategies(partial, tmp_path):
    from mtssl.training.trainer import Trainer

    config = RunConfig(tasks=["grade:fixmatch"], size=32, batch_size=2, steps=1, out=str(tmp_path),
                       cache_dir=str(tmp_path / "cache"), precision="fp32",
                       data={"grade": TaskData("mixed:n=24", labels="all")})
    trainer = Trainer(config, PluginHost(), RunDir.create(config))
    split = trainer.data["grade"].split
    assert split.untargeted.tolist() == UNTARGETED
    assert len(trainer.labeled["grade"]) == 14 == len(split.labeled)  # 16 labeled, 2 held out for validation
    assert len(trainer.unlabeled["grade"]) == 22  # the labeled training items and the 8 without a target


def test_patient_with_items_on_both_sides_keeps_its_unlabeled_items_with_it():
    groups = [f"p{i // 2}" for i in range(40)]
    labeled = [i % 3 != 2 for i in range(40)]
    for seed in range(6):
        split = split_indices(40, 8, seed, 0.25, groups=groups, labeled=labeled)
        untargeted = set(split.untargeted.tolist())
        assert untargeted == {i for i in range(40) if not labeled[i]}
        assert not untargeted & (set(split.labeled.tolist()) | set(split.val.tolist()))
        val_patients = {groups[i] for i in split.val}
        for i in untargeted:  # a validation patient's unlabeled items are left out, others train unlabeled
            assert (i in split.excluded) == (groups[i] in val_patients)
            assert (i in split.unlabeled) != (groups[i] in val_patients)
        trained = {groups[i] for i in (*split.labeled, *split.unlabeled)}
        assert not trained & val_patients
        assert len(split.labeled) == 8 and len(split.val) >= 7  # shares of the 27 labeled items


def test_label_budget_beyond_labeled_items_is_refused_at_check(partial, tmp_path):
    args = ["train", "--check", "--out", str(tmp_path), "--task", "grade", "--grade-data", "mixed:n=24"]
    assert invoke([*args, "--grade-labels", "14"]).exit_code == 0  # 16 labeled, 2 held out: 14 fit
    result = invoke([*args, "--grade-labels", "15"])
    assert result.exit_code == 2
    assert ("label budget 15 is larger than the 14 labeled training images (24 in the source, 8 of them without "
            "a target, 2 labeled ones held out for validation)") in spaced(result.stderr)


def test_data_inspect_counts_items_without_target(partial):
    result = invoke(["data", "inspect", "mixed:n=24", "--task", "grade", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["unlabeled"] == 8 and report["classes"] == {"low": 8, "high": 8}
    assert "partly_labeled" not in report
    findings = json.loads(invoke(["data", "inspect", "mixed:n=24", "--task", "findings", "--json"]).stdout)
    assert findings["unlabeled"] == 8 and findings["partly_labeled"] == 4  # items 0, 4, 12 and 16
    table = " ".join(invoke(["data", "inspect", "mixed:n=24", "--task", "grade"]).stdout.split())
    assert "unlabeled (no target) │ 8" in table


def test_a_test_set_with_items_without_target_is_refused(partial, tmp_path):
    run = train(tmp_path, "--task", "grade", "--grade-data", "mixed:n=24", "--grade-labels", "all")
    result = invoke(["eval", str(run), "--grade-test", "mixed:n=12"])
    assert result.exit_code == 2
    assert "test source 'mixed:n=12' has 4 image(s) without a target" in spaced(result.stderr)


# -- item 2: multi-label targets with unread findings ----------------------------------------------------

def test_masked_binary_cross_entropy_by_hand():
    spec = TargetSpec("findings", "float32", (2,), missing=-1.0)
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]], requires_grad=True)
    target = torch.tensor([[1.0, -1.0], [0.0, 1.0]])
    assert known_mask(target, spec).tolist() == [[True, False], [True, True]]
    loss = masked_binary_cross_entropy(logits, target, spec)
    # log(2) for (0 -> 1), log(1 + e) for (1 -> 0) and for (-1 -> 1); the unread finding adds nothing
    expected = (math.log(2) + 2 * math.log(1 + math.e)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert logits.grad[0, 1] == 0  # no gradient where nothing is known
    assert logits.grad[0, 0].item() == pytest.approx((0.5 - 1) / 3, rel=1e-6)  # (sigmoid(0) - 1) / known
    nan_spec = TargetSpec("findings", "float32", (2,), missing=float("nan"))
    as_nan = torch.where(target < 0, torch.nan, target)
    assert masked_binary_cross_entropy(logits, as_nan, nan_spec).item() == pytest.approx(expected, rel=1e-6)
    nothing = masked_binary_cross_entropy(logits, torch.full((2, 2), -1.0), spec)
    assert nothing.item() == 0 and nothing.requires_grad


def test_missing_value_must_fit_the_dtype_and_marks_items_unlabeled_only_when_whole():
    with pytest.raises(ValueError, match="missing=-1 cannot be stored as uint8"):
        TargetSpec("grade", "uint8", missing=-1)
    with pytest.raises(ValueError, match="missing=nan needs a floating dtype"):
        TargetSpec("grade", "int64", missing=float("nan"))
    spec = TargetSpec("findings", "float32", (3,), missing=-1.0)
    stored = np.array([[1, -1, 0], [-1, -1, -1], [0, 0, 0]], np.float32)
    assert spec.labeled(stored).tolist() == [True, False, True]
    assert TargetSpec("findings", "float32", (3,)).labeled(stored).tolist() == [True, True, True]


def test_unread_findings_survive_the_cache_and_train(partial, tmp_path):
    source = open_source(PluginHost(), "mixed:n=24", TargetSpec("findings", "float32", (3,), missing=-1.0), 0)
    for _ in ("build the cache entry", "read it back"):
        arrays = load_arrays(source, 32, cache_dir=tmp_path / "cache")
        assert arrays.targets[0].tolist() == [0.0, -1.0, 0.0] and arrays.targets[1].tolist() == [1.0, 1.0, 0.0]
        assert (arrays.targets[UNTARGETED] == -1).all()
        assert np.flatnonzero(~arrays.labeled).tolist() == UNTARGETED
    run = train(tmp_path, "--task", "findings", "--findings-data", "mixed:n=24", "--findings-labels", "all")
    listing = json.loads((run / "splits" / "findings.json").read_text())
    assert listing["counts"]["no_target"] == 8 and listing["counts"]["labeled"] == 14


def test_augmented_maps_keep_unknown_pixels_unknown_and_label_no_border():
    """A mask with a declared missing value: the border a rotation or shift brings in, and the pixels that were
    unknown, come out missing, never as background (0) that the loss would learn from."""
    import torch

    from mtssl.targets import TargetSpec
    from mtssl.training.augment import Augmenter
    from mtssl.training.views import ViewBuilder

    spec = TargetSpec("mask", "uint8", (1,), spatial=True, resample="nearest", binary=True, missing=255)
    torch.manual_seed(0)
    images = torch.rand(16, 1, 32, 32)
    target = torch.ones(16, 1, 32, 32, dtype=torch.uint8)
    target[:, :, :, :8] = 255  # the left quarter was never annotated
    builder = ViewBuilder({}, {}, Augmenter(32), {}, {})
    values = set()
    for kind in ("weak", "strong"):
        _, moved = builder.augment(images, kind, target, spec)
        assert moved.dtype == torch.uint8 and moved.shape == target.shape
        values |= set(moved.unique().tolist())
    assert values == {1, 255}  # labeled lung stays 1, anything else is missing; no invented 0
