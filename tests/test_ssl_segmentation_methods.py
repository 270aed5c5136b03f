"""UniMatch, CCT, UA-MT, CutMix-Seg and entropy minimisation against hand-computed 2x2 cases, for sigmoid and
softmax heads (and the softmax cases of KL consistency, pixel-wise FixMatch and CPS); the head-on-features hook; each trained from the CLI; those with state (the EMA teacher, CCT's
auxiliary decoders) resumed bit-exactly."""
from __future__ import annotations

import math
import signal

import pytest
import torch

from conftest import invoke, read_metrics, tiny_trainer, train_run
from mtssl.api import HeadInputs, SSLStrategy, StrategyInputs, StrategyLoss, ViewRequest, dense_pseudo_label_loss
from mtssl.run.rundir import RunDir
from mtssl.training.stopping import TrainingStopped
from mtssl.training.trainer import Trainer
from mtssl_plugins.strategies import cct, cutmix_seg
from mtssl_plugins.strategies.dense import box_masks, log_distribution, pseudo_label_loss

LN2, LN3 = math.log(2.0), math.log(3.0)
SOFTMAX_3 = dict(channels=2, activation="softmax")  # two structures plus background: three categories a pixel


def h(p: float) -> float:
    """Binary entropy in nats."""
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def pixels(*values) -> torch.Tensor:
    """A one-image 2x2 map per channel: ``pixels([a, b, c, d], ...)`` -> ``[1, C, 2, 2]``."""
    return torch.tensor([[list(v[:2]), list(v[2:])] for v in values]).unsqueeze(0)


# three-category softmax pixels (background, structure 1, structure 2)
UNIFORM = (0.0, 0.0, 0.0)                 # (1/3, 1/3, 1/3): entropy ln 3
HALF = (0.0, LN2, 0.0)                    # (1/4, 1/2, 1/4): entropy 1.5 ln 2
BACK = (LN2, 0.0, 0.0)                    # (1/2, 1/4, 1/4): background most likely


def softmax_map(*pixel_logits) -> torch.Tensor:
    """Four pixels' category logits (row-major) -> ``[1, 3, 2, 2]``."""
    return pixels(*zip(*pixel_logits))


# -- entropy minimisation -------------------------------------------------------------------------------
def test_entropy_minimisation_by_hand_per_channel_for_sigmoid_and_across_channels_for_softmax(host):
    strategy = host.create("strategy", "entropy-min", weight=2.0, rampup=0)
    assert strategy.plan() == [ViewRequest("unlabeled", "unlabeled", "weak")]
    sigmoid = host.create("task", "seg")
    logits = pixels([0.0, LN3, -LN3, 0.0])           # p = .5, .75, .25, .5
    out = strategy.loss(StrategyInputs(sigmoid, {"unlabeled": logits}, None, None, step=0))
    assert out.logs["entropy"].item() == pytest.approx((2 * LN2 + 2 * h(0.75)) / 4, rel=1e-6)
    assert out.loss.item() == pytest.approx(2 * (2 * LN2 + 2 * h(0.75)) / 4, rel=1e-6)
    assert out.logs["entropy"].dim() == 0
    two = host.create("task", "seg", channels=2)                     # each sigmoid channel its own Bernoulli
    out = strategy.loss(StrategyInputs(two, {"unlabeled": pixels([0.0] * 4, [LN3] * 4)}, None, None, step=0))
    assert out.logs["entropy"].item() == pytest.approx((LN2 + h(0.75)) / 2, rel=1e-6)

    softmax = host.create("task", "seg", **SOFTMAX_3)
    logits = softmax_map(UNIFORM, HALF, HALF, UNIFORM)
    out = strategy.loss(StrategyInputs(softmax, {"unlabeled": logits}, None, None, step=0))
    assert out.logs["entropy"].item() == pytest.approx((2 * LN3 + 2 * 1.5 * LN2) / 4, rel=1e-6)


def test_entropy_minimisation_ramps_its_weight(host):
    strategy = host.create("strategy", "entropy-min", weight=1.0, rampup=10)
    out = strategy.loss(StrategyInputs(host.create("task", "seg"), {"unlabeled": pixels([0.0] * 4)}, None, None,
                                       step=5))
    assert out.loss.item() == pytest.approx(math.exp(-1.25) * LN2, rel=1e-6)


