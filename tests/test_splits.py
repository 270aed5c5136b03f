"""Label-budget splits: seeded, stratified, disjoint; and unlabeled data reaches training without labels."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mtssl.run.config import RunConfig, TaskData
from mtssl.data.splits import parse_budget, split_indices
from mtssl.run.rundir import RunDir
from mtssl.training.trainer import Trainer

LABELS = [0] * 30 + [1] * 90


def test_same_seed_same_split_other_seed_other_split():
    a = split_indices(120, 20, seed=3, labels=LABELS)
    b = split_indices(120, 20, seed=3, labels=LABELS)
    c = split_indices(120, 20, seed=4, labels=LABELS)
    assert a.as_dict() == b.as_dict()
    assert a.labeled.tolist() != c.labeled.tolist()


def test_parts_are_disjoint_and_cover_everything():
    split = split_indices(120, 20, seed=0, labels=LABELS)
    parts = [set(split.labeled), set(split.unlabeled), set(split.val)]
    assert sum(map(len, parts)) == 120 and set.union(*parts) == set(range(120))
    assert len(split.labeled) == 20 and len(split.val) == 12


def test_budget_is_stratified():
    labels = np.asarray(LABELS)
    split = split_indices(120, 20, seed=1, labels=LABELS)
    assert np.bincount(labels[split.labeled]).tolist() == [5, 15]
    assert np.bincount(labels[split.val]).tolist() == [3, 9]
    tiny = split_indices(120, 2, seed=1, labels=[0] * 2 + [1] * 118, val_fraction=0.0)
    assert sorted(np.asarray([0] * 2 + [1] * 118)[tiny.labeled]) == [0, 1]  # every class keeps one label


def test_budget_all_labels_everything():
    split = split_indices(50, parse_budget("all"), seed=0)
    assert len(split.unlabeled) == 0 and len(split.labeled) == 45


def test_budget_larger_than_data_is_a_clear_error():
    with pytest.raises(ValueError, match="label budget 200 is larger than the 108 training images"):
        split_indices(120, 200, seed=0, labels=LABELS)
    with pytest.raises(ValueError, match="positive whole number or 'all'"):
        parse_budget(0)


def test_unlabeled_stream_carries_no_labels(host, tmp_path):
    config = RunConfig(tasks=["cls:fixmatch", "seg:kl"], size=32, batch_size=2, steps=1, out=str(tmp_path),
                       data={"cls": TaskData("synthetic:n=16", labels=4), "seg": TaskData("synthetic:n=12", labels=3)})
    trainer = Trainer(config, host, RunDir.create(config))
    for name, data in trainer.data.items():
        stream = trainer.unlabeled[name]
        assert stream.targets is None
        assert len(stream) == len(data.split.unlabeled) and len(trainer.labeled[name]) == len(data.split.labeled)
        expected = torch.from_numpy(data.train.images[data.split.unlabeled])
        assert torch.equal(stream.images.cpu(), expected)
        assert stream.next()[1] is None
    planned = {(name, f"{s.name}/{r.key}"): r.stream for name, ss in trainer.parts.strategies.items()
               for s in ss for r in s.plan()}
    for view in trainer.gather_views():
        if planned.get((view.task, view.key)) == "unlabeled":
            assert view.target is None
