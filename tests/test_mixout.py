"""Mixout: exact edge cases, Lee et al.'s formula, unbiasedness, determinism, model surgery."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import FAMILIES, tiny_classifier
from torch import nn

from steadytune.stabilizers.mixout import MixLinear, apply_mixout


def layer_pair(p: float, seed: int = 0) -> tuple[nn.Linear, MixLinear]:
    torch.manual_seed(seed)
    plain = nn.Linear(5, 4)
    return plain, MixLinear(copy.deepcopy(plain), p)


def test_p0_is_bitwise_a_plain_linear() -> None:
    plain, mix = layer_pair(0.0)
    x = torch.randn(6, 5)
    out_plain, out_mix = plain(x), mix(x)
    assert torch.equal(out_plain, out_mix)
    (out_plain ** 2).sum().backward()
    (out_mix ** 2).sum().backward()
    assert torch.equal(plain.weight.grad, mix.weight.grad) and torch.equal(plain.bias.grad, mix.bias.grad)


def test_p1_uses_exactly_the_target() -> None:
    _, mix = layer_pair(1.0)
    target = mix.target.clone()
    with torch.no_grad():
        mix.weight.add_(3.0)
    assert torch.equal(mix.effective_weight(), target)
    x = torch.randn(2, 5)
    assert torch.equal(mix(x), F.linear(x, target, mix.bias))


def test_mixed_weight_follows_lee_et_al_formula_and_gradient() -> None:
    p = 0.4
    _, mix = layer_pair(p)
    with torch.no_grad():
        mix.weight.add_(torch.randn_like(mix.weight))  # w != u everywhere
    w, u = mix.weight.detach(), mix.target
    torch.manual_seed(3)
    x = torch.randn(7, 5)
    out = mix(x)
    torch.manual_seed(3)
    x = torch.randn(7, 5)  # replay to recover the mask: elements equal to the target were mixed out
    mixed = mix.effective_weight().detach()
    mask = (mixed != u).to(w.dtype)
    assert 0 < mask.mean().item() < 1
    expected = (mask * w + (1 - mask) * u - p * u) / (1 - p)
    torch.testing.assert_close(mixed, expected)
    out.sum().backward()  # d out.sum() / d W_mix[i, j] = sum_b x[b, j]
    torch.testing.assert_close(mix.weight.grad, mask / (1 - p) * x.sum(0).expand(4, 5))


def test_unbiased_over_masks() -> None:
    p, draws = 0.3, 20_000
    _, mix = layer_pair(p)
    with torch.no_grad():
        mix.weight.add_(torch.randn_like(mix.weight))
    torch.manual_seed(11)
    samples = torch.stack([mix.effective_weight().detach() for _ in range(draws)])
    delta = (mix.weight - mix.target).detach().abs()
    std_error = delta * (p / (1 - p)) ** 0.5 / draws ** 0.5  # per-element std of W_mix is |w-u| sqrt(p/(1-p))
    assert torch.all((samples.mean(0) - mix.weight.detach()).abs() < 5 * std_error)
    chose_target = (samples == mix.target).double().mean(0)
    assert torch.all((chose_target - p).abs() < 5 * (p * (1 - p) / draws) ** 0.5)


def test_eval_is_deterministic_plain_linear() -> None:
    plain, mix = layer_pair(0.5)
    with torch.no_grad():
        mix.weight.add_(1.0)
        plain.weight.add_(1.0)
    mix.eval()
    x = torch.randn(3, 5)
    assert torch.equal(mix(x), mix(x)) and torch.equal(mix(x), plain(x))


def test_masks_come_from_the_global_seed_and_are_fresh_each_forward() -> None:
    _, mix = layer_pair(0.5)
    with torch.no_grad():
        mix.weight.add_(1.0)
    torch.manual_seed(5)
    a, b = mix.effective_weight(), mix.effective_weight()
    torch.manual_seed(5)
    assert torch.equal(a, mix.effective_weight())
    assert not torch.equal(a, b)


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_invalid_probability(p: float) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        MixLinear(nn.Linear(2, 2), p)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        apply_mixout(nn.Sequential(nn.Linear(2, 2)), p)


def tiny(model_type: str) -> nn.Module:
    return tiny_classifier(model_type, num_hidden_layers=2, hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5)


def test_apply_mixout_on_bert() -> None:
    model = tiny("bert")
    linears = {name: m.weight.detach().clone() for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    names_before = [n for n, _ in model.named_parameters()]
    keys_before = list(model.state_dict())
    assert apply_mixout(model, 0.1) == len(linears) == 2 * 6 + 2  # 6 per layer, pooler, classifier
    modules = dict(model.named_modules())
    for name, weight in linears.items():
        assert isinstance(modules[name], MixLinear) and modules[name].p == 0.1
        assert torch.equal(modules[name].target, weight)
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, nn.Dropout))
    assert [n for n, _ in model.named_parameters()] == names_before
    assert list(model.state_dict()) == keys_before  # targets are not saved: checkpoints load into plain models
    model.train()
    out = model(input_ids=torch.tensor([[1, 5, 7, 2]]), labels=torch.tensor([1]))
    out.loss.backward()
    assert model.classifier.weight.grad is not None


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_apply_mixout_turns_every_dropout_off(model_type: str) -> None:
    model = tiny(model_type)
    apply_mixout(model, 0.0)  # p=0: MixLinear is exact, so train == eval iff no dropout is left
    ids = torch.tensor([[3, 5, 7, 9, 2]])
    model.train()
    train_logits = model(input_ids=ids).logits
    model.eval()
    torch.testing.assert_close(train_logits, model(input_ids=ids).logits, rtol=0, atol=0)