# -- UniMatch -------------------------------------------------------------------------------------------
def unimatch_inputs(task, weak, strong1, strong2, perturbed):
    calls = []

    def head(view, features):
        calls.append((view, features))
        return perturbed

    features = {"weak": [torch.ones(1, 4, 2, 2), torch.ones(1, 8, 1, 1)]}
    views = {"weak": weak, "strong1": strong1, "strong2": strong2}
    return StrategyInputs(task, views, None, None, step=0, view_features=features, head=head), calls


def test_unimatch_by_hand_for_sigmoid(host):
    strategy = host.create("strategy", "unimatch", threshold=0.9, weight=2.0, dropout=0.0)
    assert strategy.plan()[0] == ViewRequest("weak", "unlabeled", "weak", features=True)
    assert [r.of for r in strategy.plan()[1:]] == ["weak", "weak"]
    weak = pixels([3.0, -3.0, 0.1, -0.1])             # kept: label 1, label 0; the others below .9
    strong1 = pixels([0.0] * 4)                        # ln 2 at each kept pixel
    strong2 = pixels([LN3, -LN3, 9.0, 9.0])            # -ln .75 at each kept pixel
    perturbed = pixels([-LN3, LN3, 9.0, 9.0])          # -ln .25 at each kept pixel
    inputs, calls = unimatch_inputs(host.create("task", "seg"), weak, strong1, strong2, perturbed)
    out = strategy.loss(inputs)
    s1, s2, fp = 2 * LN2 / 4, 2 * math.log(4 / 3) / 4, 2 * math.log(4) / 4
    assert (out.logs["strong1"].item(), out.logs["strong2"].item(), out.logs["fp"].item()) == pytest.approx(
        (s1, s2, fp), rel=1e-6)
    assert out.loss.item() == pytest.approx(2.0 * (0.25 * s1 + 0.25 * s2 + 0.5 * fp), rel=1e-6)
    assert out.logs["mask_rate"].item() == 0.5
    assert calls and calls[0][0] == "weak"


def test_per_pixel_pseudo_labels_of_a_sigmoid_head_are_the_published_dense_fixmatch_loss(host):
    torch.manual_seed(0)
    weak, strong = torch.randn(2, 3, 4, 4) * 3, torch.randn(2, 3, 4, 4)
    task = host.create("task", "seg", channels=3)
    loss, mask = pseudo_label_loss(log_distribution(task, weak), log_distribution(task, strong), 0.9)
    expected, expected_mask = dense_pseudo_label_loss(weak, strong, 0.9)
    assert torch.equal(mask, expected_mask) and 0 < mask.float().mean() < 1
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_unimatch_by_hand_for_softmax(host):
    strategy = host.create("strategy", "unimatch", threshold=0.95, weight=1.0, dropout=0.0)
    confident = (0.0, 5.0, 0.0)                        # p(structure 1) = e^5 / (e^5 + 2) = .987
    weak = softmax_map(confident, (0.0, 0.0, 5.0), UNIFORM, HALF)
    zeros = softmax_map(UNIFORM, UNIFORM, UNIFORM, UNIFORM)   # ln 3 at each kept pixel
    inputs, _ = unimatch_inputs(host.create("task", "seg", **SOFTMAX_3), weak, zeros, zeros, zeros)
    out = strategy.loss(inputs)
    assert out.loss.item() == pytest.approx(2 * LN3 / 4, rel=1e-6)
    assert out.logs["mask_rate"].item() == 0.5        # per pixel, across channels


def test_unimatch_drops_whole_feature_channels_before_the_head(host):
    torch.manual_seed(0)
    strategy = host.create("strategy", "unimatch", dropout=0.5)
    inputs, calls = unimatch_inputs(host.create("task", "seg"), *[pixels([0.0] * 4)] * 4)
    strategy.loss(inputs)
    (view, dropped), = calls
    assert view == "weak" and len(dropped) == 2
    channels = [channel for level in dropped for channel in level[0].flatten(1)]    # 12 channels, every level
    assert {v for channel in channels for v in channel.tolist()} == {0.0, 2.0}  # dropped, or kept and x 1 / (1 - p)
    assert all(len(set(channel.tolist())) == 1 for channel in channels)           # whole channels at a time


