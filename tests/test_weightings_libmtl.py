"""LibMTL's most used task weightings, each against the paper's equations on hand-computed cases; the
shared per-task gradient mechanism (fp16 loss scale, heads, the private generator); a one-step CLI run of
each and a bit-exact stop/resume of the stateful ones."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import invoke, read_metrics, tiny_train_args
from mtssl.api import StrategyContext
from mtssl_plugins.weightings.aligned_mtl import aligned_weights, balance_transform
from mtssl_plugins.weightings.cagrad import cagrad_weights
from mtssl_plugins.weightings.dwa import dwa_weights
from mtssl_plugins.weightings.gradnorm import gradnorm_loss
from mtssl_plugins.weightings.imtl import imtl_weights
from mtssl_plugins.weightings.mgda import min_norm_weights
from mtssl_plugins.weightings.nash_mtl import nash_weights
from test_combinations import reg_plugin, train_stop_resume  # noqa: F401 (a fixture)

NEW = ["gradnorm", "dwa", "rlw", "mgda", "cagrad", "imtl", "nash-mtl", "aligned-mtl"]
GRADIENT_BASED = ["pcgrad", "mgda", "cagrad", "imtl", "nash-mtl", "aligned-mtl", "gradnorm"]
CPU = torch.device("cpu")


def made(host, name: str, tasks=("a", "b", "c"), seed: int = 0, **options):
    weighting = host.create("weighting", name, **options)
    weighting.bind(StrategyContext(seed=seed))
    weighting.setup(list(tasks), CPU)
    return weighting


def gram(*rows) -> torch.Tensor:
    g = torch.tensor(rows, dtype=torch.float64)
    return g @ g.T


# -- the papers' equations ---------------------------------------------------------------------------

def test_dwa_weights_follow_the_loss_ratios_by_hand():
    # r = (1/2, 2/2) at T = 2: w = 2 exp(r/2) / sum exp(r/2)
    weights = dwa_weights(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 2.0]), 2.0)
    e1, e2 = math.exp(0.25), math.exp(0.5)
    assert weights.tolist() == pytest.approx([2 * e1 / (e1 + e2), 2 * e2 / (e1 + e2)])


def test_dwa_waits_for_two_windows_and_a_rejected_step_changes_nothing(host):
    w = made(host, "dwa", window=2, T=1.0)
    history = [[4.0, 2.0, 1.0], [2.0, 2.0, 1.0], [1.0, 2.0, 3.0], [1.0, 2.0, 1.0]]  # windows of 2 steps
    for losses in history:
        out = w.combine(dict(zip("abc", map(torch.tensor, losses))), step=0)
        assert out.weights == {"a": 1.0, "b": 1.0, "c": 1.0}  # fewer than two windows complete
        w.commit()
    w.combine({t: torch.tensor(100.0) for t in "abc"}, step=4)  # rejected: never committed
    out = w.combine({t: torch.tensor(1.0) for t in "abc"}, step=4)
    # window means (3, 2, 1) then (1, 2, 2): r = (1/3, 1, 2), w = 3 softmax(r / 1)
    e = [math.exp(1 / 3), math.exp(1.0), math.exp(2.0)]
    assert [float(out.weights[t]) for t in "abc"] == pytest.approx([3 * x / sum(e) for x in e])
    assert out.loss.item() == pytest.approx(3.0)  # the weights sum to the number of tasks


def test_mgda_min_norm_of_two_gradients_matches_the_closed_form():
    g1, g2 = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.0, 2.0, -1.0])
    alpha = ((g2 - g1) @ g2 / (g1 - g2).pow(2).sum()).clamp(0, 1).item()  # the paper's Algorithm 1
    weights = min_norm_weights(gram(g1.tolist(), g2.tolist()))
    assert weights.tolist() == pytest.approx([alpha, 1 - alpha])
    d = weights.float() @ torch.stack([g1, g2])
    assert (d @ (g1 - g2)).item() == pytest.approx(0, abs=1e-6)  # the min-norm point is orthogonal to g1 - g2


def test_mgda_of_orthogonal_gradients_weighs_by_inverse_squared_norm(host):
    weights = min_norm_weights(gram([1, 0, 0], [0, 2, 0], [0, 0, 4]))
    expected = torch.tensor([1, 1 / 4, 1 / 16]) / (1 + 1 / 4 + 1 / 16)
    assert weights.tolist() == pytest.approx(expected.tolist(), abs=1e-6)
    # normalize=l2 solves on unit gradients (equal weights), then weighs the raw ones
    w = made(host, "mgda", normalize="l2")
    assert w.task_weights(gram([1, 0, 0], [0, 2, 0], [0, 0, 4]), torch.ones(3)).tolist() == pytest.approx([1 / 3] * 3)


@pytest.mark.parametrize("ub, first", [(False, 4 / 13), (True, 1 / 10)])
def test_mgda_ub_solves_on_the_representation_and_weighs_the_encoder_gradient_by_hand(host, ub, first):
    """r = w * (1, 2), L_a = 3 r_0, L_b = r_1. On the parameters the gradients are (3, 0) and (0, 2): min-norm
    weight of a 4/13; on the representation (3, 0) and (0, 1): 1/10. The encoder gets the weighted sum of its
    own gradients either way; each head its own task's gradient."""
    w = nn.Parameter(torch.ones(2))
    heads = [nn.Parameter(torch.tensor(3.0)), nn.Parameter(torch.tensor(1.0))]
    r = w * torch.tensor([1.0, 2.0])
    losses = {"a": heads[0] * r[0], "b": heads[1] * r[1]}
    weighting = made(host, "mgda", tasks=("a", "b"), ub=ub)
    assert weighting.needs_representation is ub
    combined = weighting.combine(losses, step=0)
    logs = weighting.backward(losses, combined, [w], heads, **({"representation": [r]} if ub else {}))
    assert logs["weight/a"].item() == pytest.approx(first, rel=1e-6)
    assert logs["weight/b"].item() == pytest.approx(1 - first, rel=1e-6)
    assert w.grad.tolist() == pytest.approx([first * 3, (1 - first) * 2], rel=1e-6)
    assert [h.grad.item() for h in heads] == pytest.approx([1.0, 2.0])


