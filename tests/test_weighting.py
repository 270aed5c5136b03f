"""Task weightings: equal sum, uncertainty weighting, PCGrad, against hand-computed values; CLI and grid wiring."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import invoke, read_metrics, spaced, tiny_train_args, tiny_trainer
from mtssl.bench.grid import ModelSpec, cell_config, grid_from_dict, Cell
from mtssl.registry import RegistryError
from mtssl_plugins.weightings.pcgrad import project_conflicts


def test_equal_is_the_plain_sum(host):
    w = host.create("weighting", "equal")
    out = w.combine({"a": torch.tensor(2.0), "b": torch.tensor(0.5)}, step=0)
    assert out.loss.item() == 2.5 and out.weights == {"a": 1.0, "b": 1.0}


def test_uncertainty_weighting_matches_kendall_by_hand(host):
    w = host.create("weighting", "uncertainty")
    w.setup(["a", "b"], torch.device("cpu"))
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([0.0, math.log(2.0)]))
    out = w.combine({"a": torch.tensor(2.0), "b": torch.tensor(0.5)}, step=0)
    # exp(-s)/2 * L + s/2:  0.5*2 + 0  +  0.25*0.5 + ln2/2
    assert out.loss.item() == pytest.approx(1.0 + 0.125 + math.log(2) / 2, rel=1e-6)
    assert out.weights == pytest.approx({"a": 0.5, "b": 0.25})
    out.loss.backward()
    # d/ds = -exp(-s)/2 * L + 1/2:  -1 + 0.5 = -0.5;  -0.125 + 0.5 = 0.375
    assert w.log_vars.grad.tolist() == pytest.approx([-0.5, 0.375])


def test_pcgrad_projects_two_conflicting_gradients_by_hand():
    combined, count = project_conflicts(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
    # g1 - (g1.g2 / |g2|^2) g2 = (1,0) + 0.5(-1,1) = (0.5, 0.5);  g2 - (g2.g1/|g1|^2) g1 = (-1,1) + (1,0) = (0, 1)
    assert combined.tolist() == pytest.approx([0.5, 1.5]) and count == 2
    combined, count = project_conflicts(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    assert combined.tolist() == pytest.approx([2.0, 1.0]) and count == 0  # no conflict: plain sum


def test_pcgrad_backward_edits_only_the_shared_gradient(host):
    w = host.create("weighting", "pcgrad")
    shared = torch.nn.Parameter(torch.tensor([0.3, -0.2]))
    head_a, head_b = torch.nn.Parameter(torch.tensor(1.0)), torch.nn.Parameter(torch.tensor(1.0))
    losses = {"a": head_a * (shared @ torch.tensor([1.0, 0.0])), "b": head_b * (shared @ torch.tensor([-1.0, 1.0]))}
    combined = w.combine(losses, step=0)
    assert combined.loss.item() == pytest.approx(0.3 + (-0.3 - 0.2))
    logs = w.backward(losses, combined, [shared], [head_a, head_b])
    assert shared.grad.tolist() == pytest.approx([0.5, 1.5])
    assert head_a.grad.item() == pytest.approx(0.3) and head_b.grad.item() == pytest.approx(-0.5)
    assert logs["pcgrad/projections"] == 2.0


def test_uncertainty_parameters_join_the_optimizer_and_weights_are_logged(host, tmp_path):
    trainer = tiny_trainer(host, tmp_path, ["cls", "seg"], weighting="uncertainty:lr=0.1", steps=2)
    groups = trainer.optimizer.param_groups
    assert groups[-1]["params"] == [trainer.weighting.log_vars] and groups[-1]["lr"] == 0.1
    trainer.fit()
    lines = read_metrics(trainer.run.path)
    assert all({"weight/cls", "weight/seg"} <= set(line) for line in lines)
    assert lines[0]["weight/cls"] == pytest.approx(0.5)
    assert trainer.weighting.log_vars.detach().abs().min() > 0  # trained away from 0


def test_pcgrad_trains_from_the_cli_and_unknown_names_are_one_line(tmp_path):
    result = invoke(tiny_train_args("cls", "seg", out=tmp_path, steps=1, extra=("--weighting", "pcgrad")))
    assert result.exit_code == 0, result.output
    result = invoke(tiny_train_args("cls", out=tmp_path, steps=1, extra=("--weighting", "pcgrd")))
    assert result.exit_code == 2 and "unknown weighting 'pcgrd'. Did you mean 'pcgrad'" in spaced(result.stderr)


def test_bad_weighting_options_name_the_weighting(host):
    with pytest.raises(ValueError, match="weighting 'uncertainty': unknown option"):
        host.create("weighting", "uncertainty", sigma=1)
    with pytest.raises(RegistryError):
        host.create("weighting", "nope")


def test_grid_models_may_carry_a_weighting(tmp_path):
    grid = grid_from_dict({"models": {"W": "--task cls --task seg --weighting uncertainty"}, "seeds": 1})
    model = grid.models[0]
    assert model == ModelSpec("W", ("cls", "seg"), (), "uncertainty")
    assert "--weighting uncertainty" in model.describe()
    config = cell_config(grid, Cell(model, (("cls", "default"), ("seg", "default")), 0), tmp_path)
    assert config.weighting == "uncertainty"


def test_weighting_is_a_config_key_and_the_flag_overrides_it(tmp_path):
    from mtssl.cli.train import resolve_config

    file = tmp_path / "run.toml"
    file.write_text('tasks = ["cls", "seg"]\nweighting = "uncertainty:init=1"\n')
    assert resolve_config(file, [], {}).weighting == "uncertainty:init=1"
    assert resolve_config(file, [], {"weighting": "pcgrad"}).weighting == "pcgrad"
    assert resolve_config(None, [], {"tasks": ["cls"]}).weighting == "equal"