# -- CCT ------------------------------------------------------------------------------------------------
def test_cct_feature_drop_hides_the_most_active_positions():
    features = torch.tensor([[1.0, 2.0], [3.8, 4.0]]).expand(1, 3, 2, 2)   # channel mean = itself; peak 4
    dropped = cct.feature_drop(features)        # threshold 4 * U(.7, .9) lies in [2.8, 3.6]
    assert dropped[0, 0].tolist() == [[1.0, 2.0], [0.0, 0.0]]


def test_cct_feature_noise_scales_each_position_by_one_draw_for_the_batch():
    torch.manual_seed(0)
    features = torch.rand(2, 3, 4, 4) + 0.5
    noisy = cct.feature_noise(features, 0.3)
    ratio = noisy / features
    assert ratio.min() >= 0.7 - 1e-6 and ratio.max() <= 1.3 + 1e-6 and ratio.std() > 0
    assert torch.allclose(ratio[0], ratio[1])
    assert torch.equal(cct.feature_noise(features, 0.0), features)


@pytest.mark.parametrize("options, clean, perturbed, expected", [
    ({}, pixels([0.0] * 4), [pixels([LN3] * 4), pixels([0.0] * 4), pixels([-LN3] * 4)], 2 * 0.0625 / 3),
    (SOFTMAX_3, softmax_map(*[UNIFORM] * 4), [softmax_map(*[HALF] * 4)] * 3, 1 / 72),
])
def test_cct_by_hand_with_one_auxiliary_decoder_per_perturbation(host, options, clean, perturbed, expected):
    strategy = host.create("strategy", "cct", weight=3.0, rampup=0)
    assert strategy.plan() == [ViewRequest("unlabeled", "unlabeled", "weak", features=True)]
    task = host.create("task", "seg", **options)
    decoders = strategy.modules(task, HeadInputs((4, 8), (1, 2)))
    assert list(decoders) == ["noise", "drop", "dropout"]
    assert all(type(d) is type(task.build_head(HeadInputs((4, 8), (1, 2)))) for d in decoders.values())
    outputs = iter(perturbed)
    seen = []

    def head(view, features, module=None):
        seen.append((view, module))
        return next(outputs)

    inputs = StrategyInputs(task, {"unlabeled": clean}, None, None, step=0,
                            view_features={"unlabeled": [torch.rand(1, 4, 2, 2) + 0.5]}, head=head)
    out = strategy.loss(inputs)
    # sigmoid: (.75 - .5)^2, 0, (.25 - .5)^2 over the three decoders; softmax: per pixel the mean over
    # three categories of (1/12)^2, (1/6)^2, (1/12)^2
    assert out.loss.item() == pytest.approx(3.0 * expected, rel=1e-6)
    assert seen == [("unlabeled", decoders[name]) for name in ("noise", "drop", "dropout")]
    assert set(out.logs) == {"noise", "drop", "dropout", "weight"}


def test_cct_trains_its_auxiliary_decoders_and_not_the_main_head_from_unlabeled_images(host, tmp_path):
    trainer = tiny_trainer(host, tmp_path, ["seg:cct:rampup=0"], steps=1)
    decoders = trainer.parts.strategies["seg"][0].decoders
    assert trainer.strategy_modules == {"seg/cct": decoders}
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in optimized for p in decoders.parameters())
    result = trainer.compute_loss(trainer.gather_views())
    trainer.optimizer.zero_grad()
    result.terms["seg/cct"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for d in decoders.values()
               for p in [next(d.parameters())])
    assert all(p.grad is None for p in trainer.model.heads["seg"].parameters())  # the clean target is detached
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.backbone.parameters())


def test_cct_runs_in_one_process_only(host):
    from mtssl.training.distributed import check_processes

    strategies = [host.create("strategy", name) for name in ("cct", "unimatch", "uamt")]
    equal = host.create("weighting", "equal")
    check_processes(strategies, equal, 1)
    with pytest.raises(ValueError, match=r"^strategy 'cct' \(modules of its own\) can run in one process only, "
                                         r"not 2; run without torchrun or choose another$"):
        check_processes(strategies, equal, 2)