def test_mgda_ub_trains_from_the_cli_on_the_recorded_representation(tmp_path):
    """Without the core recording the encoder's outputs, ub=true has nothing to differentiate and fails."""
    result = invoke(tiny_train_args("cls:fixmatch", "seg:kl", out=tmp_path, steps=2,
                                    extra=("--bridge", "saliency", "--weighting", "mgda:ub=true")))
    assert result.exit_code == 0, result.output
    for line in read_metrics(next(tmp_path.iterdir())):
        weights = [line["weight/cls"], line["weight/seg"]]
        assert all(0.0 <= v <= 1.0 for v in weights) and sum(weights) == pytest.approx(1.0, abs=1e-5), line


def test_cagrad_on_orthogonal_gradients_by_hand():
    # g1 = e1, g2 = e2: by symmetry w = (1/2, 1/2), g_w = g0, so d = (1 + c) g0 = (1 + c)/2 (g1 + g2), over 1 + c^2
    unit = gram([1, 0], [0, 1])
    assert cagrad_weights(unit, c=0.5, rescale=False).tolist() == pytest.approx([0.75, 0.75])
    assert cagrad_weights(unit, c=0.5).tolist() == pytest.approx([0.6, 0.6])
    assert cagrad_weights(unit, c=0.0).tolist() == pytest.approx([0.5, 0.5])  # plain average


