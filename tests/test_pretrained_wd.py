"""Pre-trained weight decay pulls toward theta0 (not 0) with each group's current learning rate."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from steadytune.stabilizers.mixout import apply_mixout
from steadytune.stabilizers.pretrained_wd import PretrainedWeightDecay


def test_pulls_toward_theta0_not_zero() -> None:
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.fill_(5.0)  # far from 0
        layer.bias.fill_(-4.0)
    decay = PretrainedWeightDecay(layer, strength=0.5)
    with torch.no_grad():
        layer.weight.add_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 4.0]]))
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)  # no gradients: step() moves nothing
    optimizer.step()
    decay.apply(optimizer)
    # p0 + delta * (1 - lr * lambda) = 5 + delta * 0.95; where delta = 0 (and for the bias) nothing moves
    expected = torch.tensor([[5.95, 3.1, 5.475], [5.0, 5.0, 8.8]])
    torch.testing.assert_close(layer.weight.detach(), expected, rtol=0, atol=1e-6)
    assert torch.equal(layer.weight[1, :2].detach(), torch.tensor([5.0, 5.0]))
    assert torch.equal(layer.bias.detach(), torch.full((2,), -4.0))


def test_uses_each_groups_current_scheduled_lr() -> None:
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    decay = PretrainedWeightDecay(nn.ParameterList([a, b]), strength=0.1)
    optimizer = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.5}])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** step)
    for expected_a, expected_b in ((1.0 - 0.1, 1.0 - 0.05), (1.0 - 0.05, 1.0 - 0.025)):
        with torch.no_grad():
            a.fill_(1.0)
            b.fill_(1.0)
        optimizer.step()
        decay.apply(optimizer)
        assert a.item() == pytest.approx(expected_a) and b.item() == pytest.approx(expected_b)
        scheduler.step()


def test_after_a_real_optimizer_step() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(4, 1)
    theta0 = layer.weight.detach().clone()
    decay = PretrainedWeightDecay(layer, strength=0.01)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1, weight_decay=0.0)
    layer(torch.randn(8, 4)).pow(2).mean().backward()
    optimizer.step()
    stepped = layer.weight.detach().clone()
    decay.apply(optimizer)
    torch.testing.assert_close(layer.weight.detach(), stepped - 0.1 * 0.01 * (stepped - theta0))


def test_snapshot_is_a_copy_and_skips_frozen_parameters() -> None:
    layer = nn.Linear(2, 2)
    layer.bias.requires_grad_(False)
    theta0 = layer.weight.detach().clone()
    decay = PretrainedWeightDecay(layer, strength=1.0)
    with torch.no_grad():
        layer.weight.add_(2.0)
    optimizer = torch.optim.SGD([layer.weight], lr=1.0)
    decay.apply(optimizer)  # lr * strength = 1: straight back to theta0
    torch.testing.assert_close(layer.weight.detach(), theta0)
    with pytest.raises(ValueError, match="not trainable"):
        decay.apply(torch.optim.SGD([layer.bias], lr=0.1))


def test_zero_strength_is_a_no_op_and_negative_is_refused() -> None:
    layer = nn.Linear(2, 2)
    decay = PretrainedWeightDecay(layer, strength=0.0)
    with torch.no_grad():
        layer.weight.add_(1.0)
    before = layer.weight.detach().clone()
    decay.apply(torch.optim.SGD(layer.parameters(), lr=0.1))
    assert torch.equal(layer.weight.detach(), before)
    with pytest.raises(ValueError, match=">= 0"):
        PretrainedWeightDecay(layer, strength=-1.0)


def test_snapshot_survives_mixout_surgery() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.1), nn.Linear(3, 1))
    decay = PretrainedWeightDecay(model, strength=0.5)
    apply_mixout(model, 0.1)  # MixLinear keeps the same Parameter objects
    with torch.no_grad():
        model[0].weight.add_(1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    decay.apply(optimizer)
    torch.testing.assert_close(model[0].weight - model[0].target, torch.full((3, 3), 0.5))