# -- UA-MT ----------------------------------------------------------------------------------------------
def test_uamt_masks_uncertain_pixels_by_hand_for_sigmoid(host):
    strategy = host.create("strategy", "uamt", weight=2.0, rampup=0, passes=2, threshold_rampup=10)
    assert strategy.teacher_decay() == 0.99
    plan = strategy.plan()
    assert [(r.key, r.model, r.of, r.aug, r.grad) for r in plan[1:]] == [
        (f"teacher{t}", "teacher", "student", "strong_photometric", False) for t in range(2)]
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    teacher0 = pixels([logit(0.9), 0.0, logit(0.1), logit(0.95)])
    teacher1 = pixels([logit(0.7), 0.0, logit(0.3), logit(0.95)])   # means .8, .5, .2, .95
    student = pixels([0.0] * 4).requires_grad_(True)
    views = {"student": student, "teacher0": teacher0, "teacher1": teacher1}
    out = strategy.loss(StrategyInputs(host.create("task", "seg"), views, None, None, step=0))
    threshold = (0.75 + 0.25 * math.exp(-5)) * LN2          # .522: H(.8) = H(.2) = .500 and H(.95) pass, ln 2 not
    assert out.logs["threshold"] == pytest.approx(threshold)
    assert h(0.8) < threshold < LN2
    assert out.logs["mask_rate"].item() == 0.75
    assert out.loss.item() == pytest.approx(2.0 * (0.09 + 0.09 + 0.45 ** 2) / 3, rel=1e-5)
    out.loss.backward()
    assert student.grad[0, 0, 0, 1] == 0  # the uncertain pixel trains nothing


def test_uamt_ramps_the_threshold_toward_ln_k_across_softmax_channels(host):
    strategy = host.create("strategy", "uamt", weight=1.0, rampup=0, passes=2, threshold_rampup=10,
                           perturb="none")
    assert strategy.plan()[1].aug == "none"
    task = host.create("task", "seg", **SOFTMAX_3)
    teacher = softmax_map(HALF, HALF, UNIFORM, UNIFORM)           # entropies 1.5 ln 2 = 1.040, ln 3 = 1.099
    views = {"student": softmax_map(*[UNIFORM] * 4), "teacher0": teacher, "teacher1": teacher}
    early = strategy.loss(StrategyInputs(task, views, None, None, step=0))     # threshold .75 ln 3 = .826
    assert early.logs["mask_rate"].item() == 0 and early.loss.item() == 0
    late = strategy.loss(StrategyInputs(task, views, None, None, step=10))     # threshold ln 3
    assert late.logs["threshold"] == pytest.approx(LN3)
    assert late.logs["mask_rate"].item() == 0.5
    assert late.loss.item() == pytest.approx(1 / 72, rel=1e-5)


# -- CutMix-Seg -----------------------------------------------------------------------------------------
def test_box_masks_are_one_box_of_about_the_asked_area():
    torch.manual_seed(0)
    masks = box_masks(64, 16, 16, 0.5, torch.device("cpu"))
    assert masks.shape == (64, 16, 16) and masks.dtype == torch.bool
    areas = masks.flatten(1).float().mean(1)
    assert ((areas - 0.5).abs() <= 0.07).all()                  # rounding of each side at 16 px
    rows, cols = masks.any(2), masks.any(1)
    assert torch.equal(masks, rows.unsqueeze(2) & cols.unsqueeze(1))  # a rectangle
    assert len({tuple(m.nonzero()[0].tolist()) for m in masks}) > 1    # placed at random
    assert box_masks(2, 4, 4, 1.0, torch.device("cpu")).all()