def test_cagrad_dual_matches_a_brute_force_search():
    g = torch.tensor([[1.0, 0.0], [-0.5, 2.0]], dtype=torch.float64)
    c, g0 = 0.8, g.mean(0)
    a = torch.linspace(0, 1, 200_001, dtype=torch.float64)
    gw = a[:, None] * g[0] + (1 - a[:, None]) * g[1]
    best = a[(gw @ g0 + c * g0.norm() * gw.norm(dim=1)).argmin()]
    gw = best * g[0] + (1 - best) * g[1]
    d = g0 + c * g0.norm() / gw.norm() * gw  # the paper's update
    got = cagrad_weights(g @ g.T, c, rescale=False) @ g
    assert got.tolist() == pytest.approx(d.tolist(), abs=1e-4)


def test_imtl_g_closed_form_on_two_tasks_and_equal_projections_on_three():
    # g1 = (2, 0), g2 = (0, 1): U = u1 - u2 = (1, -1), D = g1 - g2 = (2, -1); a2 = g1.U / D.U = 2/3
    assert imtl_weights(gram([2, 0], [0, 1])).tolist() == pytest.approx([1 / 3, 2 / 3])
    g = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 1.0], [-1.0, 0.0, 3.0]], dtype=torch.float64)
    a = imtl_weights(g @ g.T)
    d = a @ g
    projections = (g / g.norm(dim=1, keepdim=True)) @ d
    assert a.sum().item() == pytest.approx(1.0)
    assert projections.tolist() == pytest.approx([projections[0].item()] * 3)


def test_aligned_mtl_on_a_known_gram_matrix():
    # M = diag(4, 1): B = sqrt(1) diag(1/2, 1), a = B 1 = (1/2, 1): aligned gradients (1, 0), (0, 1)
    assert aligned_weights(gram([2, 0], [0, 1])).tolist() == pytest.approx([0.5, 1.0])
    g = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 1.0], [-1.0, 0.0, 3.0]], dtype=torch.float64)
    m = g @ g.T
    aligned = balance_transform(m) @ g  # orthogonal, each of norm sqrt(lambda_min)
    assert torch.allclose(aligned @ aligned.T, torch.linalg.eigvalsh(m).min() * torch.eye(3, dtype=m.dtype))


def test_nash_mtl_solves_the_bargaining_system(host):
    assert nash_weights(gram([2, 0], [0, 1])).tolist() == pytest.approx([0.5, 1.0], rel=1e-5)  # 4 a1^2 = a2^2 = 1
    g = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 1.0], [-1.0, 0.0, 3.0]], dtype=torch.float64)
    m = g @ g.T
    a = nash_weights(m, ridge=0.0)
    assert (a > 0).all() and (m @ a).tolist() == pytest.approx((1 / a).tolist(), rel=1e-9)
    # the plugin solves on M / ||M||_F (the authors' normalisation), so the weights do not depend on |g|
    w = made(host, "nash-mtl")
    assert w.task_weights(100 * m, torch.ones(3)).tolist() == pytest.approx(
        nash_weights(m / torch.linalg.matrix_norm(m)).tolist(), rel=1e-6)


def test_gradnorm_loss_pushes_the_slower_task_up_by_hand():
    # G = w n = (1, 3), mean 2; r = (2, 1) / 1.5; target = 2 r = (8/3, 4/3); d/dw = sign(G - target) n = (-1, 3)
    weights = torch.ones(2, requires_grad=True)
    loss = gradnorm_loss(weights, torch.tensor([1.0, 3.0]), torch.tensor([2.0, 1.0]), alpha=1.0)
    assert loss.item() == pytest.approx(10 / 3)
    assert torch.autograd.grad(loss, weights)[0].tolist() == pytest.approx([-1.0, 3.0])


