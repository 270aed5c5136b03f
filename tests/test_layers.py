"""The paper block's own instance norm and dropout: the same layer as torch's, computed more cheaply on the CPU."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mtssl_plugins.layers import MASK_LEVELS, Dropout, InstanceNorm2d, double_conv, keep_mask


@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm_matches_torch_forward_and_backward(affine):
    torch.manual_seed(0)
    ours, theirs = InstanceNorm2d(5, affine=affine), nn.InstanceNorm2d(5, affine=affine)
    if affine:
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 2.0)
            theirs.bias.uniform_(-1.0, 1.0)
        ours.load_state_dict(theirs.state_dict())
    x = (torch.randn(3, 5, 9, 7) * 3 + 1).requires_grad_(True)
    y = x.detach().clone().requires_grad_(True)
    weights = torch.randn(3, 5, 9, 7)
    (ours(x) * weights).sum().backward()
    (theirs(y) * weights).sum().backward()
    torch.testing.assert_close(ours(x), theirs(y), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-4, atol=1e-5)
    if affine:
        torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, rtol=1e-4, atol=1e-4)


def test_instance_norm_output_is_no_view_so_inplace_activation_needs_no_copy():
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    out = nn.LeakyReLU(0.2, inplace=True)(InstanceNorm2d(3)(x))
    assert out._base is None
    assert "CopySlices" not in type(out.grad_fn).__name__


def test_dropout_is_identity_in_eval_and_at_zero_and_drops_everything_at_one():
    x = torch.randn(4, 3, 8, 8)
    layer = Dropout(0.25).eval()
    assert layer(x) is x
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
    torch.manual_seed(0)  # beyond the mask's 1/65536 resolution torch's dropout runs; its p keeps ~1e-7 of x
    assert torch.equal(Dropout(1 - 1e-7).train()(x), torch.zeros_like(x))


def test_dropout_keeps_a_quarter_off_and_scales_survivors_by_four_thirds():
    torch.manual_seed(1)
    x = torch.rand(1_000_000) + 0.5  # no zeros of its own
    y = Dropout(0.25).train()(x)
    dropped = (y == 0).float().mean().item()
    sigma = math.sqrt(0.25 * 0.75 / x.numel())
    assert abs(dropped - 0.25) < 5 * sigma
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] * (4 / 3))


def test_dropout_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(2)
    x = torch.randn(6, 4, 16, 16, requires_grad=True)
    y = Dropout(0.25).train()(x)
    y.backward(torch.ones_like(y))
    expected = (y.detach() != 0).float() * (4 / 3)
    assert torch.equal(x.grad, expected)


def test_dropout_follows_torch_seed_and_draws_afresh_each_call():
    layer = Dropout(0.5).train()
    x = torch.ones(64, 64)
    torch.manual_seed(3)
    first, second = layer(x), layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), first)
    assert not torch.equal(first, second)


def test_dropout_rounds_probability_to_the_mask_resolution_and_stays_unbiased():
    levels = round(0.1 * MASK_LEVELS)
    torch.manual_seed(4)
    y = Dropout(0.1).train()(torch.ones(2_000_000))
    kept = y != 0
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], MASK_LEVELS / (MASK_LEVELS - levels)))
    assert abs(y.mean().item() - 1.0) < 5 * math.sqrt(0.1 / 0.9 / y.numel())


def test_keep_mask_elements_are_independent_of_their_neighbours():
    torch.manual_seed(5)
    keep = keep_mask(torch.Size([1_000_000]), MASK_LEVELS // 2, torch.device("cpu"))
    # Four neighbouring elements share one 64-bit draw; each pair must still be independent.
    for lag in (1, 2, 3, 4):
        both = (keep[:-lag] & keep[lag:]).float().mean().item()
        assert abs(both - 0.25) < 5 * math.sqrt(0.25 * 0.75 / keep.numel())
    assert abs(keep.float().mean().item() - 0.5) < 0.003


def test_double_conv_keeps_the_paper_block_and_its_state_dict_keys():
    block = double_conv(3, 8, dropout=0.25)
    kinds = [type(m) for m in block]
    assert kinds == [nn.Conv2d, InstanceNorm2d, nn.LeakyReLU, nn.Conv2d, InstanceNorm2d, nn.LeakyReLU, Dropout]
    assert sorted(block.state_dict()) == ["0.bias", "0.weight", "3.bias", "3.weight"]