@pytest.mark.parametrize("options", [{}, SOFTMAX_3])
def test_cutmix_seg_mixes_images_and_teacher_predictions_with_one_mask_by_hand(host, monkeypatch, options):
    strategy = host.create("strategy", "cutmix-seg", weight=1.0)
    assert strategy.teacher_decay() == 0.99
    assert strategy.plan() == [ViewRequest("teacher", "unlabeled", "weak", grad=False, model="teacher")]
    mask = torch.tensor([[[True, False], [True, False]], [[False, False], [False, False]]])  # left column of image 0
    monkeypatch.setattr(cutmix_seg, "box_masks", lambda *args: mask)
    images = torch.arange(8.0).view(2, 1, 2, 2)
    task = host.create("task", "seg", **options)
    if options:
        teacher = torch.cat([softmax_map(*[UNIFORM] * 4), softmax_map(*[HALF] * 4)])
        student_logits = torch.cat([softmax_map(*[UNIFORM] * 4)] * 2)
        # image 0: two pasted pixels of image 1 off by 1/72 each; image 1 (unmixed): all four
        expected = (2 + 4) / 72 / 8
    else:
        teacher = torch.cat([pixels([0.0] * 4), pixels([LN3] * 4)])              # p .5 and .75
        student_logits = torch.zeros(2, 1, 2, 2)
        expected = 6 * 0.0625 / 8
    mixed_inputs = []

    def forward(x):
        mixed_inputs.append(x)
        return student_logits

    inputs = StrategyInputs(task, {"teacher": teacher}, None, None, step=0, view_images={"teacher": images},
                            forward=forward)
    out = strategy.loss(inputs)
    (mixed,) = mixed_inputs
    assert mixed[0, 0].tolist() == [[4.0, 1.0], [6.0, 3.0]]   # image 0 with image 1's left column pasted
    assert torch.equal(mixed[1], images[1])
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)


# -- the head on given features (the core's hook) --------------------------------------------------------
class HeadProbe(SSLStrategy):
    """Plans one weak view with features and decodes its own features again through ``inputs.head``."""

    def plan(self):
        return [ViewRequest("weak", "unlabeled", "weak", features=True), ViewRequest("plain", "unlabeled")]

    def loss(self, inputs):
        self.output, self.again = inputs.views["weak"], inputs.head("weak", inputs.view_features["weak"])
        with pytest.raises(ValueError) as self.unplanned:
            inputs.head("plain", inputs.view_features["weak"])
        return StrategyLoss(self.again.float().mean())


def test_the_head_on_a_views_own_features_reproduces_its_output_bridge_extras_included(host, tmp_path):
    trainer = tiny_trainer(host, tmp_path, ["cls", "seg:entropy-min"], ["saliency"])  # saliency: cls -> seg decoder
    probe = HeadProbe("probe")
    trainer.parts.strategies["seg"].append(probe)
    trainer.model.eval()  # dropout off, so the head's second run matches its first
    result = trainer.compute_loss(trainer.gather_views())
    assert probe.again.shape == probe.output.shape
    assert torch.allclose(probe.again, probe.output, atol=1e-5)
    assert str(probe.unplanned.value) == ("head('plain', ...): strategy view 'plain' of task 'seg' was not planned "
                                          "with features=True")
    result.terms["seg/probe"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.backbone.parameters())


# -- the older mask strategies on a softmax head ---------------------------------------------------------
@pytest.mark.parametrize("reduction, per_image", [("mean", False), ("sum", True)])
def test_kl_consistency_compares_categorical_pixels_of_a_softmax_head_by_hand(host, reduction, per_image):
    strategy = host.create("strategy", "kl", weight=2.0, reduction=reduction)
    task = host.create("task", "seg", **SOFTMAX_3)
    labeled = softmax_map(UNIFORM, HALF, HALF, UNIFORM)       # one labeled image: the reference itself
    unlabeled = softmax_map(HALF, HALF, UNIFORM, UNIFORM)
    # KL(uniform || half) = 5/3 ln 2 - ln 3; KL(half || uniform) = ln 3 - 1.5 ln 2; equal pixels 0
    total = (5 / 3 * LN2 - LN3) + (LN3 - 1.5 * LN2)
    expected = total if per_image else total / 4
    out = strategy.loss(StrategyInputs(task, {"plain": unlabeled}, labeled, None, step=0))
    assert out.logs["kl"].item() == pytest.approx(expected, rel=1e-5)
    assert out.loss.item() == pytest.approx(2 * expected, rel=1e-5)


def test_pixelwise_fixmatch_keeps_confident_softmax_pixels_and_trains_their_most_likely_channel(host):
    strategy = host.create("strategy", "fixmatch-dense", threshold=0.5)
    task = host.create("task", "seg", **SOFTMAX_3)
    weak = softmax_map(UNIFORM, HALF, HALF, UNIFORM)           # confidences 1/3, 1/2, 1/2, 1/3
    strong = softmax_map(HALF, UNIFORM, HALF, UNIFORM)
    out = strategy.loss(StrategyInputs(task, {"weak": weak, "strong": strong}, None, None, step=0))
    assert out.loss.item() == pytest.approx((LN3 + LN2) / 4, rel=1e-6)  # channel 1 at pixels 1 and 2
    assert out.logs["mask_rate"].item() == pytest.approx(0.5)