def test_gradnorm_weighting_steps_by_hand_and_renormalises(host):
    w = made(host, "gradnorm", tasks=("a", "b"), alpha=1.0)
    layer = nn.Parameter(torch.ones(1, 2))

    def step(scales):  # L_a = s_a (W . (1, 0)), L_b = s_b (W . (0, 3)): norms s_a and 3 s_b
        losses = {"a": scales[0] * (layer @ torch.tensor([1.0, 0.0])).sum(),
                  "b": scales[1] * (layer @ torch.tensor([0.0, 3.0])).sum()}
        w.weights.grad = None
        w.backward(losses, w.combine(losses, step=0), [layer], [])
        grad = w.weights.grad.tolist()
        w.commit()
        return grad

    assert step([1.0, 1.0]) == pytest.approx([-1.0, 3.0])  # ratios 1: target the mean norm 2
    # L = (1, 1.5) against L(0) = (1, 3): r = (1, 0.5) / 0.75, b trained faster; norms (1, 1.5), mean 1.25
    # target (5/3, 5/6): sign(G - target) n = (-1, +1.5)
    assert step([1.0, 0.5]) == pytest.approx([-1.0, 1.5])
    with torch.no_grad():
        w.weights.copy_(torch.tensor([0.5, 1.0]))
    w.commit()
    assert w.weights.tolist() == pytest.approx([2 / 3, 4 / 3])  # sum back to T


def test_rlw_weights_are_reproducible_from_the_run_seed_and_leave_the_global_stream(host):
    losses = {t: torch.tensor(1.0) for t in "abc"}

    def draws(seed, count=3, **options):
        w, out = made(host, "rlw", seed=seed, **options), []
        for _ in range(count):
            out.append([float(v) for v in w.combine(losses, step=0).weights.values()])
            w.commit()
        return out

    before = torch.get_rng_state()
    first = draws(7)
    assert torch.equal(torch.get_rng_state(), before)  # the run's own stream did not move
    assert draws(7) == first and draws(8) != first
    assert all(sum(row) == pytest.approx(3.0) and min(row) > 0 for row in first)
    assert len({tuple(row) for row in first}) == 3  # fresh weights every step
    dirichlet = draws(7, distribution="dirichlet")
    assert dirichlet != first and all(sum(row) == pytest.approx(3.0) for row in dirichlet)
    w = made(host, "rlw", seed=7)
    w.combine(losses, step=0)  # a rejected step: not committed, drawn again
    assert [float(v) for v in w.combine(losses, step=0).weights.values()] == first[0]


# -- the shared per-task gradient mechanism ------------------------------------------------------------

def three_task_problem(scale: float = 1.0):
    """A shared linear map and one head per task; losses that conflict on the shared weights."""
    torch.manual_seed(0)
    shared = nn.Parameter(torch.randn(4, 3))
    heads = [nn.Parameter(torch.randn(4)) for _ in range(3)]
    x = torch.randn(5, 3)
    losses = {t: scale * ((x @ shared.T) @ head - i).pow(2).mean() for i, (t, head) in enumerate(zip("abc", heads))}
    return shared, heads, losses


