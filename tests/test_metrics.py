"""Evaluation metrics against independent references (scikit-learn, scipy, scikit-image) and edge cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import binary_dilation
from scipy.spatial.distance import cdist, directed_hausdorff
from skimage.metrics import structural_similarity
from sklearn import metrics as skm

from mtssl_plugins.metrics.aggregate import mean_std, summarize
from mtssl_plugins.metrics.classification import binary_auc, binary_roc, classification_scores
from mtssl_plugins.metrics.segmentation import (average_hausdorff, dice, image_diagonal, jaccard, mask_metrics,
                                                precision, recall, ssim)
from mtssl_plugins.tasks.classification import ClassificationTask
from mtssl_plugins.tasks.segmentation import SegmentationTask


def blob_pair(seed: int, size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.zeros((size, size), bool)
    truth[rng.integers(2, 8):rng.integers(12, 20), rng.integers(2, 8):rng.integers(12, 20)] = True
    pred = binary_dilation(truth, iterations=int(rng.integers(0, 3))) ^ (rng.random((size, size)) < 0.05)
    return pred, truth


def reference_ahd(pred: np.ndarray, truth: np.ndarray) -> float:
    """Symmetric average Hausdorff from the full pairwise distance matrix."""
    d = cdist(np.argwhere(pred), np.argwhere(truth))
    return max(d.min(1).mean(), d.min(0).mean())


@pytest.mark.parametrize("seed", range(5))
def test_overlap_metrics_match_sklearn(seed):
    pred, truth = blob_pair(seed)
    p, t = pred.ravel(), truth.ravel()
    assert dice(pred, truth) == pytest.approx(skm.f1_score(t, p))
    assert jaccard(pred, truth) == pytest.approx(skm.jaccard_score(t, p))
    assert precision(pred, truth) == pytest.approx(skm.precision_score(t, p))
    assert recall(pred, truth) == pytest.approx(skm.recall_score(t, p))


@pytest.mark.parametrize("seed", range(5))
def test_average_hausdorff_matches_pairwise_distances(seed):
    pred, truth = blob_pair(seed)
    assert average_hausdorff(pred, truth) == pytest.approx(reference_ahd(pred, truth))
    # never larger than the (maximum) Hausdorff distance
    a, b = np.argwhere(pred), np.argwhere(truth)
    assert average_hausdorff(pred, truth) <= max(directed_hausdorff(a, b)[0], directed_hausdorff(b, a)[0])


def test_average_hausdorff_by_hand():
    truth = np.zeros((5, 5), bool)
    truth[2, 1] = True
    pred = np.zeros((5, 5), bool)
    pred[2, 1] = pred[2, 4] = True
    # pred -> truth: (0 + 3) / 2 = 1.5; truth -> pred: 0
    assert average_hausdorff(pred, truth) == pytest.approx(1.5)


@pytest.mark.parametrize("seed", range(4))
def test_ssim_matches_skimage(seed):
    pred, truth = blob_pair(seed, 32)
    expected = structural_similarity(pred.astype(float), truth.astype(float), data_range=1.0)
    assert ssim(pred.astype(float), truth.astype(float)) == pytest.approx(expected, abs=1e-9)
    rng = np.random.default_rng(seed)
    x, y = rng.random((20, 27)), rng.random((20, 27))
    assert ssim(x, y) == pytest.approx(structural_similarity(x, y, data_range=1.0), abs=1e-9)


def test_both_masks_empty_is_a_perfect_prediction():
    empty = np.zeros((16, 16), np.uint8)
    record = mask_metrics(empty, empty)
    assert record["dice"] == record["jaccard"] == record["precision"] == record["recall"] == 1.0
    assert record["hd_avg"] == 0.0
    assert record["ssim"] == pytest.approx(1.0)
    assert record["one_empty"] is False


@pytest.mark.parametrize("empty_side", ["pred", "truth"])
def test_one_empty_mask_scores_zero_and_the_diagonal(empty_side):
    full = np.zeros((16, 20), np.uint8)
    full[4:9, 5:12] = 1
    empty = np.zeros_like(full)
    pred, truth = (empty, full) if empty_side == "pred" else (full, empty)
    record = mask_metrics(pred, truth)
    assert record["dice"] == record["jaccard"] == 0.0
    assert record["hd_avg"] == pytest.approx(math.hypot(15, 19)) == pytest.approx(image_diagonal((16, 20)))
    assert record["precision" if empty_side == "pred" else "recall"] == 0.0
    assert record["one_empty"] is True
    assert all(math.isfinite(v) for v in record.values() if isinstance(v, float))


def test_mean_refuses_nan_and_handles_empty():
    assert mean_std([1.0, 3.0]) == {"mean": 2.0, "std": 1.0}
    assert mean_std([]) == {"mean": None, "std": None}
    with pytest.raises(ValueError, match="non-finite"):
        mean_std([1.0, float("nan")])


def test_segmentation_task_evaluation_aggregates_every_image():
    pairs = [blob_pair(s, 32) for s in range(4)]
    pairs.append((np.zeros((32, 32), bool), pairs[0][1]))  # a missed prediction
    probs = np.stack([p.astype(np.float32) for p, _ in pairs])[:, None] * 0.9
    targets = np.stack([t.astype(np.uint8) for _, t in pairs])[:, None]
    result = SegmentationTask("seg").evaluate(probs, targets)
    assert len(result.per_image) == 5
    dices = [dice(p, t) for p, t in pairs]
    assert result.aggregate["dice"]["mean"] == pytest.approx(np.mean(dices))
    assert result.aggregate["dice"]["std"] == pytest.approx(np.std(dices))
    hds = [reference_ahd(p, t) for p, t in pairs[:4]] + [math.hypot(31, 31)]
    assert result.aggregate["hd_avg"]["mean"] == pytest.approx(np.mean(hds))
    assert result.extra["one_empty"] == 1 and result.notes


def random_binary_case(seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, n)
    p1 = np.clip(0.3 * targets + rng.random(n) * 0.7, 0, 1)
    p1[:10] = np.round(p1[:10], 1)  # ties
    return targets, np.stack([1 - p1, p1], 1)


@pytest.mark.parametrize("seed", range(4))
def test_binary_classification_matches_sklearn(seed):
    targets, probs = random_binary_case(seed)
    pred = probs.argmax(1)
    result = classification_scores(targets, probs, ("normal", "pneumonia"))
    values = result.values
    assert values["acc"] == pytest.approx(skm.accuracy_score(targets, pred))
    f1 = skm.f1_score(targets, pred, average=None, labels=[0, 1])
    assert [values["f1_normal"], values["f1_pneumonia"]] == pytest.approx(list(f1))
    assert values["auc"] == pytest.approx(skm.roc_auc_score(targets, probs[:, 1]))
    assert values["sensitivity"] == pytest.approx(skm.recall_score(targets, pred, pos_label=1))
    assert values["specificity"] == pytest.approx(skm.recall_score(targets, pred, pos_label=0))
    assert result.confusion == skm.confusion_matrix(targets, pred, labels=[0, 1]).tolist()
    fpr, tpr, _ = binary_roc(targets, probs[:, 1])
    ref_fpr, ref_tpr, _ = skm.roc_curve(targets, probs[:, 1], drop_intermediate=False)
    assert fpr == pytest.approx(ref_fpr) and tpr == pytest.approx(ref_tpr)


def test_multiclass_auc_is_macro_one_vs_rest():
    rng = np.random.default_rng(3)
    targets = np.arange(45) % 3
    logits = rng.normal(size=(45, 3)) + np.eye(3)[targets]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    result = classification_scores(targets, probs, ("a", "b", "c"))
    assert result.values["auc"] == pytest.approx(skm.roc_auc_score(targets, probs, multi_class="ovr"))
    assert [result.values[f"f1_{c}"] for c in "abc"] == pytest.approx(
        list(skm.f1_score(targets, probs.argmax(1), average=None)))


def test_one_class_test_set_reports_auc_as_none_with_a_note():
    targets = np.zeros(6, int)
    probs = np.tile([0.7, 0.3], (6, 1))
    probs[0] = [0.2, 0.8]
    result = ClassificationTask("cls").evaluate(probs, targets, ("normal", "pneumonia"))
    assert result.aggregate["auc"] == {"mean": None, "std": None}
    assert result.aggregate["sensitivity"]["mean"] is None
    assert result.aggregate["specificity"]["mean"] == pytest.approx(5 / 6)
    assert result.aggregate["acc"]["mean"] == pytest.approx(5 / 6)
    assert any("one class" in note for note in result.notes)
    assert binary_auc(np.ones(3, bool), np.array([0.1, 0.5, 0.9])) is None
    assert result.per_image[0] == {"target": "normal", "predicted": "pneumonia", "correct": False,
                                   "p_normal": 0.2, "p_pneumonia": 0.8}


def test_auc_by_hand_with_ties():
    # positives 0.8, 0.5; negatives 0.5, 0.2: pairs (0.8>0.5, 0.8>0.2, 0.5=0.5 -> 1/2, 0.5>0.2) = 3.5 / 4
    assert binary_auc(np.array([1, 1, 0, 0]), np.array([0.8, 0.5, 0.5, 0.2])) == pytest.approx(0.875)


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="differ in shape"):
        mask_metrics(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="targets must lie"):
        classification_scores(np.array([0, 2]), np.array([[0.5, 0.5], [0.1, 0.9]]), ("a", "b"))


def test_summarize_names_each_metric():
    records = [{"dice": 1.0, "hd_avg": 0.0}, {"dice": 0.5, "hd_avg": 2.0}]
    assert summarize(records, ["dice", "hd_avg"]) == {"dice": {"mean": 0.75, "std": 0.25},
                                                      "hd_avg": {"mean": 1.0, "std": 1.0}}