def test_cross_pseudo_supervision_on_a_softmax_head_by_hand(host):
    from mtssl_plugins.strategies.cps import cross_pseudo_loss

    task = host.create("task", "seg", **SOFTMAX_3)
    a = softmax_map(BACK, HALF, HALF, BACK)                    # labels 0, 1, 1, 0
    b = softmax_map(HALF, HALF, BACK, BACK)                    # labels 1, 1, 0, 0
    # CE(a, labels of b): 2 ln 2 + ln 2 + 2 ln 2 + ln 2; CE(b, labels of a) the same; each averaged over 4 pixels
    assert cross_pseudo_loss(a, b, task).item() == pytest.approx(3 * LN2, rel=1e-6)
    sigmoid = cross_pseudo_loss(a, b).item()                   # without the task: per-channel BCE, another value
    assert sigmoid != pytest.approx(3 * LN2, rel=1e-3)


def test_kl_fixmatch_dense_and_cps_train_a_softmax_head_from_the_cli(tmp_path):
    data = ("--seg-data", "synthetic:n=16,structures=lungs+heart")
    run = train_run("seg:channels=2,activation=softmax:kl+fixmatch-dense", out=tmp_path / "a", steps=1, extra=data)
    line = read_metrics(run)[0]
    assert math.isfinite(line["seg/kl/kl"]) and line["seg/kl/kl"] > 0
    assert math.isfinite(line["seg/fixmatch-dense/mask_rate"])
    run = train_run("seg:channels=2,activation=softmax:cps", out=tmp_path / "b", steps=1, extra=data)
    assert math.isfinite(read_metrics(run)[0]["seg/cps/cross"])


# -- from the command line ------------------------------------------------------------------------------
ALL = "entropy-min+unimatch+cct+uamt+cutmix-seg:uamt.passes=2"
TERMS = ("entropy-min/entropy", "unimatch/fp", "cct/drop", "uamt/mask_rate", "cutmix-seg/mse")


@pytest.mark.parametrize("task, data", [
    (f"seg:{ALL}", "synthetic:n=16"),
    (f"seg:channels=2,activation=softmax:{ALL}", "synthetic:n=16,structures=lungs+heart"),
])
def test_each_method_trains_a_step_from_the_cli(tmp_path, task, data):
    run = train_run(task, out=tmp_path, steps=1, extra=("--seg-data", data))
    line = read_metrics(run)[0]
    for term in TERMS:
        assert math.isfinite(line[f"seg/{term}"]), term
    assert all(math.isfinite(line[f"seg/{name}"]) for name in ("entropy-min", "unimatch", "cct", "uamt", "cutmix-seg"))


def test_a_classification_task_is_refused_at_check(tmp_path):
    result = invoke(["train", "--check", "--task", "cls:unimatch", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "unimatch" in result.output and "class targets" in result.output


@pytest.mark.parametrize("tasks", [["seg:uamt+cutmix-seg:uamt.passes=2"], ["seg:cct"]], ids=["teachers", "cct"])
def test_stateful_methods_stop_and_resume_bit_exactly(host, tmp_path, tasks):
    """The EMA teacher (UA-MT, CutMix-Seg) and CCT's auxiliary decoders with their optimizer state."""
    settings = dict(steps=3, save_every=100, eval_every=100)
    straight = tiny_trainer(host, tmp_path / "straight", tasks, **settings)
    straight.fit()
    stopped = tiny_trainer(host, tmp_path / "stopped", tasks, **settings)
    with pytest.raises(TrainingStopped):
        stopped.fit(on_step=lambda step, logs: stopped.stop.request(signal.SIGTERM) if step == 1 else None)
    run = RunDir(stopped.run.path)
    resumed = Trainer(run.config(), host, run)
    resumed.resume()
    resumed.fit()
    networks = [(straight.model, resumed.model)]
    if straight.teacher is not None:
        networks.append((straight.teacher.module, resumed.teacher.module))
    networks += [(straight.strategy_modules[k], resumed.strategy_modules[k]) for k in straight.strategy_modules]
    assert len(networks) == 2
    for a, b in networks:
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert read_metrics(straight.run.path)[-1]["loss"] == read_metrics(run.path)[-1]["loss"]