@pytest.mark.parametrize("name", GRADIENT_BASED)
def test_gradient_weightings_are_linear_in_the_fp16_loss_scale(host, name):
    grads = []
    for scale in (1.0, 1024.0):
        w = made(host, name)
        shared, heads, losses = three_task_problem(scale)
        logs = w.backward(losses, w.combine(losses, step=0), [shared], heads)
        grads.append([shared.grad.clone(), *[h.grad.clone() for h in heads], *(p.grad for p in w.parameters())])
        assert all(torch.isfinite(torch.as_tensor(v)).all() for v in logs.values())
    for plain, scaled in zip(*grads):
        assert torch.allclose(scaled, 1024 * plain, rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("name", ["mgda", "cagrad", "imtl", "nash-mtl", "aligned-mtl"])
def test_gradient_weightings_weigh_the_task_gradients_and_leave_heads_alone(host, name):
    w = made(host, name)
    shared, heads, losses = three_task_problem()
    rows = torch.stack([torch.autograd.grad(losses[t], shared, retain_graph=True)[0].flatten() for t in "abc"])
    own = [torch.autograd.grad(losses[t], head, retain_graph=True)[0] for t, head in zip("abc", heads)]
    logs = w.backward(losses, w.combine(losses, step=0), [shared], heads)
    weights = torch.stack([logs[f"weight/{t}"] for t in "abc"])  # logged as tensors: no host sync
    assert torch.allclose(shared.grad.flatten(), weights @ rows, atol=1e-5)
    assert all(torch.allclose(h.grad, g) for h, g in zip(heads, own))


@pytest.mark.parametrize("name", ["mgda", "cagrad", "imtl", "nash-mtl", "aligned-mtl"])
def test_an_overflowed_fp16_gradient_stays_non_finite_instead_of_raising(host, name):
    # the scaler must see the overflow to skip the step; linear algebra on inf would raise instead
    grads = torch.tensor([[math.inf, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    flat, logs = made(host, name).shared_gradient(grads, torch.ones(3))
    assert not torch.isfinite(flat).all() and torch.isnan(logs["weights"]).all()


def test_pcgrad_draws_from_its_own_saved_generator(host):
    def run(weighting, steps=3):
        out = []
        for _ in range(steps):
            shared, heads, losses = three_task_problem()
            weighting.backward(losses, weighting.combine(losses, step=0), [shared], heads)
            weighting.commit()
            out.append(shared.grad.clone())
        return out

    before = torch.get_rng_state()
    straight = run(made(host, "pcgrad", seed=3), steps=4)
    assert torch.equal(torch.get_rng_state(), before)
    first, rest = made(host, "pcgrad", seed=3), made(host, "pcgrad", seed=99)
    run(first, steps=1)
    rest.load_state_dict(first.state_dict())  # a resume continues the same orders
    assert all(torch.equal(a, b) for a, b in zip(run(rest), straight[1:]))


@pytest.mark.parametrize("name, options", [("dwa", {"T": 0}), ("dwa", {"window": 0}), ("gradnorm", {"alpha": -1}),
                                           ("cagrad", {"c": -0.5}), ("mgda", {"normalize": "max"}),
                                           ("rlw", {"distribution": "uniform"}), ("nash-mtl", {"iterations": 0}),
                                           ("imtl", {"c": 1})])
def test_options_out_of_range_are_refused_naming_the_weighting(host, name, options):
    with pytest.raises(ValueError, match=f"weighting '{name}'"):
        host.create("weighting", name, **options)


# -- from the command line, and across a resume --------------------------------------------------------

@pytest.mark.parametrize("name", NEW)
def test_each_weighting_trains_one_step_from_the_cli_and_logs_its_weights(tmp_path, name):
    result = invoke(tiny_train_args("cls", "seg", out=tmp_path, steps=1, extra=("--weighting", name)))
    assert result.exit_code == 0, result.output
    line = read_metrics(next(tmp_path.iterdir()))[0]
    assert all(math.isfinite(line[f"weight/{t}"]) for t in ("cls", "seg")), line


def test_a_gradient_weighting_trains_three_tasks(tmp_path, reg_plugin):
    args = tiny_train_args("cls", "seg", "reg", out=tmp_path / "runs", steps=2,
                           extra=("--weighting", "nash-mtl", "--reg-labels", "6"))
    result = invoke(args)
    assert result.exit_code == 0, result.output
    lines = read_metrics(next((tmp_path / "runs").iterdir()))
    assert all(line[f"weight/{t}"] > 0 for line in lines for t in ("cls", "seg", "reg"))


@pytest.mark.parametrize("weighting", ["dwa:window=1", "gradnorm:lr=0.05", "rlw"])
def test_stateful_weightings_resume_bit_exactly(tmp_path, weighting):
    cell = {"tasks": "cls+seg", "ssl": "none", "bridges": "none", "weighting": weighting, "precision": "fp32",
            "backbone": "unet"}
    outcome = train_stop_resume(cell, str(tmp_path))
    assert outcome["stopped_at"] == 1 and outcome["same_weights"] and outcome["finite"]
    straight, resumed = outcome["logs"]
    assert resumed == straight  # every weight and every number the weighting logs (GradNorm's loss)
    assert len({line["weight/cls"] for line in straight}) > 1  # the weights did move
