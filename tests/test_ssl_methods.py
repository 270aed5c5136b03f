"""Mean Teacher, FreeMatch, pixel-wise FixMatch and cross pseudo supervision against hand-computed losses."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_trainer
from mtssl.api import StrategyInputs, ViewRequest
from mtssl.api import sigmoid_rampup
from mtssl_plugins.strategies.cps import cross_pseudo_loss

LN3 = math.log(3.0)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_sigmoid_rampup_by_hand():
    assert sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(5, 10) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(10, 10) == sigmoid_rampup(99, 10) == sigmoid_rampup(3, 0) == 1.0


@pytest.mark.parametrize("task_name, student, teacher", [
    ("cls", [[0.0, 0.0]], [[LN3, 0.0]]),              # softmax: (.5,.5) vs (.75,.25)
    ("seg", [[[[0.0, 0.0]]]], [[[[LN3, -LN3]]]]),      # sigmoid: .5,.5 vs .75,.25
])
def test_mean_teacher_loss_by_hand(host, task_name, student, teacher):
    task = host.create("task", task_name)
    strategy = host.create("strategy", "meanteacher", weight=2.0, rampup=10)
    assert strategy.teacher_decay() == 0.99
    s = torch.tensor(student, requires_grad=True)
    out = strategy.loss(StrategyInputs(task, {"student": s, "teacher": torch.tensor(teacher)}, None, None, step=5))
    # MSE: two elements off by 0.25 each -> 0.0625; weight 2 * exp(-5 * 0.5^2)
    assert out.logs["mse"] == pytest.approx(0.0625, rel=1e-6)
    assert out.loss.item() == pytest.approx(2.0 * math.exp(-1.25) * 0.0625, rel=1e-6)
    out.loss.backward()
    assert s.grad is not None


def test_mean_teacher_plans_aligned_or_independent_teacher_views(host):
    aligned = host.create("strategy", "meanteacher").plan()
    assert aligned[1] == ViewRequest("teacher", "unlabeled", "none", grad=False, model="teacher", of="student")
    independent = host.create("strategy", "meanteacher", views="independent").plan()
    assert independent[1] == ViewRequest("teacher", "unlabeled", "weak", grad=False, model="teacher")
    with pytest.raises(ValueError, match="option views: input should be 'aligned' or 'independent'"):
        host.create("strategy", "meanteacher", views="mixed")


def test_dense_fixmatch_loss_by_hand(host):
    task = host.create("task", "seg")
    strategy = host.create("strategy", "fixmatch-seg", threshold=0.9, weight=2.0)
    assert strategy.plan()[1] == ViewRequest("strong", "unlabeled", "strong_photometric", of="weak")
    weak = torch.tensor([[[[3.0, -3.0], [0.1, -0.1]]]])    # confidences .953, .953, .525, .525
    strong = torch.tensor([[[[0.0, 0.0], [5.0, 5.0]]]], requires_grad=True)
    out = strategy.loss(StrategyInputs(task, {"weak": weak, "strong": strong}, None, None, step=0))
    # kept pixels: label 1 at logit 0 and label 0 at logit 0 -> ln 2 each; averaged over 4 pixels
    assert out.loss.item() == pytest.approx(2.0 * (2 * math.log(2)) / 4, rel=1e-6)
    assert out.logs["mask_rate"] == 0.5
    out.loss.backward()
    assert strong.grad[0, 0, 1].abs().sum() == 0  # unconfident pixels train nothing


def test_freematch_thresholds_adapt_by_hand_and_state_round_trips(host):
    task = host.create("task", "cls")
    strategy = host.create("strategy", "freematch", momentum=0.5, fairness=0.0, weight=1.0)
    weak = torch.tensor([[LN3, 0.0], [0.0, math.log(9.0)], [0.2, 0.0]])   # p = (.75,.25), (.1,.9), (.5498,.4502)
    strong = torch.zeros(3, 2, requires_grad=True)
    out = strategy.loss(StrategyInputs(task, {"weak": weak, "strong": strong}, None, None, step=0))
    assert strategy.state_dict() == {}  # proposed, not kept: the step has not been applied yet
    strategy.commit()
    p3 = 1 / (1 + math.exp(-0.2))
    tau = 0.5 * 0.5 + 0.5 * (0.75 + 0.9 + p3) / 3
    p_model = [0.5 * 0.5 + 0.5 * (0.75 + 0.1 + p3) / 3, 0.5 * 0.5 + 0.5 * (0.25 + 0.9 + 1 - p3) / 3]
    assert strategy.time_p.item() == pytest.approx(tau, rel=1e-6)
    assert strategy.p_model.tolist() == pytest.approx(p_model, rel=1e-6)
    thresholds = [tau * p_model[0] / p_model[1], tau]                     # (.5768, .6166)
    assert strategy.thresholds().tolist() == pytest.approx(thresholds, rel=1e-6)
    # image 3 (class 0 at .5498 < .5768) is dropped; the other two train with CE = ln 2 at zero logits
    assert out.logs["mask_rate"] == pytest.approx(2 / 3)
    assert out.loss.item() == pytest.approx(2 * math.log(2) / 3, rel=1e-6)
    assert strategy.label_hist.tolist() == pytest.approx([0.5 * 0.5 + 0.5 * 2 / 3, 0.5 * 0.5 + 0.5 / 3])

    fresh = host.create("strategy", "freematch", momentum=0.5)
    assert fresh.state_dict() == {}
    fresh.load_state_dict(strategy.state_dict())
    assert all(torch.equal(fresh.state_dict()[k], strategy.state_dict()[k]) for k in ("time_p", "p_model", "label_hist"))


def test_freematch_fairness_is_zero_without_confident_images_and_finite_otherwise(host):
    from mtssl.api import freematch_fairness
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], requires_grad=True)
    none = freematch_fairness(torch.tensor([False, False]), logits, torch.tensor([.5, .5]), torch.tensor([.5, .5]))
    assert none.item() == 0.0
    value = freematch_fairness(torch.tensor([True, True]), logits, torch.tensor([.5, .5]), torch.tensor([.5, .5]))
    p = torch.softmax(logits.detach(), 1).mean(0)  # histogram (1/2, 1/2) scales both classes alike
    assert value.item() == pytest.approx((0.5 * torch.log(p)).sum().item(), rel=1e-5)


def test_cross_pseudo_loss_by_hand():
    a = torch.tensor([[[[2.0, -1.0]]]])
    b = torch.tensor([[[[-3.0, 0.5]]]])
    # labels from b: (0, 1); from a: (1, 0)
    expected = (softplus(2.0) + softplus(1.0)) / 2 + (softplus(3.0) + softplus(0.5)) / 2
    assert cross_pseudo_loss(a, b).item() == pytest.approx(expected, rel=1e-6)


def test_cps_trains_a_peer_that_starts_different(host, tmp_path):
    trainer = tiny_trainer(host, tmp_path, ["seg:cps"])
    assert trainer.peer is not None
    first = [p.clone() for p in trainer.peer.parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(first, trainer.model.parameters()))
    n_model = sum(1 for _ in trainer.model.parameters())
    assert len(trainer.optimizer.param_groups[0]["params"]) == n_model + len(first)
    logs = trainer.train_step()
    assert logs["seg/cps/peer_sup"] > 0 and logs["seg/cps/cross"] > 0
    assert not all(torch.equal(a, b) for a, b in zip(first, trainer.peer.parameters()))  # the peer learned


def test_strong_photometric_view_lines_up_with_the_weak_pseudo_label(host, tmp_path):
    """A pixel-wise pseudo-label from the weak view marks the same pixels in the derived strong view."""
    trainer = tiny_trainer(host, tmp_path, ["seg:fixmatch-seg"], strong_ops=3)
    torch.manual_seed(0)
    n, size = 8, 32
    square = torch.zeros(n, 1, size, size)
    for i in range(n):  # a bright square at a different place in each image, on a mid-grey ground
        y, x = 4 + 2 * i, 20 - 2 * i
        square[i, :, y:y + 10, x:x + 10] = 1.0
    images = (255 * (0.3 + 0.4 * square)).round().to(torch.uint8)
    trainer.unlabeled["seg"].next = lambda: (images, None)  # the trainer's own view building, on known images
    views = {v.key: v.images for v in trainer.gather_views()}
    weak, strong = views["fixmatch-dense/weak"], views["fixmatch-dense/strong"]
    label = weak > 0.5                                    # a perfect pseudo-labeller on the weak view
    moved, _ = trainer.augmenter(weak, "strong")          # the full strong pool moves pixels
    inner = -F.max_pool2d(-label.float(), 3, 1, 1) > 0.5  # pseudo-label interior (sharpness touches edges)
    inside = -F.max_pool2d(-(weak > 0.05).float(), 3, 1, 1) > 0.5  # away from the crop's zero padding
    outer = (F.max_pool2d(label.float(), 3, 1, 1) < 0.5) & inside
    aligned = misaligned = 0
    for i in range(n):
        for view, counter in ((strong, "aligned"), (moved, "moved")):
            fg, bg = view[i][inner[i]], view[i][outer[i]]
            constant = bool(fg.std() < 1e-3 and bg.std() < 1e-3)  # an intensity op may merge the two levels
            separated = constant and bool((fg.mean() - bg.mean()).abs() > 0.05)
            if counter == "aligned":
                aligned += constant
            else:
                misaligned += not separated
    assert aligned == n  # every image: the label's pixels are one value, the rest another
    assert misaligned > 0  # the geometric pool would break that


def test_a_view_derived_from_an_unplanned_view_is_a_clear_error(host, tmp_path):
    trainer = tiny_trainer(host, tmp_path, ["seg:fixmatch-seg"])
    strategy = trainer.parts.strategies["seg"][0]
    strategy.plan = lambda: [ViewRequest("strong", aug="strong_photometric", of="weak")]
    with pytest.raises(ValueError, match="view 'strong' is made of view 'weak', which it does not plan before it"):
        trainer.gather_views()


def test_new_strategies_train_from_the_cli_and_are_listed(tmp_path):
    import json

    from conftest import invoke, read_metrics, train_run
    run = train_run("cls:freematch", "seg:meanteacher+fixmatch-seg", out=tmp_path, steps=1)
    line = read_metrics(run)[0]
    assert {"cls/freematch/tau", "seg/meanteacher/mse", "seg/fixmatch-dense/mask_rate"} <= set(line)  # canonical name
    listed = json.loads(invoke(["plugins", "--json"]).stdout)["components"]
    names = {(c["kind"], c["name"]) for c in listed}
    assert {("strategy", "meanteacher"), ("strategy", "freematch"), ("strategy", "fixmatch-dense"),
            ("strategy", "cps"), ("weighting", "equal"), ("weighting", "uncertainty"),
            ("weighting", "pcgrad")} <= names
