"""Precision policy: auto resolution, autocast dtype, the fp16 gradient scaler and its run state."""
from __future__ import annotations

import json

import pytest
import torch

from mtssl.training.precision import Precision, cpu_flags, native_bf16, resolve_precision
from tests.conftest import tiny_trainer

CPU = torch.device("cpu")


def test_cpu_flags_are_read_from_cpuinfo_text():
    text = "processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16 sse\nbogomips\t: 1\n"
    assert cpu_flags(text) == {"fpu", "avx2", "avx512_bf16", "sse"}
    assert cpu_flags("processor : 0\n") == set()


@pytest.mark.parametrize("flags, expected", [
    ({"avx2", "fma"}, "fp32"),  # bf16 would be emulated: slower than float32
    ({"avx2", "avx512f", "avx512_bf16"}, "bf16"),
    ({"amx_bf16", "amx_tile"}, "bf16"),
])
def test_auto_picks_bf16_only_where_the_cpu_has_it_natively(flags, expected):
    assert native_bf16(CPU, flags) is (expected == "bf16")
    assert resolve_precision("auto", CPU, flags) == expected


def test_explicit_precision_is_kept_and_unknown_is_refused():
    for name in ("fp32", "bf16", "fp16"):
        assert resolve_precision(name, CPU, set()) == name
    with pytest.raises(ValueError, match="--precision: unknown precision 'fp8'"):
        resolve_precision("fp8", CPU)
    with pytest.raises(ValueError, match="resolved"):
        Precision("auto", CPU)


def test_autocast_dtype_follows_the_precision():
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        with Precision(name, CPU).autocast():
            assert layer(x).dtype == dtype


def test_fp16_scaler_scales_the_loss_and_unscales_before_the_step():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 1)
    reference = torch.nn.Linear(4, 1)
    reference.load_state_dict(layer.state_dict())
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    precision = Precision("fp16", CPU)
    assert precision.scaler is not None and precision.scaler.get_scale() == 2.0 ** 16
    opt, ref_opt = torch.optim.SGD(layer.parameters(), lr=0.1), torch.optim.SGD(reference.parameters(), lr=0.1)
    precision.backward_and_step(((layer(x) - y) ** 2).mean(), opt)  # float32 math: only the scaling differs
    ((reference(x) - y) ** 2).mean().backward()
    ref_opt.step()
    assert torch.allclose(layer.weight, reference.weight, atol=1e-6)  # gradients were unscaled before the step
    # an overflowing gradient skips the step and halves the scale
    before = layer.weight.detach().clone()
    precision.backward_and_step(layer(x).sum() * float("inf"), opt)
    assert torch.equal(layer.weight, before) and precision.scaler.get_scale() == 2.0 ** 15
    state = precision.state_dict()
    json.dumps(state)  # stored in the run state's JSON metadata
    fresh = Precision("fp16", CPU)
    fresh.load_state_dict(state)
    assert fresh.scaler.get_scale() == 2.0 ** 15


def test_trainer_records_the_resolved_precision_and_resumes_the_scaler(host, tmp_path):
    trainer = tiny_trainer(host, tmp_path, ["cls:fixmatch"], precision="auto")
    resolved = json.loads((trainer.run.path / "config.json").read_text())["precision"]
    assert resolved == resolve_precision("auto", CPU) and trainer.precision.name == resolved

    amp = tiny_trainer(host, tmp_path, ["cls"], amp=True, precision="auto")  # --amp is bf16
    assert amp.precision.name == "bf16"

    fp16 = tiny_trainer(host, tmp_path, ["cls"], precision="fp16", name="half")
    fp16.train_step()
    fp16.precision.scaler.update(123.0)
    fp16.save("last", with_state=True)
    again = tiny_trainer(host, tmp_path, ["cls"], precision="fp16", name="half-again")
    again.run = fp16.run  # resume the first run's checkpoint
    again.resume("last")
    assert again.precision.scaler.get_scale() == 123.0


def test_compile_without_a_cpp_compiler_is_a_clear_error(monkeypatch):
    from mtssl.model import compile as compile_module

    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setattr(compile_module.shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match="--compile on the CPU needs a C.. compiler.*'no-such-compiler'"):
        compile_module.compile_model(torch.nn.Module(), CPU)


def test_fp16_loss_scaling_reaches_a_weighting_that_differentiates_each_task(host, tmp_path):
    # pcgrad backpropagates every task itself: in fp16 it gets the scaled task losses, and the scaler
    # unscales and checks its gradients (the plain backward's path) instead of failing at the first step
    trainer = tiny_trainer(host, tmp_path, ["cls", "seg"], weighting="pcgrad", precision="fp16", steps=4,
                           eval_every=100)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    logs = []
    trainer.fit(on_step=lambda step, line: logs.append(line))
    assert all("pcgrad/projections" in line for line in logs)
    # 2^16 overflows these float16 activations: the scaler halves it and skips, as with the plain backward
    assert trainer.precision.scaler.get_scale() < 2.0 ** 16
    after = list(trainer.model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert all(not torch.equal(b, a) for b, a in zip(before, after))  # every parameter trained in the end
